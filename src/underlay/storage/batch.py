"""Group commit: concurrent small writes of one kind share one transaction.

``GroupCommit(db, work)``: callers ``await group.submit(item)``; while one transaction
is being written, later items wait and then go together in the next one. ``work(conn,
items=[...])`` returns one outcome per item — a value, or an exception raised to that caller
alone (a stale fencing token fails its own completion, not the batch's). An exception
out of ``work`` itself (the database is away) fails every item of that batch: none of
them was committed. Every caller's write is durable before its ``submit`` returns, as
with ``Database.run_write``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from underlay.storage.engine import Database

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


class GroupCommit(Generic[I, R]):
    def __init__(
        self,
        db: Database,
        work: Callable[..., list[R | BaseException]],  # work(conn, items=[...])
        max_items: int = 256,
    ) -> None:
        self._db = db
        self._work = work
        self._max = max_items
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._flushing = False

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                items = [item for item, _ in batch]
                try:
                    outcomes = await self._db.run_write(partial(self._work, items=items))
                except BaseException as exc:
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._flushing = False
