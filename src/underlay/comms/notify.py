"""Wake-ups for long polls: a reader waits until something new may be there, or a bound.

Guarantees:

* ``wake(db, org_id)`` — called by a writer *after* its transaction committed — wakes at
  once every reader of that organisation waiting in this process on the same database
  (on any event loop: a waiter of another thread's loop is woken thread-safely).
* ``poll_until(db, org_id, fetch, wait_seconds)`` returns ``fetch()``'s first non-empty
  answer, or its empty answer once ``wait_seconds`` have passed. It re-reads on every
  wake-up and at least every ``POLL_SECONDS``, so writes of *other processes* (another
  ``underlay up`` on the same PostgreSQL) are seen within that interval too. A wake-up
  between two reads is never lost: the reader listens before it reads.
* ``rows(db, org_id, query, wait_seconds)``: the query's rows, long-polled that way when
  ``wait_seconds`` > 0 (capped at ``MAX_WAIT_SECONDS``).
* Nothing here is durable and nothing is required for correctness: a missed wake-up
  costs at most ``POLL_SECONDS`` of latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sized
from typing import Any, TypeVar

from sqlalchemy import Select

from underlay.storage.engine import Database

POLL_SECONDS = 0.25
"""How often a waiting reader re-reads the table, for writes of other processes."""
MAX_WAIT_SECONDS = 30.0
"""The longest a read waits for something new."""

T = TypeVar("T", bound=Sized)


class _Waiter:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def set(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.event.set()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.event.set)


class _Board:
    """The waiters of one database, by organisation."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[_Waiter]] = {}

    @contextlib.contextmanager
    def listening(self, org_id: str) -> Iterator[_Waiter]:
        waiter = _Waiter()
        self.waiters.setdefault(org_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            group = self.waiters.get(org_id)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self.waiters[org_id]


_boards: weakref.WeakKeyDictionary[Database, _Board] = weakref.WeakKeyDictionary()


def _board(db: Database) -> _Board:
    board = _boards.get(db)
    if board is None:
        board = _boards[db] = _Board()
    return board


def wake(db: Database, org_id: str) -> None:
    """Something was committed for ``org_id``: its waiting readers read again now."""
    for waiter in list(_board(db).waiters.get(org_id, ())):
        waiter.set()


async def poll_until(
    db: Database, org_id: str, fetch: Callable[[], Awaitable[T]], wait_seconds: float
) -> T:
    """``fetch()`` until it answers something non-empty or ``wait_seconds`` pass."""
    deadline = time.monotonic() + max(0.0, wait_seconds)
    with _board(db).listening(org_id) as waiter:
        while True:
            waiter.event.clear()  # cleared before the read: a wake-up after it counts
            found = await fetch()
            left = deadline - time.monotonic()
            if len(found) or left <= 0:
                return found
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see compute/pool.py
                async with asyncio.timeout(min(POLL_SECONDS, left)):
                    await waiter.event.wait()


async def rows(db: Database, org_id: str, query: Select[Any], wait_seconds: float) -> list[Any]:
    """``query``'s rows; when there are none, wait for some up to ``wait_seconds``."""

    async def fetch() -> list[Any]:
        async with db.read() as conn:
            return list((await conn.execute(query)).all())

    wait = min(wait_seconds, MAX_WAIT_SECONDS)
    if wait <= 0:
        return await fetch()
    return await poll_until(db, org_id, fetch, wait)
