"""The audit trail: append-only, hash-chained per org, secrets redacted before writing.

Each event stores ``prev_hash`` and ``hash = sha256(canonical(event) + prev_hash)``; the
org's head row holds the last ``seq`` and ``hash``. Appends hold the write lock (SQLite)
or the head row's lock (PostgreSQL ``FOR UPDATE``), so the chain has no forks.
``verify`` walks the chain and reports every altered, removed or reordered event and a
truncated tail.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay.storage import schema
from underlay.storage.engine import Database

GENESIS = "0" * 64
REDACTED = "[redacted]"
_SECRET_NAME = re.compile(
    r"(^|_)(password|passwd|secret|token|api_?key|private_?key|authorization|credentials?)$",
    re.IGNORECASE,
)
TOKEN_PREFIX = "ul_"


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret-named keys and token-shaped strings replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if _SECRET_NAME.search(str(k)) else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and value.startswith(TOKEN_PREFIX) and len(value) > 20:
        return REDACTED
    return value


def _canonical(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), default=str).encode()


def event_hash(event: dict[str, Any], prev_hash: str) -> str:
    fields = {k: event[k] for k in _HASHED}
    return hashlib.sha256(_canonical(fields) + prev_hash.encode()).hexdigest()


_HASHED = (
    "org_id",
    "seq",
    "ts",
    "actor_kind",
    "actor_id",
    "syscall",
    "outcome",
    "error_code",
    "detail",
    "trace_id",
)


_HEAD = select(schema.audit_heads.c.seq, schema.audit_heads.c.hash).where(
    schema.audit_heads.c.org_id == bindparam("org")
)
_HEAD_FOR_UPDATE = _HEAD.with_for_update()
_INSERT_EVENT = schema.audit_events.insert()
_INSERT_HEAD = schema.audit_heads.insert()
_MOVE_HEAD = (
    schema.audit_heads.update()
    .where(schema.audit_heads.c.org_id == bindparam("org"))
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)  # statements built once: an append runs on every mutating call


def append(conn: Connection, *, is_sqlite: bool, **event: Any) -> dict[str, Any]:
    """Append one event to its org's chain inside the caller's write transaction
    (synchronous: run it with ``Database.run_write`` or ``AsyncConnection.run_sync``)."""
    event["detail"] = redact(event.get("detail") or {})
    org_id = event["org_id"]
    head_q = _HEAD if is_sqlite else _HEAD_FOR_UPDATE
    head = conn.execute(head_q, {"org": org_id}).first()
    if head is None and not is_sqlite:
        # The org's first event: concurrent first appends must not both start the chain.
        # Create the head (seq 0) if absent, then lock it like any later append does.
        try:
            with conn.begin_nested():
                conn.execute(_INSERT_HEAD, {"org_id": org_id, "seq": 0, "hash": GENESIS})
        except IntegrityError:
            pass  # a concurrent first append created it
        head = conn.execute(head_q, {"org": org_id}).first()
    seq, prev = (1, GENESIS) if head is None else (head.seq + 1, head.hash)
    event["seq"] = seq
    digest = event_hash(event, prev)
    conn.execute(_INSERT_EVENT, {**event, "prev_hash": prev, "hash": digest})
    if head is None:
        conn.execute(_INSERT_HEAD, {"org_id": org_id, "seq": seq, "hash": digest})
    else:
        conn.execute(_MOVE_HEAD, {"org": org_id, "new_seq": seq, "new_hash": digest})
    return {**event, "prev_hash": prev, "hash": digest}


async def record(
    db: Database, *, effects: Sequence[Callable[[Connection], Any]] = (), **event: Any
) -> dict[str, Any]:
    """Append one event in a transaction of its own, durable when this returns.

    ``effects`` are written first in the same transaction: what the event records and
    the event itself are committed together or not at all."""
    is_sqlite = db.is_sqlite

    def transaction(conn: Connection) -> dict[str, Any]:
        for work in effects:
            work(conn)
        return append(conn, is_sqlite=is_sqlite, **event)

    return await db.run_write(transaction)


async def verify(conn: AsyncConnection, org_id: str) -> dict[str, Any]:
    """Walk one org's chain; return ``{"ok", "events", "problems": [...]}``."""
    t = schema.audit_events
    rows = (await conn.execute(select(t).where(t.c.org_id == org_id).order_by(t.c.seq))).all()
    head = (
        await conn.execute(select(schema.audit_heads).where(schema.audit_heads.c.org_id == org_id))
    ).first()
    problems: list[dict[str, Any]] = []
    prev, expected_seq = GENESIS, 1
    for row in rows:
        event = dict(row._mapping)
        if event["seq"] != expected_seq:
            problems.append(
                {
                    "seq": expected_seq,
                    "problem": f"missing events {expected_seq}..{event['seq'] - 1}",
                }
            )
        if event["prev_hash"] != prev:
            problems.append({"seq": event["seq"], "problem": "link broken (removed or reordered)"})
        if event_hash(event, event["prev_hash"]) != event["hash"]:
            problems.append({"seq": event["seq"], "problem": "content altered"})
        prev, expected_seq = event["hash"], event["seq"] + 1
    if head is not None and (head.seq != expected_seq - 1 or head.hash != prev):
        problems.append({"seq": head.seq, "problem": "chain truncated (events removed at the end)"})
    if head is None and rows:
        problems.append({"seq": 0, "problem": "chain head missing"})
    return {"ok": not problems, "events": len(rows), "problems": problems}
