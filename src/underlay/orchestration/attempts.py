"""Every lease of a task as a row of history, and what the attempts cost.

``started`` is written in the claim's transaction and ``ended`` in the transaction that
ends the lease (complete, fail, wait, cancel, adoption after a worker's death), so the
history never disagrees with the task. ``costs`` joins attempts with their outcomes:
worker-seconds per task and per successful task, attempts per success, and the retry
tax — the share of worker time spent on attempts that did not succeed (``spend`` adds
the money).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, case, func, select, update

from underlay.storage.engine import Database
from underlay.storage.schema import task_attempts, tasks


def started(conn: Connection, leases: list[Any], worker_id: str, now: float) -> None:
    """One row for each new lease (one statement for all of them)."""
    if not leases:
        return
    conn.execute(
        task_attempts.insert(),
        [
            {
                "task_id": lease.task_id, "fence": lease.fence, "org_id": lease.org_id,
                "attempt": lease.attempt, "worker_id": worker_id, "handler": lease.handler,
                "queue": lease.queue, "started_at": now, "outcome": "running",
            }
            for lease in leases
        ],
    )  # fmt: skip


def ended(
    conn: Connection, task_id: str, fence: int, outcome: str, now: float, error_class: Any = None
) -> None:
    conn.execute(
        update(task_attempts)
        .where(
            task_attempts.c.task_id == task_id,
            task_attempts.c.fence == fence,
            task_attempts.c.outcome == "running",
        )
        .values(outcome=outcome, finished_at=now, error_class=error_class)
    )


def lost(conn: Connection, which: Any, now: float) -> None:
    """The running attempts of tasks matching ``which`` (a worker died, a cancel)."""
    running = select(tasks.c.id).where(and_(tasks.c.state == "leased", which))
    conn.execute(
        update(task_attempts)
        .where(task_attempts.c.task_id.in_(running), task_attempts.c.outcome == "running")
        .values(outcome="lost", finished_at=now)
    )


async def history(db: Database, org_id: str, task_id: str) -> list[Any]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(task_attempts)
            .where(task_attempts.c.org_id == org_id, task_attempts.c.task_id == task_id)
            .order_by(task_attempts.c.fence)
        )
        return list(rows)


def group_key(by: str) -> Any:
    """The column ``costs`` groups attempts by: ``handler``, ``queue``, or ``agent`` (the
    task's submitter; a fleet member submits its own runs). ``agent`` needs ``tasks``
    joined on the attempt's task."""
    return tasks.c.submitted_by if by == "agent" else task_attempts.c[by]


def with_task(query: Any, by: str) -> Any:
    """``query`` over ``task_attempts``, joined with ``tasks`` when ``by`` needs it."""
    if by != "agent":
        return query
    return query.select_from(task_attempts.join(tasks, tasks.c.id == task_attempts.c.task_id))


async def costs(db: Database, org_id: str, by: str, since: float) -> list[dict[str, Any]]:
    """Per ``by`` (handler, queue or agent): tasks, successes, attempts, worker-seconds,
    retry tax."""
    key = group_key(by)
    seconds = func.coalesce(task_attempts.c.finished_at - task_attempts.c.started_at, 0.0)
    wasted = case((task_attempts.c.outcome != "succeeded", seconds), else_=0.0)
    query = with_task(
        select(
            key.label("key"),
            func.count(func.distinct(task_attempts.c.task_id)).label("tasks"),
            func.count().label("attempts"),
            func.sum(case((task_attempts.c.outcome == "succeeded", 1), else_=0)).label("ok"),
            func.sum(seconds).label("seconds"),
            func.sum(wasted).label("wasted"),
        ),
        by,
    )
    query = (
        query.where(task_attempts.c.org_id == org_id, task_attempts.c.started_at >= since)
        .group_by(key)
        .order_by(key)
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    out = []
    for r in rows:
        total, ok = float(r.seconds or 0), int(r.ok or 0)
        out.append(
            {
                by: r.key, "tasks": r.tasks, "succeeded": ok, "attempts": r.attempts,
                "worker_seconds": round(total, 6),
                "seconds_per_success": round(total / ok, 6) if ok else None,
                "attempts_per_success": round(r.attempts / ok, 3) if ok else None,
                "retry_tax": round(float(r.wasted or 0) / total, 4) if total else 0.0,
            }
        )  # fmt: skip
    return out
