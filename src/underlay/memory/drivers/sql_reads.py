"""The reads both SQL drivers share, written once over each driver's placeholder.

A driver sets ``MARK`` (``?`` for SQLite, ``%s`` for psycopg) and implements
``_select_where(where, args)`` (its row query with that WHERE clause); this mixin gives
it ``versions``, ``current_by_key``, ``current_by_hash`` and ``scan`` with the promises
of ``MemoryStore``.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from underlay.memory.interface import SCOPE_COLUMNS, MemoryStore, Row


def scope_sql(scope: dict[str, str], mark: str, prefix: str = "") -> tuple[str, list[str]]:
    """`` AND user_id = ? ...`` for the scope columns given, and their values."""
    cols = [c for c in SCOPE_COLUMNS if c in scope]
    return "".join(f" AND {prefix}{c} = {mark}" for c in cols), [scope[c] for c in cols]


class SqlReads(MemoryStore):
    MARK: ClassVar[str]

    @abc.abstractmethod
    async def _select_where(self, where: str, args: list[Any]) -> list[Row]: ...

    async def versions(self, org: str, memory_id: str) -> list[Row]:
        m = self.MARK
        return await self._select_where(
            f"org = {m} AND id = {m} ORDER BY version", [org, memory_id]
        )

    async def current_by_key(self, org: str, scope: dict[str, str], key: str) -> Row | None:
        return await self._current(org, scope, "key", key)

    async def current_by_hash(self, org: str, scope: dict[str, str], digest: str) -> Row | None:
        return await self._current(org, scope, "hash", digest)

    async def _current(
        self, org: str, scope: dict[str, str], column: str, value: str
    ) -> Row | None:
        m = self.MARK
        where, args = scope_sql(scope, m)
        found = await self._select_where(
            f"org = {m} AND {column} = {m} AND valid_to IS NULL{where} ORDER BY rowid LIMIT 1",
            [org, value, *args],
        )
        return found[0] if found else None

    async def scan(
        self, org: str, scope: dict[str, str], *, after: int, limit: int, current: bool
    ) -> list[Row]:
        m = self.MARK
        where, args = scope_sql(scope, m)
        if current:
            where += " AND valid_to IS NULL"
        return await self._select_where(
            f"org = {m} AND rowid > {m}{where} ORDER BY rowid LIMIT {m}",
            [org, after, *args, limit],
        )
