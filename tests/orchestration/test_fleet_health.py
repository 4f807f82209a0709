"""Fleet members' health beyond exits: heartbeats and no-progress stalls, replicas that
follow a queue's depth, and graceful termination (told to stop, killed after a grace)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kernel.helpers import make_agent
from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.orchestration.reconciler import FleetReconciler
from underlay.orchestration.worker import Worker
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport

from .conftest import reconcile_until


def agent(name: str, program: str, **extra: Any) -> dict[str, Any]:
    entry = f"orchestration.steps_handler:{program}"
    return {"name": name, "program": {"python": entry, "input": extra.pop("input", {})},
            "restart": "transient", **extra}  # fmt: skip


def crew(*agents: dict[str, Any]) -> dict[str, Any]:
    return {"name": "crew", "agents": list(agents),
            "supervision": {"intensity": 5, "period": 60}}  # fmt: skip


def member(fleet: Any, name: str, replica: int = 0) -> Any:
    return next(m for m in fleet.members if (m.agent, m.replica) == (name, replica))


async def feedback(ul: AsyncUnderlay, m: Any) -> str:
    task = await ul.tasks.get(task_id=m.task_id)
    return str(task.input["input"].get("feedback", ""))


async def test_a_silent_or_stuck_member_is_stalled_and_restarted(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, tmp_path: Path
) -> None:
    log = str(tmp_path / "log")
    await ul.fleets.apply(spec=crew(
        agent("silent", "agent_forever", input={"log": log}, health={"heartbeat_seconds": 0.5}),
        agent("stuck", "agent_beating", input={"moving": 3},
              health={"heartbeat_seconds": 5, "progress_seconds": 0.8}),
        agent("busy", "agent_beating", health={"heartbeat_seconds": 5, "progress_seconds": 2}),
    ))  # fmt: skip
    reconciler = FleetReconciler(kernel)
    fleet = await reconcile_until(
        reconciler, ul,
        lambda f: member(f, "silent").restarts >= 1 and member(f, "stuck").restarts >= 1,
    )  # fmt: skip
    assert (await feedback(ul, member(fleet, "silent"))).startswith("stalled: no heartbeat for")
    assert (await feedback(ul, member(fleet, "stuck"))).startswith("stalled: no progress for")
    busy = member(fleet, "busy")
    assert (busy.state, busy.restarts) == ("running", 0)  # beating and moving: left alone
    assert busy.beat_at is not None and int(busy.progress or 0) > 3


async def test_heartbeats_and_membership_are_a_running_members_only(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    with pytest.raises(errors.PermissionDenied, match="only a fleet member's agent"):
        await ul.fleets.heartbeat(progress="1")
    loner = AsyncUnderlay(LocalTransport(kernel, (await make_agent(kernel, "loner")).token))
    with pytest.raises(errors.NotFound, match="runs in no fleet"):
        await loner.fleets.heartbeat()
    with pytest.raises(errors.NotFound, match="runs in no fleet"):
        await loner.fleets.me()
    with pytest.raises(errors.InvalidInput):
        await ul.fleets.heartbeat(progress="x" * 201)


async def test_replicas_follow_the_queue_depth_within_bounds(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, tmp_path: Path
) -> None:
    scale = {"queue": "work", "min_replicas": 1, "max_replicas": 3, "tasks_per_replica": 2,
             "scale_down_delay_seconds": 0}  # fmt: skip
    await ul.fleets.apply(spec=crew(
        agent("drainer", "agent_forever", input={"log": str(tmp_path / "log")}, autoscale=scale)
    ))  # fmt: skip
    reconciler = FleetReconciler(kernel)

    def live(f: Any) -> int:
        return sum(1 for m in f.members if m.state in ("starting", "running"))

    await reconcile_until(reconciler, ul, lambda f: live(f) == 1)  # the minimum
    tasks = [await ul.tasks.submit(handler="noop", queue="work") for _ in range(5)]
    await reconcile_until(reconciler, ul, lambda f: live(f) == 3)  # ceil(5 / 2), at most 3
    for task in tasks[:3]:
        await ul.tasks.cancel(task_id=task.id)
    fleet = await reconcile_until(reconciler, ul, lambda f: live(f) == 1)  # ceil(2 / 2)
    assert [m.state for m in fleet.members] == ["running", "terminated", "terminated"]


async def test_scaling_down_waits_for_the_delay(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, tmp_path: Path
) -> None:
    scale = {"queue": "work", "max_replicas": 2, "scale_down_delay_seconds": 60}
    await ul.fleets.apply(spec=crew(
        agent("drainer", "agent_forever", input={"log": str(tmp_path / "log")}, autoscale=scale)
    ))  # fmt: skip
    reconciler = FleetReconciler(kernel)
    tasks = [await ul.tasks.submit(handler="noop", queue="work") for _ in range(2)]
    await reconcile_until(reconciler, ul, lambda f: len(f.members) == 2)
    for task in tasks:
        await ul.tasks.cancel(task_id=task.id)
    for _ in range(5):
        await reconciler.reconcile_once()
    fleet = await ul.fleets.get(name="crew")
    assert [m.state for m in fleet.members] == ["running", "running"]
    with pytest.raises(errors.InvalidInput, match="min_replicas is above"):
        bad = {**scale, "min_replicas": 3}
        await ul.fleets.apply(spec=crew(agent("x", "agent_done", autoscale=bad)))


async def test_a_stopped_member_is_told_first_and_killed_after_its_grace(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    graceful = agent("tidy", "agent_graceful", input={"log": str(log)},
                     termination_grace_seconds=0.6)  # fmt: skip
    await ul.fleets.apply(spec=crew(graceful))
    reconciler = FleetReconciler(kernel)
    await reconcile_until(reconciler, ul, lambda f: member(f, "tidy").state == "running")
    await ul.fleets.apply(spec=crew({**graceful, "replicas": 0}))
    await reconcile_until(reconciler, ul, lambda f: member(f, "tidy").state == "terminated")
    for _ in range(50):
        if log.exists() and not worker._running:
            break
        await asyncio.sleep(0.05)
    assert log.read_text() == "stopping 0\n"  # it was told, and had time to act
    assert worker._running == {}  # and then it was cancelled
