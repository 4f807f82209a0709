"""The event log: what happened in an organisation, durable and in order, read by cursor.

Guarantees:

* ``publish(db, org_id, topic, subject, payload)`` has committed the event durably when
  it returns, and wakes the readers waiting in this process. ``append(conn, ...)`` does
  the same inside a caller's write transaction, so an event commits together with the
  state change it reports, or not at all (the caller wakes readers after the commit:
  ``notify.wake``).
* Ids increase, and within an organisation they become visible in id order: writes of
  one organisation's events and messages are serialized (SQLite's write lock; on
  PostgreSQL a transaction-level advisory lock per organisation, taken before the id is
  drawn). A reader that has seen id N never later finds a new event below N, so reading
  ``after`` the last id it saw never skips one.
* ``read`` returns the events after a cursor, oldest first, at most ``limit``, only
  those under a topic prefix if one is given; with ``wait_seconds`` (at most
  ``MAX_WAIT_SECONDS``) it waits until one arrives — at once on a publish in this
  process, within ``notify.POLL_SECONDS`` for another process's.
* Topics are dotted lower-case names (``queue.landed``). A filter matches segment by
  segment: ``queue`` (or ``queue.*``) matches ``queue`` and ``queue.<anything>``;
  ``queue.conflict`` does not match ``queue.conflict_predicted``; ``*`` matches all.
* Payloads are JSON objects, scrubbed of secrets before they are written (``scrub``).
  Events are never updated; nothing here deletes them yet.
"""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy import ColumnElement, Connection, or_, select, text

from underlay import errors
from underlay.comms import notify
from underlay.comms.scrub import scrub
from underlay.storage.engine import Database
from underlay.storage.schema import events

MAX_WAIT_SECONDS = notify.MAX_WAIT_SECONDS
TOPIC = r"^[a-z][a-z0-9_]{0,40}(\.[a-z][a-z0-9_]{0,40}){0,4}$"
TOPIC_FILTER = r"^(\*|[a-z][a-z0-9_]{0,40}(\.[a-z][a-z0-9_]{0,40}){0,4}(\.\*)?)$"
TOPIC_HELP = "dotted lower-case names like queue or queue.landed"
_TOPIC = re.compile(TOPIC)
_LOCK_CLASS = 0x636F6D6D  # "comm": the advisory-lock class of comms writes (PostgreSQL)


def serialize(conn: Connection, org_id: str) -> None:
    """Take the organisation's comms write lock for the rest of the transaction (a no-op
    on SQLite, whose writers are serialized already). Call before inserting."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(f"SELECT pg_advisory_xact_lock({_LOCK_CLASS}, hashtext(:org))"), {"org": org_id}
        )


def append(
    conn: Connection, org_id: str, topic: str, subject: str, payload: dict[str, Any], now: float
) -> int:
    """Append one event inside the caller's write transaction; its id."""
    if not _TOPIC.match(topic):
        raise errors.InvalidInput(f"topic {topic!r}: expected {TOPIC_HELP}", field="topic")
    serialize(conn, org_id)
    return int(conn.execute(
        events.insert().values(
            org_id=org_id, topic=topic, subject=subject[:200], payload=scrub(payload),
            created_at=now,
        ).returning(events.c.id)
    ).scalar_one())  # fmt: skip


async def publish(
    db: Database,
    org_id: str,
    topic: str,
    subject: str,
    payload: dict[str, Any],
    now: float | None = None,
) -> int:
    """Append one event, durably, and wake its readers; its id. ``now``: the kernel's
    clock, when the caller has one (default the system's)."""
    at = time.time() if now is None else now
    event_id = await db.run_write(lambda conn: append(conn, org_id, topic, subject, payload, at))
    notify.wake(db, org_id)
    return event_id


def matching(topic: str | None) -> ColumnElement[bool] | None:
    """The SQL condition of a topic filter (None: every topic)."""
    if topic is None or topic == "*":
        return None
    base = topic.removesuffix(".*")
    return or_(events.c.topic == base, events.c.topic.startswith(base + ".", autoescape=True))


async def read(
    db: Database,
    org_id: str,
    *,
    after: int = 0,
    topic: str | None = None,
    limit: int = 100,
    wait_seconds: float = 0.0,
) -> list[Any]:
    """The organisation's events with ``id > after``, oldest first (see the module doc)."""
    query = select(events).where(events.c.org_id == org_id, events.c.id > after)
    condition = matching(topic)
    if condition is not None:
        query = query.where(condition)
    query = query.order_by(events.c.id).limit(limit)
    return await notify.rows(db, org_id, query, wait_seconds)
