"""Mailboxes: messages addressed to one agent (or human), read by it alone.

Guarantees:

* ``send`` has committed the message durably when it returns and wakes the addressee's
  waiting reads in this process; ``deliver(conn, ...)`` does the same inside a caller's
  write transaction (a verdict and the message telling its author commit together).
  Bodies are JSON objects, scrubbed of secrets before they are written.
* Message ids increase and, within an organisation, become visible in id order (the
  same per-organisation serialization as the event log), so an inbox read ``after``
  the last id seen never skips a message.
* ``inbox`` reads one principal's messages — unread ones only, or all — after a
  cursor, oldest first; with ``wait_seconds`` it waits for one to arrive. Only the
  addressee, or a human of the organisation, reads an inbox (``may_read``): anyone
  else gets ``permission_denied`` naming whose inbox it is.
* ``ack`` marks messages read once: ``read_at`` keeps the first acknowledgement, and
  acknowledging again changes nothing. Messages are never deleted here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from underlay import errors
from underlay.comms import notify
from underlay.comms.events import serialize
from underlay.comms.scrub import scrub
from underlay.kernel.context import Principal
from underlay.storage.engine import Database
from underlay.storage.schema import messages


def may_read(principal: Principal, owner: str, field: str = "agent") -> None:
    """Refuse anyone but ``owner`` itself or a human (or the system) of the org."""
    if principal.id != owner and principal.kind not in ("human", "system"):
        raise errors.PermissionDenied(
            f"the inbox of {owner} is theirs: only they or a human of the organisation "
            "may read it or mark its messages read",
            field=field,
        )


def deliver(
    conn: Connection,
    org_id: str,
    to: str,
    sender: str,
    subject: str,
    body: dict[str, Any],
    now: float,
) -> int:
    """Put one message in ``to``'s inbox inside the caller's write transaction; its id."""
    serialize(conn, org_id)
    return int(conn.execute(
        messages.insert().values(
            org_id=org_id, to_agent=to, sender=sender, subject=str(scrub(subject))[:200],
            body=scrub(body), created_at=now,
        ).returning(messages.c.id)
    ).scalar_one())  # fmt: skip


async def send(
    db: Database,
    org_id: str,
    to: str,
    sender: str,
    subject: str,
    body: dict[str, Any],
    now: float,
) -> Any:
    """Deliver one message durably and wake its addressee's waiting reads; its row."""

    def work(conn: Connection) -> Any:
        message_id = deliver(conn, org_id, to, sender, subject, body, now)
        return conn.execute(select(messages).where(messages.c.id == message_id)).one()

    row = await db.run_write(work)
    notify.wake(db, org_id)
    return row


async def inbox(
    db: Database,
    org_id: str,
    owner: str,
    *,
    unread: bool = True,
    after: int = 0,
    limit: int = 100,
    wait_seconds: float = 0.0,
) -> list[Any]:
    """``owner``'s messages with ``id > after``, oldest first (only unread ones by default)."""
    m = messages
    query = select(m).where(m.c.org_id == org_id, m.c.to_agent == owner, m.c.id > after)
    if unread:
        query = query.where(m.c.read_at.is_(None))
    query = query.order_by(m.c.id).limit(limit)
    return await notify.rows(db, org_id, query, wait_seconds)


async def ack(
    db: Database, org_id: str, principal: Principal, ids: list[int], now: float
) -> list[Any]:
    """Mark messages read (the first time only); refused, as a whole, if one of them is
    missing or someone else's. The messages, as they are now."""
    wanted = sorted(set(ids))

    def work(conn: Connection) -> list[Any]:
        query = select(messages).where(messages.c.org_id == org_id, messages.c.id.in_(wanted))
        found = {r.id: r for r in conn.execute(query)}
        for message_id in wanted:
            row = found.get(message_id)
            if row is None:
                raise errors.NotFound(f"no message {message_id}", field="ids")
            may_read(principal, row.to_agent, field="ids")
        conn.execute(
            update(messages)
            .where(messages.c.id.in_(wanted), messages.c.read_at.is_(None))
            .values(read_at=now)
        )
        return list(conn.execute(query.order_by(messages.c.id)))

    return await db.run_write(work)
