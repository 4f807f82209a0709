"""Retention: delete finished tasks, their attempts and their DBOS workflows, in batches.

``prune(db, system_url, cutoff=...)`` deletes every task that

* is in a terminal state (``succeeded``, ``failed``, ``cancelled``: ``queue.TERMINAL``),
* finished before ``cutoff`` and at least ``SETTLE_SECONDS`` ago,
* is not referred to by an open escalation (``escalations.task_id`` or ``raised_by``),
* is not the run of a fleet member that is not final (``fleet_members.task_id``),

together with its ``task_attempts`` rows and the DBOS workflows of its attempts
(``{task_id}-f{fence}``, fence 1..the task's fence: status, inputs, outputs, step
outputs, events, messages and streams), through DBOS's public ``DBOSClient``, which
needs no DBOS launched in this process.

Guarantees:

* Bounded work per transaction: tasks are taken ``batch_size`` at a time, in id order.
  Each batch first deletes its DBOS workflows, then its task and attempt rows in one
  transaction that checks every condition above again, so a crash between the two leaves
  the task for the next run (never DBOS rows without their task).
* Queued, leased and waiting tasks are never touched; nor are tasks finished within the
  last ``SETTLE_SECONDS``, so an attempt still winding down (a cancelled task's worker
  stops it at its next heartbeat) never loses its checkpoints under it.
* Idempotent and safe from several processes at once: every delete is by id and
  re-checked; a second pruner finds nothing left to delete. Counts are what this call
  deleted (workflows: those that existed when its batch was read).
* ``dry_run`` deletes nothing and counts what would go.

A task's DBOS workflows are only ever read by later attempts of the same task
(``durable._earlier_steps``), and a terminal task has none: if a re-check keeps a task
(an escalation was opened on it meanwhile), losing its checkpoints loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection, and_, delete, func, or_, select
from sqlalchemy.pool import NullPool

from underlay.orchestration.durable import workflow_id
from underlay.orchestration.lifecycle import FINAL
from underlay.orchestration.queue import TERMINAL
from underlay.storage.engine import Database
from underlay.storage.schema import escalations, fleet_members, task_attempts, tasks

if TYPE_CHECKING:
    from dbos import DBOSClient

    from underlay.config import Config

log = logging.getLogger("underlay.retention")

DAY = 86_400.0
SETTLE_SECONDS = 60.0  # a task finished more recently is never pruned
BATCH_SIZE = 200  # tasks per transaction
DBOS_CHUNK = 500  # workflow ids per DBOS call
DBOS_SCHEMA = "dbos"  # DBOS's default system schema on PostgreSQL (durable.launch keeps it)


@dataclass(frozen=True)
class Pruned:
    """What one ``prune`` deleted (or, with ``dry_run``, would delete)."""

    cutoff: float
    dry_run: bool = False
    tasks: int = 0
    attempts: int = 0
    workflows: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.cutoff, self.dry_run, self.tasks + other.tasks,
            self.attempts + other.attempts, self.workflows + other.workflows,
        )  # fmt: skip


def prunable(cutoff: float) -> Any:
    """The SQL condition of a task that may be deleted (correlated on ``tasks``)."""
    pending_escalation = (
        select(escalations.c.id)
        .where(
            escalations.c.org_id == tasks.c.org_id,
            escalations.c.state == "open",
            or_(escalations.c.task_id == tasks.c.id, escalations.c.raised_by == tasks.c.id),
        )
        .correlate(tasks)
    )
    live_member = (
        select(fleet_members.c.task_id)
        .where(fleet_members.c.task_id == tasks.c.id, fleet_members.c.state.not_in(sorted(FINAL)))
        .correlate(tasks)
    )
    return and_(
        tasks.c.state.in_(TERMINAL),
        tasks.c.finished_at < cutoff,
        ~pending_escalation.exists(),
        ~live_member.exists(),
    )


async def prune(
    db: Database,
    system_url: str,
    *,
    cutoff: float,
    now: float | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
) -> Pruned:
    """Delete the tasks that finished before ``cutoff`` (epoch seconds) and may go, with
    their attempts and DBOS workflows (``system_url``: DBOS's system database)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    now = time.time() if now is None else now
    cutoff = min(cutoff, now - SETTLE_SECONDS)
    total = Pruned(cutoff, dry_run)
    workflows = await asyncio.to_thread(_Workflows.open, system_url)
    try:
        after = ""
        while True:
            batch = await _candidates(db, cutoff, after, batch_size)
            if not batch:
                return total
            after = batch[-1][0]
            total += await _one_batch(db, workflows, batch, cutoff, dry_run)
    finally:
        if workflows is not None:
            await asyncio.to_thread(workflows.close)


async def _candidates(db: Database, cutoff: float, after: str, limit: int) -> list[tuple[str, int]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(tasks.c.id, tasks.c.fence)
            .where(tasks.c.id > after, prunable(cutoff))
            .order_by(tasks.c.id)
            .limit(limit)
        )
        return [(r.id, int(r.fence)) for r in rows]


async def _one_batch(
    db: Database,
    workflows: _Workflows | None,
    batch: list[tuple[str, int]],
    cutoff: float,
    dry_run: bool,
) -> Pruned:
    ids = [task_id for task_id, _ in batch]
    wanted = [workflow_id(task_id, f) for task_id, fence in batch for f in range(1, fence + 1)]
    found: list[str] = []
    if workflows is not None and wanted:
        found = await asyncio.to_thread(workflows.existing, wanted)
    if dry_run:
        async with db.read() as conn:
            n = await conn.execute(
                select(func.count())
                .select_from(task_attempts)
                .where(task_attempts.c.task_id.in_(ids))
            )
            return Pruned(cutoff, True, len(ids), int(n.scalar() or 0), len(found))
    if workflows is not None and found:
        await asyncio.to_thread(workflows.delete, found)

    def work(conn: Connection) -> tuple[int, int]:
        gone = list(
            conn.execute(
                delete(tasks).where(tasks.c.id.in_(ids), prunable(cutoff)).returning(tasks.c.id)
            ).scalars()
        )
        if not gone:
            return 0, 0
        done = conn.execute(delete(task_attempts).where(task_attempts.c.task_id.in_(gone)))
        return len(gone), int(done.rowcount)

    n_tasks, n_attempts = await db.run_write(work)
    return Pruned(cutoff, False, n_tasks, n_attempts, len(found))


class _Workflows:
    """DBOS's system database through its public client (no DBOS launched here)."""

    def __init__(self, client: DBOSClient) -> None:
        self.client = client

    @classmethod
    def open(cls, system_url: str) -> _Workflows | None:
        """A client, or None when DBOS never created its tables there (no worker ran a
        durable step yet): then there is nothing of DBOS to delete."""
        if not _has_tables(system_url):
            return None
        from dbos import DBOSClient

        return cls(DBOSClient(system_database_url=system_url, system_database_pool_size=2))

    def existing(self, ids: list[str]) -> list[str]:
        found: list[str] = []
        for chunk in _chunks(ids, DBOS_CHUNK):
            statuses = self.client.list_workflows(
                workflow_ids=chunk, load_input=False, load_output=False
            )
            found.extend(s.workflow_id for s in statuses)
        return found

    def delete(self, ids: list[str]) -> None:
        """Every row DBOS keeps for these workflows (``DBOSClient.delete_workflows``).
        underlay's attempt workflows start no child workflows, so none are followed."""
        for chunk in _chunks(ids, DBOS_CHUNK):
            self.client.delete_workflows(chunk)

    def close(self) -> None:
        self.client.destroy()


def _has_tables(system_url: str) -> bool:
    """Whether DBOS's ``workflow_status`` table exists (without creating a SQLite file)."""
    url = sa.make_url(system_url)
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite:
        if not url.database or not os.path.exists(url.database):
            return False
    elif not url.drivername.startswith("cockroachdb"):
        url = url.set(drivername="postgresql+psycopg")  # as DBOS does
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        schema = None if sqlite else DBOS_SCHEMA
        return sa.inspect(engine).has_table("workflow_status", schema=schema)
    finally:
        engine.dispose()


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def forever(db: Database, config: Config, *, clock: Callable[[], float] = time.time) -> None:
    """Background task of ``underlay up``: every ``retention_every_seconds``, prune the
    tasks finished more than ``retention_days`` ago (None or 0: keep everything and
    return at once). A failed round is logged and the next one runs as planned."""
    from underlay.orchestration.worker import dbos_url

    settings = config.orchestration
    if not settings.retention_days:
        return
    keep = settings.retention_days * DAY
    while True:
        try:
            now = clock()
            done = await prune(db, dbos_url(config), cutoff=now - keep, now=now)
            if done.tasks or done.workflows:
                log.info(
                    "retention: pruned %d tasks, %d attempts, %d DBOS workflows "
                    "(finished more than %g days ago)",
                    done.tasks, done.attempts, done.workflows, settings.retention_days,
                )  # fmt: skip
        except Exception:  # the database or DBOS briefly away: the next round tries again
            log.warning(
                "retention round failed; next in %g s", settings.retention_every_seconds,
                exc_info=True,
            )  # fmt: skip
        await asyncio.sleep(settings.retention_every_seconds)
