"""Peer memory systems that the LoCoMo benchmark (``bench/locomo.py``) compares with underlay.

A peer stores the turns of a conversation under a scope and, given a question, returns
the stored texts it finds most relevant, each tagged with the LoCoMo dialogue ids
(``dia_id``, e.g. ``"D3:12"``) it came from, so that retrieval can be scored against the
dataset's evidence ids.

Peers live in their own modules so that importing this package pulls in no optional
dependency: ``bench.peers.bm25`` needs ``rank-bm25``, ``bench.peers.mem0_peer`` needs
``mem0ai`` and ``faiss-cpu``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

__all__ = ["Hit", "Peer", "Turn", "as_turn"]


@dataclass(frozen=True)
class Turn:
    """One dialogue turn to store.

    ``text`` is what gets stored, already ``"Speaker: utterance"``; ``dia_id`` is LoCoMo's
    id for the turn; ``timestamp`` is when its session took place.
    """

    text: str
    dia_id: str
    timestamp: datetime


@dataclass(frozen=True)
class Hit:
    """One search result: the stored text, the dia_ids it came from, and the peer's score.

    ``score`` is only comparable within one peer (cosine-based for mem0, BM25 for BM25);
    a larger score ranks higher. Hits are returned best first.
    """

    text: str
    sources: list[str]
    score: float | None = field(default=None, compare=False)


@runtime_checkable
class Peer(Protocol):
    """What the benchmark needs of a memory system."""

    name: str

    def add_conversation(self, scope: str, turns: list[Turn]) -> None:
        """Store ``turns`` under ``scope``; may be called more than once per scope."""
        ...

    def search(self, scope: str, query: str, k: int) -> list[Hit]:
        """At most ``k`` hits from ``scope``, best first; ``[]`` for an unknown scope."""
        ...


def as_turn(turn: Turn | Mapping[str, Any]) -> Turn:
    """A :class:`Turn` as is, or one built from a mapping with keys text, dia_id, timestamp."""
    if isinstance(turn, Turn):
        return turn
    timestamp = turn["timestamp"]
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp)
    if not isinstance(timestamp, datetime):
        raise TypeError(f"turn timestamp must be a datetime, got {type(timestamp).__name__}")
    return Turn(text=str(turn["text"]), dia_id=str(turn["dia_id"]), timestamp=timestamp)
