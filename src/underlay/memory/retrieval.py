"""Hybrid ranking: how the memory layer orders what its indexes found.

Pure functions over ranked candidate lists, so every step is testable on its own and the
figures in docs/benchmarks.md can be traced to a line here. The steps, in order, each
measured on LoCoMo (docs/memory.md has the table):

1. **Rank fusion** of the dense (cosine) and lexical (BM25) lists: reciprocal ranks with
   ``k = 10`` (a sharper head than the customary 60 helps at top-10).
2. **Neighbour smoothing**: a turn whose neighbours in the same conversation chunk also
   matched gains ``0.3`` of their scores: answers often sit next to the question's words.
3. **Entity boost**: a memory said by, or naming, an entity the query names scores twice.
4. **Chunk diversity**: each further pick from the same chunk counts ``0.9`` times less, so
   that the evidence of multi-hop questions, spread over sessions, gets room.
5. **Budgeted expansion**: the turn after each top result joins it as context while the
   returned text stays within a token budget.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from underlay.memory.interface import Row

RRF_K = 10
NEIGHBOUR_WEIGHT = 0.3
ENTITY_BOOST = 2.0
CHUNK_DECAY = 0.9

STOPWORDS = frozenset(
    "a an the is was were are be been being did do does doing what when where who whom "
    "which why how of in on at to for with and or by from as that this these those it its "
    "his her hers their theirs they them he him she i you we my your our me us has have "
    "had would could should will can may might about into than then there here not no "
    "any some so if up out over just also very much many more most such only own same too "
    "s t don't didn't".split()
)
_WORDS = re.compile(r"[\w']+")
_CAPITALISED = re.compile(r"\b[A-Z][a-zA-Z'-]+")


def query_words(query: str) -> list[str]:
    """The words a full-text search looks for: lower case, no stop words, no repeats."""
    seen: list[str] = []
    for w in _WORDS.findall(query.lower()):
        w = w.strip("'").removesuffix("'s")
        if w and w not in STOPWORDS and w not in seen:
            seen.append(w)
    return seen


def query_entities(query: str) -> set[str]:
    """Names in the query (capitalised words that are not question or stop words)."""
    return {
        w.removesuffix("'s").lower()
        for w in _CAPITALISED.findall(query)
        if w.lower() not in STOPWORDS
    }


def fuse(rankings: Iterable[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion: ``sum(1 / (k + rank))`` over the lists a row is in."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, rowid in enumerate(ranking):
            scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (k + rank + 1)
    return scores


@dataclass(frozen=True)
class Neighbours:
    """Which rows sit next to which within their chunk (same add call, adjacent turns)."""

    before: dict[int, int]
    after: dict[int, int]

    @classmethod
    def of(cls, rows: Iterable[Row]) -> Neighbours:
        by_chunk: dict[str, list[Row]] = {}
        for r in rows:
            if r.chunk:
                by_chunk.setdefault(r.chunk, []).append(r)
        before: dict[int, int] = {}
        after: dict[int, int] = {}
        for members in by_chunk.values():
            members.sort(key=lambda r: (r.seq, r.rowid))
            for a, b in itertools.pairwise(members):
                if b.seq == a.seq + 1:  # adjacent turns, not just the nearest ones known
                    after[a.rowid], before[b.rowid] = b.rowid, a.rowid
        return cls(before, after)


def rerank(
    scores: dict[int, float],
    rows: dict[int, Row],
    near: Neighbours,
    entities: set[str],
    limit: int,
) -> list[tuple[int, float]]:
    """Steps 2-4: smoothed, boosted, diversified; the best ``limit`` (row id, score)."""
    smoothed: dict[int, float] = {}
    for rowid, score in scores.items():
        if rowid not in rows:
            continue
        for other in (near.before.get(rowid), near.after.get(rowid)):
            if other is not None:
                score += NEIGHBOUR_WEIGHT * scores.get(other, 0.0)
        row = rows[rowid]
        names = {row.actor.lower(), *(e.lower() for e in row.entities)}
        if entities & names:
            score *= ENTITY_BOOST
        smoothed[rowid] = score
    pool = sorted(smoothed, key=smoothed.__getitem__, reverse=True)[: max(limit * 6, 60)]
    picked: list[tuple[int, float]] = []
    per_chunk: dict[str, int] = {}
    while pool and len(picked) < limit:

        def discounted(rowid: int) -> float:
            return smoothed[rowid] * CHUNK_DECAY ** per_chunk.get(rows[rowid].chunk, 0)

        best = max(pool, key=discounted)
        pool.remove(best)
        picked.append((best, discounted(best)))
        if chunk := rows[best].chunk:
            per_chunk[chunk] = per_chunk.get(chunk, 0) + 1
    return picked


def expand(
    picked: Sequence[int], rows: dict[int, Row], near: Neighbours, budget: int
) -> dict[int, list[int]]:
    """Step 5: for each picked row, the following turn, while the tokens fit ``budget``."""
    used = sum(rows[r].tokens for r in picked)
    shown = set(picked)
    context: dict[int, list[int]] = {r: [] for r in picked}
    for rowid in picked:
        nxt = near.after.get(rowid)
        if nxt is None or nxt in shown or nxt not in rows:
            continue
        if used + rows[nxt].tokens > budget:
            continue
        context[rowid].append(nxt)
        shown.add(nxt)
        used += rows[nxt].tokens
    return context
