"""Every transition of the agent state machine, allowed and forbidden."""

from __future__ import annotations

import itertools

import pytest

from underlay import errors
from underlay.orchestration.lifecycle import ALLOWED, FINAL, STATES, transition

ALL_PAIRS = list(itertools.product(STATES, STATES))


@pytest.mark.parametrize(("current", "target"), [p for p in ALL_PAIRS if p[1] in ALLOWED[p[0]]])
def test_allowed_transitions(current: str, target: str) -> None:
    assert transition(current, target, waiting_on="human") == target  # type: ignore[arg-type]


@pytest.mark.parametrize(("current", "target"), [p for p in ALL_PAIRS if p[1] not in ALLOWED[p[0]]])
def test_forbidden_transitions_are_conflicts_naming_both_states(current: str, target: str) -> None:
    with pytest.raises(errors.Conflict) as err:
        transition(current, target)  # type: ignore[arg-type]
    assert f"from {current} to {target}" in err.value.message


def test_the_table_is_what_the_lifecycle_promises() -> None:
    assert sum(len(v) for v in ALLOWED.values()) == 21
    assert all(not ALLOWED[s] for s in FINAL)  # final states have no way out
    assert all("terminated" in ALLOWED[s] for s in STATES if s not in FINAL)
    reachable = {"pending"}
    for _ in STATES:
        reachable |= {t for s in reachable for t in ALLOWED[s]}
    assert reachable == set(STATES)


def test_waiting_says_on_what_and_unknown_states_are_named() -> None:
    with pytest.raises(errors.InvalidInput, match="waits on"):
        transition("running", "waiting")
    assert transition("running", "waiting", waiting_on="task") == "waiting"
    with pytest.raises(errors.InvalidInput, match="unknown agent state 'sleeping'"):
        transition("running", "sleeping")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidInput, match="unknown agent state"):
        transition("zombie", "running")  # type: ignore[arg-type]
