"""Health of fleet members beyond their exits: stalls, and replicas from queue depth.

* ``stalled``: a running member whose run has sent no heartbeat (``fleets.heartbeat``)
  for ``health.heartbeat_seconds``, or whose reported progress has not changed for
  ``health.progress_seconds`` — both counted from the run's start, so a run that never
  beats is caught too. The reconciler stops such a run and hands the exit to the
  supervisor as a crash.
* ``Autoscaler``: an agent's replicas from the depth of its ``autoscale.queue``.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import func, select

from underlay.orchestration.fleet_models import AgentSpec
from underlay.storage.engine import Database
from underlay.storage.schema import fleet_members, tasks


def stalled(agent: AgentSpec, member: Any, now: float) -> str | None:
    """Why ``member``'s run counts as stalled at ``now``, or None."""
    h = agent.health
    started = member.run_started_at or member.updated_at
    if h.heartbeat_seconds is not None:
        quiet = now - max(member.beat_at or 0.0, started)
        if quiet > h.heartbeat_seconds:
            return f"no heartbeat for {quiet:.1f} s (limit {h.heartbeat_seconds:g} s)"
    if h.progress_seconds is not None:
        still = now - max(member.progress_at or 0.0, started)
        if still > h.progress_seconds:
            return f"no progress for {still:.1f} s (limit {h.progress_seconds:g} s)"
    return None


async def queue_depth(db: Database, org_id: str, queue: str) -> int:
    """Tasks of ``org_id`` queued or leased in ``queue``, fleet members' own runs excepted."""
    runs = select(fleet_members.c.task_id).where(
        fleet_members.c.org_id == org_id, fleet_members.c.task_id.is_not(None)
    )
    query = select(func.count()).where(
        tasks.c.org_id == org_id, tasks.c.queue == queue,
        tasks.c.state.in_(("queued", "leased")), tasks.c.id.not_in(runs),
    )  # fmt: skip
    async with db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


class Autoscaler:
    """Replicas of autoscaled agents; remembers since when fewer would do (per process)."""

    def __init__(self) -> None:
        self._lower_since: dict[tuple[str, str, str], float] = {}
        self._current: dict[tuple[str, str, str], int] = {}

    async def replicas(
        self, db: Database, org_id: str, fleet: str, agent: AgentSpec, running: int, now: float
    ) -> int:
        """How many replicas ``agent`` should have; ``running``: how many it has now."""
        a = agent.autoscale
        if a is None:
            return agent.replicas
        depth = await queue_depth(db, org_id, a.queue)
        want = min(a.max_replicas, max(a.min_replicas, math.ceil(depth / a.tasks_per_replica)))
        key = (org_id, fleet, agent.name)
        current = self._current.get(key, running)
        if want >= current:
            self._lower_since.pop(key, None)
            self._current[key] = want
            return want
        since = self._lower_since.setdefault(key, now)
        if now - since >= a.scale_down_delay_seconds:
            self._lower_since.pop(key, None)
            self._current[key] = want
            return want
        return current
