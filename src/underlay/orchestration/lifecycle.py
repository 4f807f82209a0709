"""The agent lifecycle as an explicit state machine: every transition allowed is listed.

    pending ──> starting ──> running <──> waiting (on: a task, a human, a message, a timer)
                   │           │  ^  \\──> idle ──> running
                   │           v  │
                   │        stalled (no heartbeat or no progress) ──> running (recovered)
                   v           │
    failed <───────┴───────────┤ ──> succeeded
    terminated <── (from any state that is not final)

``transition(current, target)`` returns the target or raises ``errors.Conflict`` naming
both states and the allowed targets, so a forbidden move is never written. Final states
(``succeeded``, ``failed``, ``terminated``) have no way out: a restart is a new run.
"""

from __future__ import annotations

from typing import Literal

from underlay import errors

State = Literal[
    "pending", "starting", "running", "waiting", "idle", "stalled",
    "succeeded", "failed", "terminated",
]  # fmt: skip
STATES: tuple[State, ...] = (
    "pending", "starting", "running", "waiting", "idle", "stalled",
    "succeeded", "failed", "terminated",
)  # fmt: skip
FINAL: frozenset[State] = frozenset({"succeeded", "failed", "terminated"})
WAITING_ON = ("task", "human", "message", "timer")

ALLOWED: dict[State, frozenset[State]] = {
    "pending": frozenset({"starting", "terminated"}),
    "starting": frozenset({"running", "failed", "terminated"}),
    "running": frozenset({"waiting", "idle", "stalled", "succeeded", "failed", "terminated"}),
    "waiting": frozenset({"running", "stalled", "failed", "terminated"}),
    "idle": frozenset({"running", "stalled", "terminated"}),
    "stalled": frozenset({"running", "failed", "terminated"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "terminated": frozenset(),
}


def transition(current: State, target: State, *, waiting_on: str | None = None) -> State:
    """Check one move of the state machine; ``waiting`` must say what it waits on."""
    if current not in ALLOWED:
        raise errors.InvalidInput(f"unknown agent state {current!r}", field="state")
    if target not in ALLOWED:
        raise errors.InvalidInput(
            f"unknown agent state {target!r} (known: {', '.join(STATES)})", field="state"
        )
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(ALLOWED[current])) or "none: it is final"
        raise errors.Conflict(f"an agent cannot go from {current} to {target} (allowed: {allowed})")
    if target == "waiting" and waiting_on not in WAITING_ON:
        raise errors.InvalidInput(
            f"waiting needs what it waits on: one of {', '.join(WAITING_ON)}", field="waiting_on"
        )
    return target
