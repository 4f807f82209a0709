"""Persistent sandboxes across restarts; snapshots, restore and fork."""

from __future__ import annotations

import pytest

from underlay import errors
from underlay.config import Config
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport


async def _client(config: Config) -> tuple[Kernel, AsyncUnderlay]:
    k = await Kernel.open(config)
    return k, AsyncUnderlay(LocalTransport(k, k.admin_token()))


async def test_persistent_sandbox_survives_a_restart_files_included(config: Config) -> None:
    k1, ul = await _client(config)
    keep = await ul.sandbox.create(persistent=True, timeout=None, limits={"disk_mb": 64})
    temp = await ul.sandbox.create(timeout=300)
    await ul.sandbox.files.write(keep.id, "notes/state.txt", "remember me")
    await ul.sandbox.commands.run(keep.id, "echo from-a-command > made.txt")
    await k1.close()

    k2, ul2 = await _client(config)
    try:
        assert (await ul2.sandbox.get(keep.id)).state == "stopped"
        assert (await ul2.sandbox.get(temp.id)).state == "destroyed"
        out = await ul2.sandbox.commands.run(keep.id, "cat notes/state.txt made.txt")
        assert out.stdout == "remember mefrom-a-command\n"
        assert (await ul2.sandbox.get(keep.id)).state == "running"
        with pytest.raises(errors.NotFound):
            await ul2.sandbox.commands.run(temp.id, "true")
        await ul2.sandbox.destroy(keep.id)
    finally:
        await k2.close()


async def test_persistent_workspace_is_size_capped(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(persistent=True, timeout=60, limits={"disk_mb": 16})
    out = await ul.sandbox.commands.run(sbx.id, "head -c 40M /dev/zero > big")
    assert out.exit_code != 0 and "No space left" in out.stderr
    await ul.sandbox.destroy(sbx.id)


async def test_snapshot_restore_and_fork(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(timeout=120)
    await ul.sandbox.commands.run(sbx.id, "mkdir -p app && echo v1 > app/version && ln -s app l")
    snap = await ul.sandbox.snapshot(sbx.id)
    assert snap.sandbox == sbx.id and snap.size_bytes >= 3

    await ul.sandbox.commands.run(sbx.id, "echo v2 > app/version && touch extra")
    restored = await ul.sandbox.restore(sbx.id, snap.id)
    assert restored.state == "running"
    out = await ul.sandbox.commands.run(sbx.id, "cat app/version; ls; readlink l")
    assert out.stdout == "v1\napp\nl\napp\n"

    fork = await ul.sandbox.fork(snap.id, metadata={"from": snap.id})
    assert fork.id != sbx.id and fork.metadata == {"from": snap.id}
    assert (await ul.sandbox.commands.run(fork.id, "cat app/version")).stdout == "v1\n"
    await ul.sandbox.commands.run(fork.id, "echo forked > app/version && touch mine")
    assert (await ul.sandbox.commands.run(sbx.id, "cat app/version")).stdout == "v1\n"
    # the fork's files belong to the fork's own sandbox user
    assert (await ul.sandbox.commands.run(fork.id, "rm -r app && echo ok")).stdout == "ok\n"

    await ul.sandbox.snapshot_delete(snap.id)
    with pytest.raises(errors.NotFound):
        await ul.sandbox.fork(snap.id)


async def test_snapshots_follow_the_sandbox_owner_rule(ul: AsyncUnderlay) -> None:
    a = await ul.agents.create("snapper", capabilities=["sandbox.*"])
    b = await ul.agents.create("intruder", capabilities=["sandbox.*"])
    ua, ub = await ul.as_agent(a), await ul.as_agent(b)
    sbx = await ua.sandbox.create(timeout=60)
    with pytest.raises(errors.PermissionDenied):
        await ub.sandbox.snapshot(sbx.id)
    snap = await ua.sandbox.snapshot(sbx.id)
    with pytest.raises(errors.PermissionDenied):
        await ub.sandbox.fork(snap.id)
    with pytest.raises(errors.PermissionDenied):
        await ub.sandbox.snapshot_delete(snap.id)
