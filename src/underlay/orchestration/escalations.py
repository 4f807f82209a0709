"""The human escalation inbox: escalations and approvals, each with its context.

Guarantees:

* ``raise_`` is exactly once per ``dedupe_key`` in an organisation: raising again returns
  the first escalation (a supervisor that gives up, a task step re-run after a crash).
* ``resolve`` answers an open escalation once; a second answer is a ``conflict``. When a
  task waits on it, the same transaction puts the task back in its queue (or, for a
  failure escalation answered ``{"retry": false}``, fails it), so resolving and resuming
  cannot come apart.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from underlay import errors
from underlay.storage.engine import Database
from underlay.storage.schema import escalations, tasks
from underlay.types import new_id


async def raise_(db: Database, **fields: Any) -> tuple[Any, bool]:
    """Open an escalation (or find the one with this key); return it and whether it is new.

    ``fields``: org_id, source, summary, context, dedupe_key, raised_by, now, and
    optionally kind (``escalation``) and task_id."""
    return await db.run_write(lambda conn: open_in(conn, **fields))


def open_in(
    conn: Connection,
    *,
    org_id: str,
    source: str,
    summary: str,
    context: dict[str, Any],
    dedupe_key: str,
    raised_by: str,
    now: float,
    kind: str = "escalation",
    task_id: str | None = None,
) -> tuple[Any, bool]:
    """``raise_`` inside the caller's transaction."""
    found = _by_key(conn, org_id, dedupe_key)
    if found is not None:
        return found, False
    conn.execute(
        escalations.insert().values(
            id=new_id("esc"), org_id=org_id, kind=kind, source=source, summary=summary,
            context=context, state="open", task_id=task_id, dedupe_key=dedupe_key,
            raised_by=raised_by, created_at=now,
        )
    )  # fmt: skip
    return _by_key(conn, org_id, dedupe_key), True


def _by_key(conn: Connection, org_id: str, key: str) -> Any:
    return conn.execute(
        select(escalations).where(escalations.c.org_id == org_id, escalations.c.dedupe_key == key)
    ).first()


async def find(db: Database, org_id: str, dedupe_key: str) -> Any:
    async with db.read() as conn:
        found = await conn.execute(
            select(escalations).where(
                escalations.c.org_id == org_id, escalations.c.dedupe_key == dedupe_key
            )
        )
        return found.first()


async def resolve(
    db: Database, org_id: str, escalation_id: str, resolution: dict[str, Any], by: str, now: float
) -> Any:
    """Answer an open escalation; resume the task waiting on it."""

    def work(conn: Connection) -> Any:
        row = conn.execute(
            select(escalations).where(
                escalations.c.id == escalation_id, escalations.c.org_id == org_id
            )
        ).first()
        if row is None:
            raise errors.NotFound(f"no escalation {escalation_id}", field="escalation_id")
        if row.state != "open":
            raise errors.Conflict(f"escalation {escalation_id} was resolved already")
        conn.execute(
            update(escalations)
            .where(escalations.c.id == escalation_id)
            .values(state="resolved", resolution=resolution, resolved_by=by, resolved_at=now)
        )
        waiting = (tasks.c.id == row.task_id) & (tasks.c.state == "waiting")
        if row.task_id and "failure" in row.context and resolution.get("retry") is False:
            conn.execute(update(tasks).where(waiting).values(state="failed", finished_at=now))
        elif row.task_id:  # the waiting attempt does not count against max_attempts
            conn.execute(
                update(tasks)
                .where(waiting)
                .values(state="queued", not_before=now, attempts=tasks.c.attempts - 1)
            )
        return conn.execute(select(escalations).where(escalations.c.id == escalation_id)).first()

    return await db.run_write(work)
