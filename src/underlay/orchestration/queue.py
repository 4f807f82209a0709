"""The durable task queue: priorities, per-queue concurrency, fair share, fenced leases.

Guarantees (each operation is durable before it returns; concurrent submissions and
completions share transactions — group commit — and each succeeds or fails on its own):

* ``submit`` stores a task ``queued``; with an idempotency key, submitting again returns
  the first task instead of a second one.
* ``claim`` leases ready tasks to a worker. Organisations take turns (the one with the
  fewest tasks running first), then priority (higher first), then age. A queue's
  ``concurrency`` bounds its leased tasks. Every lease raises the task's ``fence``: the
  fencing token that every later write of that lease must carry.
* ``complete`` / ``fail`` / ``heartbeat`` with a token that is no longer the task's
  latest lease raise ``errors.StaleLease`` and change nothing: a worker that lost its
  lease (it paused, its heartbeats stopped, the task was adopted) cannot overwrite the
  work of the worker that holds it now.
* ``heartbeat`` keeps a worker, and so its leases, alive. ``reap`` (the reconciler's
  step) marks workers whose heartbeats stopped ``dead`` and hands every lease of a worker
  that is not alive back to the queue (``queued``): adoption.

Claims serialize: SQLite's write lock, a PostgreSQL advisory lock on PostgreSQL.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, select, text, update

from underlay import errors
from underlay.orchestration import attempts
from underlay.orchestration import escalations as escalations_store
from underlay.storage.batch import GroupCommit
from underlay.storage.engine import Database
from underlay.storage.schema import escalations, task_queues, tasks, workers
from underlay.types import new_id

DEFAULT_CONCURRENCY = 1_000
_CLAIM_LOCK = 0x756E6471  # "undq": one claimer at a time on PostgreSQL
TERMINAL = ("succeeded", "failed", "cancelled")  # queued, leased and waiting are not


@dataclass(frozen=True)
class Lease:
    """A task leased to one worker: run it, then report with this ``fence``."""

    task_id: str
    org_id: str
    queue: str
    handler: str
    input: dict[str, Any]
    attempt: int
    fence: int
    max_attempts: int = 1


@dataclass(frozen=True)
class NewTask:
    org_id: str
    queue: str
    handler: str
    input: dict[str, Any]
    submitted_by: str
    priority: int = 0
    max_attempts: int = 3
    idempotency_key: str | None = None


class TaskQueue:
    """Tasks and workers in the kernel's database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._rng = random.Random()
        self._submits: GroupCommit[tuple[NewTask, float], tuple[str, bool]]
        self._submits = GroupCommit(db, self._insert)
        self._completions: GroupCommit[tuple[Lease, dict[str, Any], float], None]
        self._completions = GroupCommit(db, self._finish)

    # -- producers ---------------------------------------------------------------------

    async def submit(self, task: NewTask, now: float) -> tuple[str, bool]:
        """Store a task; return its id and whether it is new (False: idempotent replay)."""
        return await self._submits.submit((task, now))

    @staticmethod
    def _insert(
        conn: Connection, *, items: list[tuple[NewTask, float]]
    ) -> list[tuple[str, bool] | BaseException]:
        out: list[tuple[str, bool] | BaseException] = []
        for task, now in items:
            if task.idempotency_key:
                found = conn.execute(
                    select(tasks.c.id).where(
                        tasks.c.org_id == task.org_id,
                        tasks.c.idempotency_key == task.idempotency_key,
                    )
                ).scalar()
                if found:
                    out.append((found, False))
                    continue
            task_id = new_id("task")
            conn.execute(
                tasks.insert().values(
                    id=task_id,
                    org_id=task.org_id,
                    queue=task.queue,
                    handler=task.handler,
                    input=task.input,
                    priority=task.priority,
                    state="queued",
                    attempts=0,
                    max_attempts=task.max_attempts,
                    fence=0,
                    not_before=now,
                    submitted_by=task.submitted_by,
                    idempotency_key=task.idempotency_key,
                    created_at=now,
                )
            )
            out.append((task_id, True))
        return out

    async def set_concurrency(self, org_id: str, queue: str, concurrency: int) -> None:
        def work(conn: Connection) -> None:
            key = {"org_id": org_id, "name": queue}
            done = conn.execute(
                update(task_queues)
                .where(task_queues.c.org_id == org_id, task_queues.c.name == queue)
                .values(concurrency=concurrency)
            )
            if not done.rowcount:
                conn.execute(task_queues.insert().values(**key, concurrency=concurrency))

        await self.db.run_write(work)

    async def cancel(self, org_id: str, task_id: str, now: float) -> str:
        """Cancel a task not yet finished; return its state after (terminal ones stay)."""

        def work(conn: Connection) -> str:
            found = conn.execute(
                select(tasks.c.state, tasks.c.fence).where(
                    tasks.c.id == task_id, tasks.c.org_id == org_id
                )
            ).first()
            if found is None:
                raise errors.NotFound(f"no task {task_id}", field="task_id")
            if found.state in TERMINAL:
                return str(found.state)
            attempts.ended(conn, task_id, found.fence, "cancelled", now)
            conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id)
                .values(state="cancelled", finished_at=now, worker_id=None, fence=tasks.c.fence + 1)
            )
            return "cancelled"

        return await self.db.run_write(work)

    # -- workers -----------------------------------------------------------------------

    async def register_worker(self, host: str, pid: int, queues: list[str], now: float) -> str:
        worker_id = new_id("wrk")

        def work(conn: Connection) -> None:
            conn.execute(
                workers.insert().values(
                    id=worker_id,
                    host=host,
                    pid=pid,
                    queues=queues,
                    state="alive",
                    started_at=now,
                    heartbeat_at=now,
                )
            )

        await self.db.run_write(work)
        return worker_id

    async def claim(self, worker_id: str, queues: list[str], limit: int, now: float) -> list[Lease]:
        """Lease up to ``limit`` ready tasks of ``queues`` to ``worker_id``."""
        return await self.db.run_write(
            lambda conn: self._claim(conn, worker_id, queues, limit, now)
        )

    def _claim(
        self, conn: Connection, worker_id: str, queues: list[str], limit: int, now: float
    ) -> list[Lease]:
        if not self.db.is_sqlite:
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_CLAIM_LOCK})"))
        alive = conn.execute(select(workers.c.state).where(workers.c.id == worker_id)).scalar()
        if alive != "alive":
            raise errors.StaleLease(f"worker {worker_id} is {alive or 'unknown'}: register again")
        running: dict[tuple[str, str], int] = {
            (r.org_id, r.queue): r.n
            for r in conn.execute(
                select(tasks.c.org_id, tasks.c.queue, func.count().label("n"))
                .where(tasks.c.state == "leased", tasks.c.queue.in_(queues))
                .group_by(tasks.c.org_id, tasks.c.queue)
            )
        }
        ready = conn.execute(
            select(tasks.c.org_id, tasks.c.queue)
            .where(tasks.c.state == "queued", tasks.c.queue.in_(queues), tasks.c.not_before <= now)
            .group_by(tasks.c.org_id, tasks.c.queue)
        ).all()
        if not ready:
            return []
        limits = {
            (r.org_id, r.name): r.concurrency
            for r in conn.execute(select(task_queues).where(task_queues.c.name.in_(queues)))
        }
        room = {
            (r.org_id, r.queue): limits.get((r.org_id, r.queue), DEFAULT_CONCURRENCY)
            - running.get((r.org_id, r.queue), 0)
            for r in ready
        }
        load: dict[str, int] = {}
        for (org, _), n in running.items():
            load[org] = load.get(org, 0) + n
        picked: list[Any] = []
        candidates = {org: self._ready(conn, org, room, limit, now) for org in {o for o, _ in room}}
        while len(picked) < limit and any(candidates.values()):
            org = min((o for o in candidates if candidates[o]), key=lambda o: load.get(o, 0))
            row = candidates[org].pop(0)
            if room[(org, row.queue)] <= 0:
                continue
            room[(org, row.queue)] -= 1
            load[org] = load.get(org, 0) + 1
            picked.append(row)
        if not picked:
            return []
        # One statement for every pick; "state = queued" re-checked at the write, so a
        # cancel that slipped in between (PostgreSQL) wins and that task is not leased.
        leased = conn.execute(
            update(tasks)
            .where(tasks.c.id.in_([row.id for row in picked]), tasks.c.state == "queued")
            .values(
                state="leased",
                worker_id=worker_id,
                fence=tasks.c.fence + 1,
                attempts=tasks.c.attempts + 1,
                started_at=func.coalesce(tasks.c.started_at, now),
            )
            .returning(tasks.c.id, tasks.c.fence, tasks.c.attempts)
        ).all()
        got = {r.id: r for r in leased}
        leases = [
            Lease(row.id, row.org_id, row.queue, row.handler, row.input,
                  got[row.id].attempts, got[row.id].fence, row.max_attempts)
            for row in picked
            if row.id in got
        ]  # fmt: skip
        attempts.started(conn, leases, worker_id, now)
        return leases

    def _ready(
        self, conn: Connection, org: str, room: dict[tuple[str, str], int], limit: int, now: float
    ) -> list[Any]:
        open_queues = [q for (o, q), n in room.items() if o == org and n > 0]
        if not open_queues:
            return []
        return list(
            conn.execute(
                select(
                    tasks.c.id,
                    tasks.c.org_id,
                    tasks.c.queue,
                    tasks.c.handler,
                    tasks.c.input,
                    tasks.c.attempts,
                    tasks.c.fence,
                    tasks.c.max_attempts,
                )
                .where(
                    tasks.c.state == "queued",
                    tasks.c.queue.in_(open_queues),
                    tasks.c.org_id == org,
                    tasks.c.not_before <= now,
                )
                .order_by(tasks.c.priority.desc(), tasks.c.created_at, tasks.c.id)
                .limit(limit)
            )
        )

    async def heartbeat(
        self, worker_id: str, now: float, running: dict[str, int] | None = None
    ) -> list[str]:
        """Prove the worker alive (its leases live as long as it does). ``running``: the
        tasks it runs, with their fencing tokens; returns those no longer its own
        (cancelled, or adopted after it stalled), whose attempts it must stop. It writes
        only the worker's row: no task row locks to contend on."""

        def work(conn: Connection) -> list[str]:
            alive = conn.execute(
                update(workers)
                .where(workers.c.id == worker_id, workers.c.state == "alive")
                .values(heartbeat_at=now)
            )
            if not alive.rowcount:
                raise errors.StaleLease(f"worker {worker_id} was declared dead or stopped")
            if not running:
                return []
            held = conn.execute(
                select(tasks.c.id, tasks.c.fence).where(
                    tasks.c.id.in_(list(running)),
                    tasks.c.state == "leased",
                    tasks.c.worker_id == worker_id,
                )
            )
            mine = {r.id for r in held if r.fence == running[r.id]}
            return sorted(set(running) - mine)

        return await self.db.run_write(work)

    async def stop_worker(self, worker_id: str, now: float) -> None:
        """A clean exit: the worker's remaining leases go back to the queue at once."""

        def work(conn: Connection) -> None:
            conn.execute(update(workers).where(workers.c.id == worker_id).values(state="stopped"))
            _requeue(conn, tasks.c.worker_id == worker_id, now)

        await self.db.run_write(work)

    # -- results -----------------------------------------------------------------------

    async def complete(self, lease: Lease, result: dict[str, Any], now: float) -> None:
        """Mark the lease's task succeeded (group-committed with concurrent completions)."""
        await self._completions.submit((lease, result, now))

    @staticmethod
    def _finish(
        conn: Connection, *, items: list[tuple[Lease, dict[str, Any], float]]
    ) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for lease, result, now in items:
            done = conn.execute(
                update(tasks)
                .where(
                    tasks.c.id == lease.task_id,
                    tasks.c.fence == lease.fence,
                    tasks.c.state == "leased",
                )
                .values(state="succeeded", result=result, finished_at=now, worker_id=None)
            )
            if not done.rowcount:  # stale: say why (and write nothing)
                try:
                    _fenced(conn, lease)
                    raise errors.StaleLease(f"task {lease.task_id}: the lease is gone")
                except errors.UnderlayError as exc:
                    out.append(exc)
                continue
            attempts.ended(conn, lease.task_id, lease.fence, "succeeded", now)
            out.append(None)
        return out

    async def fail(
        self, lease: Lease, error: dict[str, Any], now: float, *, retryable: bool
    ) -> str:
        """Record a failed attempt: back to the queue (with backoff) or failed for good."""

        def work(conn: Connection) -> str:
            row = _fenced(conn, lease)
            if retryable and row.attempts < row.max_attempts:
                delay = min(60.0, 0.5 * 2 ** (row.attempts - 1)) * self._rng.uniform(0.8, 1.2)
                values: dict[str, Any] = {"state": "queued", "not_before": now + delay}
            else:
                values = {"state": "failed", "finished_at": now}
            conn.execute(
                update(tasks)
                .where(tasks.c.id == lease.task_id)
                .values(**values, error=error, worker_id=None)
            )
            outcome = "retrying" if values["state"] == "queued" else "failed"
            attempts.ended(conn, lease.task_id, lease.fence, outcome, now, error.get("class"))
            return str(values["state"])

        return await self.db.run_write(work)

    async def escalate_failure(self, lease: Lease, error: dict[str, Any], now: float) -> str:
        """A failure only a person can unblock: open an escalation with the error as its
        context and park the task on it (one transaction). Returns the escalation id."""

        def work(conn: Connection) -> str:
            _fenced(conn, lease)
            row, _ = escalations_store.open_in(
                conn, org_id=lease.org_id, source=f"task:{lease.task_id}",
                summary=f"task {lease.task_id} ({lease.handler}) needs a person: "
                f"{error.get('message', '')}"[:2000],
                context={"failure": error, "task": lease.task_id, "handler": lease.handler,
                         "attempt": lease.attempt},
                dedupe_key=f"{lease.task_id}:failure:{lease.fence}", raised_by=lease.task_id,
                now=now, task_id=lease.task_id,
            )  # fmt: skip
            conn.execute(
                update(tasks)
                .where(tasks.c.id == lease.task_id)
                .values(state="waiting", waiting_on=f"human:{row.id}", error=error, worker_id=None)
            )
            attempts.ended(conn, lease.task_id, lease.fence, "waiting", now, error.get("class"))
            return str(row.id)

        return await self.db.run_write(work)

    async def wait(self, lease: Lease, escalation_id: str, now: float) -> str:
        """Park the task until a human resolves ``escalation_id`` (no worker is held); if
        that happened already, it goes straight back to the queue. Returns the state."""

        def work(conn: Connection) -> str:
            _fenced(conn, lease)
            answered = conn.execute(
                select(escalations.c.state).where(escalations.c.id == escalation_id)
            ).scalar()
            values: dict[str, Any] = {"state": "waiting", "waiting_on": f"human:{escalation_id}"}
            if answered == "resolved":  # the answer beat us here
                values = {"state": "queued", "not_before": now, "attempts": tasks.c.attempts - 1}
            conn.execute(
                update(tasks).where(tasks.c.id == lease.task_id).values(**values, worker_id=None)
            )
            attempts.ended(conn, lease.task_id, lease.fence, "waiting", now)
            return str(values["state"])

        return await self.db.run_write(work)

    # -- the reconciler ----------------------------------------------------------------

    async def reap(
        self, now: float, dead_after: float, *, reaper: str | None = None
    ) -> tuple[list[str], int]:
        """Declare silent workers (never ``reaper`` itself) dead; requeue every lease held
        by a worker that is not alive."""

        def work(conn: Connection) -> tuple[list[str], int]:
            silent = select(workers.c.id).where(
                workers.c.state == "alive", workers.c.heartbeat_at < now - dead_after
            )
            if reaper:
                silent = silent.where(workers.c.id != reaper)
            dead = list(conn.execute(silent).scalars())
            if dead:
                conn.execute(update(workers).where(workers.c.id.in_(dead)).values(state="dead"))
            alive = select(workers.c.id).where(workers.c.state == "alive")
            adopted = _requeue(conn, tasks.c.worker_id.not_in(alive), now)
            return dead, adopted

        return await self.db.run_write(work)


def _fenced(conn: Connection, lease: Lease) -> Any:
    row = conn.execute(
        select(tasks.c.state, tasks.c.fence, tasks.c.attempts, tasks.c.max_attempts).where(
            tasks.c.id == lease.task_id
        )
    ).first()
    if row is None:
        raise errors.NotFound(f"no task {lease.task_id}")
    if row.fence != lease.fence or row.state != "leased":
        raise errors.StaleLease(
            f"task {lease.task_id}: fencing token {lease.fence} is stale "
            f"(latest {row.fence}, state {row.state}); this result is rejected"
        )
    return row


def _requeue(conn: Connection, which: Any, now: float) -> int:
    attempts.lost(conn, which, now)
    done = conn.execute(
        update(tasks)
        .where(and_(tasks.c.state == "leased", which))
        .values(state="queued", worker_id=None, not_before=now)
    )
    return int(done.rowcount)
