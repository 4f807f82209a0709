"""Declarative fleets: apply with a diff, reconcile members, supervise, scale, delete."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.orchestration.reconciler import FleetReconciler
from underlay.orchestration.worker import Worker
from underlay.sdk.client import AsyncUnderlay

from .conftest import reconcile_until


def spec(program: str, replicas: int = 2, **agent: Any) -> dict[str, Any]:
    return {
        "name": "crew",
        "agents": [
            {
                "name": "helper",
                "program": {
                    "python": f"orchestration.steps_handler:{program}",
                    "input": agent.pop("input", {}),
                },
                "replicas": replicas,
                "termination_grace_seconds": 0.2,
                **agent,
            }
        ],
        "supervision": {"strategy": "one_for_one", "intensity": 2, "period": 60},
    }


async def test_apply_shows_the_diff_and_a_dry_run_changes_nothing(ul: AsyncUnderlay) -> None:
    dry = await ul.fleets.apply(spec=spec("agent_done"), dry_run=True)
    assert dry.applied is False and dry.changes == [
        "+ agent helper: 2 x orchestration.steps_handler:agent_done (permanent)"
    ]
    with pytest.raises(errors.NotFound):
        await ul.fleets.get(name="crew")
    first = await ul.fleets.apply(spec=spec("agent_done"))
    assert (first.applied, first.generation) == (True, 1)
    same = await ul.fleets.apply(spec=spec("agent_done"))
    assert (same.applied, same.generation, same.changes) == (False, 1, [])
    scaled = await ul.fleets.apply(spec=spec("agent_done", replicas=5))
    assert scaled.generation == 2 and scaled.changes == ["~ agent helper: replicas 2 -> 5"]
    with pytest.raises(errors.InvalidInput):
        await ul.fleets.apply(spec={**spec("agent_done"), "name": "Bad Name"})
    bad = spec("agent_done")
    bad["agents"].append(bad["agents"][0])
    with pytest.raises(errors.InvalidInput, match="unique"):
        await ul.fleets.apply(spec=bad)


async def test_members_get_identities_and_runs_and_scale_down_stops_one(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, tmp_path: Path
) -> None:
    log = tmp_path / "agents.log"
    await ul.fleets.apply(spec=spec("agent_forever", input={"log": str(log)}, budget="1.00 USD"))
    reconciler = FleetReconciler(kernel)
    fleet = await reconcile_until(
        reconciler, ul, lambda f: [m.state for m in f.members] == ["running"] * 2
    )
    ids = [m.agent_id for m in fleet.members]
    agents = {a.name: a.id for a in (await ul.agents.list()).items}
    assert agents["crew.helper.0"] == ids[0] and agents["crew.helper.1"] == ids[1]
    assert (await ul.budget.balance(agent=ids[0])).available.amount == 1
    for _ in range(100):  # each program started once, as its own agent
        if log.exists() and len(log.read_text().splitlines()) == 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(log.read_text().splitlines()) == [f"start helper.{i} {ids[i]}" for i in (0, 1)]
    await ul.fleets.apply(
        spec=spec("agent_forever", replicas=1, input={"log": str(log)}, budget="1.00 USD")
    )
    fleet = await reconcile_until(
        reconciler, ul, lambda f: [m.state for m in f.members] == ["running", "terminated"]
    )
    stopped = await ul.tasks.get(task_id=fleet.members[1].task_id)
    assert stopped.state == "cancelled"
    for _ in range(100):  # the worker stops the cancelled run at its next heartbeat
        if len(worker._running) == 1:
            break
        await asyncio.sleep(0.05)
    assert list(worker._running) == [fleet.members[0].task_id]
    await ul.fleets.apply(  # scaled back up: the terminated member runs again
        spec=spec("agent_forever", replicas=2, input={"log": str(log)}, budget="1.00 USD")
    )
    fleet = await reconcile_until(
        reconciler, ul, lambda f: [m.state for m in f.members] == ["running"] * 2
    )
    assert [m.agent_id for m in fleet.members] == ids  # the same identities
    await ul.fleets.delete(name="crew")
    fleet = await reconcile_until(
        reconciler, ul, lambda f: all(m.state == "terminated" for m in f.members)
    )
    assert fleet.deleted


async def test_transient_agents_that_finish_are_not_restarted(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker
) -> None:
    await ul.fleets.apply(spec=spec("agent_done", restart="transient"))
    reconciler = FleetReconciler(kernel)
    fleet = await reconcile_until(
        reconciler, ul, lambda f: [m.state for m in f.members] == ["succeeded"] * 2
    )
    assert [m.restarts for m in fleet.members] == [0, 0]
    for _ in range(5):
        await reconciler.reconcile_once()
    assert [m.restarts for m in (await ul.fleets.get(name="crew")).members] == [0, 0]


async def test_a_crash_loop_is_restarted_then_escalated_exactly_once(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker
) -> None:
    await ul.fleets.apply(spec=spec("agent_crash", replicas=1))
    reconciler = FleetReconciler(kernel)
    fleet = await reconcile_until(reconciler, ul, lambda f: f.escalation_id is not None)
    assert [m.restarts for m in fleet.members] == [2]  # intensity 2, then it gave up
    assert fleet.members[0].state in ("failed", "terminated")
    for _ in range(5):
        await reconciler.reconcile_once()
    [esc] = (await ul.escalations.list()).items
    assert esc.id == fleet.escalation_id and esc.source == "fleet:crew"
    assert "more than 2 restarts in 60 s" in esc.summary
    again = await ul.fleets.apply(spec=spec("agent_crash", replicas=1))  # the same spec
    assert again.applied and again.changes[0].startswith("~ restart: the fleet gave up")
    fleet = await reconcile_until(reconciler, ul, lambda f: f.escalation_id is not None)
    assert fleet.generation == 2 and len((await ul.escalations.list()).items) == 2


async def test_a_member_created_but_never_started_is_started(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker
) -> None:
    from sqlalchemy import update

    from underlay.storage.schema import fleet_members

    await ul.fleets.apply(spec=spec("agent_done", replicas=1, restart="transient"))
    reconciler = FleetReconciler(kernel)
    await reconcile_until(reconciler, ul, lambda f: f.members[0].state == "succeeded")
    async with kernel.db.write() as conn:  # as if the reconciler died between two writes
        await conn.execute(update(fleet_members).values(state="pending", task_id=None))
    done = await reconcile_until(reconciler, ul, lambda f: f.members[0].state == "succeeded")
    assert done.members[0].task_id is not None
