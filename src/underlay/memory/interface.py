"""The memory store driver interface.

A store keeps memory *versions*: each row is one version of one memory (``id``), true
in the world from ``valid_from`` until ``valid_to`` (null: still true). Superseding or
deleting a memory ends its current version; nothing is ever overwritten, so history and
``as_of`` queries read the same rows.

Guarantees every driver gives (checked by ``tests/memory/test_store_contract.py``):

- ``apply`` is atomic and durable: when it returns, every insert and every end of the
  plan is committed (and survives a crash); when it raises, none is.
- Every read is confined to one organisation and to the scope columns it is given.
- ``dense`` and ``lexical`` return row ids best first; with ``current`` they see only
  versions that are still true, otherwise every version (the caller filters by time).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCOPE_COLUMNS = ("user_id", "agent_id", "run_id")


@dataclass
class Row:
    """One stored version. ``rowid`` is the store's; ``id`` is the memory's."""

    id: str
    version: int
    org: str
    text: str
    hash: str
    valid_from: float
    created_at: float
    user_id: str = ""
    agent_id: str = ""
    run_id: str = ""
    actor: str = ""
    key: str = ""
    value: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    chunk: str = ""
    seq: int = 0
    tokens: int = 0
    valid_to: float | None = None
    end_reason: str = ""  # "superseded" | "deleted"
    rowid: int = 0


@dataclass
class Plan:
    """The writes of one call: new versions (with their vectors) and versions to end."""

    inserts: list[tuple[Row, np.ndarray]] = field(default_factory=list)
    ends: list[tuple[int, float, str]] = field(default_factory=list)  # rowid, at, reason


class MemoryStore(abc.ABC):
    """Where memory versions, their vectors, full-text index and entities live."""

    @abc.abstractmethod
    async def apply(self, plan: Plan) -> list[int]:
        """Commit ``plan`` atomically; return the new rows' ids in insert order."""

    @abc.abstractmethod
    async def dense(
        self, org: str, scope: dict[str, str], vector: np.ndarray, n: int, *, current: bool
    ) -> list[int]:
        """The ``n`` nearest versions by cosine distance."""

    @abc.abstractmethod
    async def lexical(
        self, org: str, scope: dict[str, str], words: list[str], n: int, *, current: bool
    ) -> list[int]:
        """The ``n`` best full-text matches (BM25) of any of ``words``."""

    @abc.abstractmethod
    async def rows(self, org: str, rowids: list[int]) -> dict[int, Row]:
        """The rows of ``rowids`` that belong to ``org``."""

    @abc.abstractmethod
    async def adjacent(self, org: str, positions: list[tuple[str, int]]) -> list[Row]:
        """The rows at these (chunk, seq) positions: turns added together, by order."""

    @abc.abstractmethod
    async def versions(self, org: str, memory_id: str) -> list[Row]:
        """Every version of one memory, oldest first (empty if unknown in ``org``)."""

    @abc.abstractmethod
    async def current_by_key(self, org: str, scope: dict[str, str], key: str) -> Row | None:
        """The version of a key-value fact that is true now, if any."""

    @abc.abstractmethod
    async def current_by_hash(self, org: str, scope: dict[str, str], digest: str) -> Row | None:
        """A current version with exactly this normalised text, if any."""

    @abc.abstractmethod
    async def scan(
        self, org: str, scope: dict[str, str], *, after: int, limit: int, current: bool
    ) -> list[Row]:
        """Versions in insertion order after row ``after`` (a cursor)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; idempotent."""
