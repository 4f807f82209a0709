"""A lexical baseline: Okapi BM25 over single turns, one index per scope.

Uses ``rank_bm25.BM25Okapi`` with its defaults (k1=1.5, b=0.75, epsilon=0.25). Text is
tokenised by lowercasing and taking regex ``\\w+`` runs, for turns and queries alike.
Only turns that share at least one token with the query are returned (BM25 gives the
others a score of zero, and ranking them would be arbitrary), so a search may return
fewer than ``k`` hits. Ties keep insertion order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from rank_bm25 import BM25Okapi

from . import Hit, Turn, as_turn

__all__ = ["BM25Peer", "tokenize"]

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lowercase, then the ``\\w+`` runs of ``text``."""
    return _TOKEN.findall(text.lower())


class _Index:
    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.tokens: list[list[str]] = []
        self.bm25: BM25Okapi | None = None  # rebuilt lazily after adds

    def add(self, turns: list[Turn]) -> None:
        self.turns.extend(turns)
        self.tokens.extend(tokenize(t.text) for t in turns)
        self.bm25 = None

    def ranked(self, query: list[str], k: int) -> list[tuple[int, float]]:
        if not self.turns:
            return []
        if self.bm25 is None:
            self.bm25 = BM25Okapi(self.tokens, k1=1.5, b=0.75)
        scores = np.asarray(self.bm25.get_scores(query), dtype=np.float64)
        wanted = set(query)
        matching = np.array(
            [not wanted.isdisjoint(freqs) for freqs in self.bm25.doc_freqs], dtype=bool
        )
        candidates = np.flatnonzero(matching)
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        return [(int(i), float(scores[i])) for i in order[:k]]


class BM25Peer:
    """Okapi BM25 over single turns; each hit's ``sources`` is the turn's own dia_id."""

    name = "bm25"

    def __init__(self) -> None:
        self._indexes: dict[str, _Index] = {}

    def add_conversation(self, scope: str, turns: list[Turn] | list[Mapping[str, Any]]) -> None:
        self._indexes.setdefault(scope, _Index()).add([as_turn(t) for t in turns])

    def search(self, scope: str, query: str, k: int) -> list[Hit]:
        index = self._indexes.get(scope)
        tokens = tokenize(query)
        if index is None or not tokens or k <= 0:
            return []
        return [
            Hit(text=index.turns[i].text, sources=[index.turns[i].dia_id], score=score)
            for i, score in index.ranked(tokens, k)
        ]
