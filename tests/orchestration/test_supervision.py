"""Supervision trees: restart types, strategies, intensity, escalation exactly once."""

from __future__ import annotations

import pytest

from underlay import errors
from underlay.orchestration.supervision import Action, Child, SupervisionTree, SupervisorSpec


def tree(strategy: str = "one_for_one", intensity: int = 3, period: float = 5.0) -> SupervisionTree:
    return SupervisionTree(
        SupervisorSpec(
            "root",
            (Child("a"), Child("b", "transient"), Child("c", "temporary"), Child("d")),
            strategy=strategy,  # type: ignore[arg-type]
            intensity=intensity,
            period=period,
        )
    )


def restarted(actions: list[Action]) -> list[str]:
    return [a.path for a in actions if a.kind == "restart"]


def test_restart_types() -> None:
    t = tree()
    assert restarted(t.exited("root/a", "normal", 0)) == ["root/a"]  # permanent: always
    assert t.exited("root/b", "normal", 1) == []  # transient: only after an error
    assert restarted(t.exited("root/b", "error", 2)) == ["root/b"]
    assert t.exited("root/c", "error", 3) == []  # temporary: never


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("one_for_one", ["root/b"]),
        ("one_for_all", ["root/a", "root/b", "root/c", "root/d"]),
        ("rest_for_one", ["root/b", "root/c", "root/d"]),
    ],
)
def test_strategies(strategy: str, expected: list[str]) -> None:
    assert restarted(tree(strategy).exited("root/b", "error", 0)) == expected


def test_intensity_is_counted_over_a_sliding_period() -> None:
    t = tree(intensity=2, period=10)
    for at in (0, 4, 11, 15):  # never more than 2 within any 10 s
        assert restarted(t.exited("root/a", "error", at)) == ["root/a"]
    assert not t.failed


def test_exceeding_intensity_at_the_root_escalates_exactly_once() -> None:
    t = tree(intensity=2, period=10)
    t.exited("root/a", "error", 0)
    t.exited("root/d", "error", 1)
    actions = t.exited("root/a", "error", 2)
    assert [a.kind for a in actions] == ["stop"] * 4 + ["escalate"]
    assert [a.path for a in actions[:4]] == ["root/d", "root/c", "root/b", "root/a"]
    assert "more than 2 restarts in 10 s" in actions[-1].reason and t.failed
    assert t.exited("root/a", "error", 3) == []  # given up: no second escalation
    assert t.exited("root/d", "error", 60) == []


def test_a_nested_supervisor_gives_up_to_its_parent_first() -> None:
    t = SupervisionTree(
        SupervisorSpec(
            "root",
            (
                SupervisorSpec("pool", (Child("w1"), Child("w2")), intensity=1, period=60),
                Child("queue"),
            ),
            strategy="one_for_one",
            intensity=1,
            period=60,
        )
    )
    assert restarted(t.exited("root/pool/w1", "error", 0)) == ["root/pool/w1"]
    second = t.exited("root/pool/w2", "error", 1)  # the pool gives up; root restarts it
    assert [(a.kind, a.path) for a in second] == [
        ("stop", "root/pool/w2"), ("stop", "root/pool/w1"), ("restart", "root/pool"),
    ]  # fmt: skip
    t.exited("root/pool/w1", "error", 2)
    third = t.exited("root/pool/w1", "error", 3)  # the pool again: now root gives up
    assert [a.kind for a in third][-1] == "escalate" and t.failed
    assert sum(a.kind == "escalate" for a in third) == 1


def test_bad_specs_and_unknown_children_are_named() -> None:
    with pytest.raises(errors.InvalidInput, match="unique"):
        SupervisionTree(SupervisorSpec("root", (Child("a"), Child("a"))))
    with pytest.raises(errors.InvalidInput, match="intensity"):
        SupervisionTree(SupervisorSpec("root", (Child("a"),), intensity=-1))
    with pytest.raises(errors.NotFound, match="no child 'root/zz'"):
        tree().exited("root/zz", "error", 0)
