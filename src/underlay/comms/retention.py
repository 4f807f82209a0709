"""Retention of the event log and the inboxes: what is older than the configured days goes,
in bounded batches.

``prune(db, cutoff)`` deletes

* events created before ``cutoff``;
* messages created before ``cutoff`` **that were read** — an unread message is kept,
  however old: nobody has seen it yet, and deleting it would lose it.

Guarantees: at most ``batch_size`` rows per transaction, oldest first (by id); safe to
run from several processes at once (every delete is by a re-checked condition; a second
pruner finds nothing); ids are never reused, so a reader's cursor stays valid — after a
prune, reading ``after`` an old cursor simply starts at the oldest event left.
``forever`` is the loop ``underlay up`` runs (``comms.retention_days``, default 30;
None or 0 keeps everything).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, select

from underlay.kernel.loops import repeat
from underlay.storage.engine import Database
from underlay.storage.schema import events, messages

if TYPE_CHECKING:
    from underlay.config import Config

log = logging.getLogger("underlay.comms.retention")
DAY = 86_400.0
BATCH_SIZE = 1000


@dataclass(frozen=True)
class Pruned:
    events: int = 0
    messages: int = 0


async def prune(db: Database, cutoff: float, *, batch_size: int = BATCH_SIZE) -> Pruned:
    """Delete events, and read messages, created before ``cutoff`` (see the module doc)."""
    old_events = events.c.created_at < cutoff
    old_read = (messages.c.created_at < cutoff) & messages.c.read_at.is_not(None)
    return Pruned(
        events=await _batches(db, events, old_events, batch_size),
        messages=await _batches(db, messages, old_read, batch_size),
    )


async def _batches(db: Database, table: Any, condition: Any, batch_size: int) -> int:
    total = 0
    while True:

        def work(conn: Connection) -> int:
            ids = list(
                conn.execute(
                    select(table.c.id).where(condition).order_by(table.c.id).limit(batch_size)
                ).scalars()
            )
            if ids:
                conn.execute(delete(table).where(table.c.id.in_(ids), condition))
            return len(ids)

        done = await db.run_write(work)
        total += done
        if done < batch_size:
            return total


async def forever(db: Database, config: Config, *, clock: Callable[[], float] = time.time) -> None:
    """Every ``comms.retention_every_seconds``, prune what is older than
    ``comms.retention_days``; a failed round is logged and the next runs as planned."""
    settings = config.comms
    days = settings.retention_days
    if not days:
        return

    async def step() -> None:
        done = await prune(db, clock() - days * DAY)
        if done.events or done.messages:
            log.info(
                "comms retention: deleted %d events and %d read messages older than %g "
                "days", done.events, done.messages, days,
            )  # fmt: skip

    await repeat(step, settings.retention_every_seconds, "comms retention round", log)
