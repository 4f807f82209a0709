"""Host uids: unique across installations, released only by their owner."""

from __future__ import annotations

from pathlib import Path

from underlay.compute.uids import UidRegistry


def test_two_installations_never_share_a_uid(tmp_path: Path) -> None:
    a = UidRegistry(tmp_path, 300_000, owner="/var/lib/underlay/a")
    b = UidRegistry(tmp_path, 300_000, owner="/var/lib/underlay/b")
    claimed = [a.claim(f"sbx_a{i}") for i in range(5)] + [b.claim(f"sbx_b{i}") for i in range(5)]
    assert len(set(claimed)) == 10 and min(claimed) >= 300_000


def test_release_and_reconcile_touch_only_own_claims(tmp_path: Path) -> None:
    a = UidRegistry(tmp_path, 300_000, owner="A")
    b = UidRegistry(tmp_path, 300_000, owner="B")
    ua1, ua2, ub = a.claim("x"), a.claim("y"), b.claim("z")
    a.release(ub)  # not A's: stays claimed
    assert (tmp_path / str(ub)).exists()
    a.reconcile(keep={ua1})  # A left ua2 behind (a crash): released; B's untouched
    assert (tmp_path / str(ua1)).exists() and not (tmp_path / str(ua2)).exists()
    assert (tmp_path / str(ub)).exists()
    again = b.claim("w")
    assert again not in {ua1, ub}
