"""The memory layer's domain logic: curation on add, hybrid retrieval on search.

Guarantees:

- Every write of one call (``add``, ``update``, ``delete``, ``delete_all``, ``import_``)
  is one atomic store transaction: a failure leaves nothing partly written.
- Nothing is overwritten: a contradicted or updated memory gets a new version and the old
  one's validity ends (``valid_to``); a deleted one's validity ends too. ``history`` and
  ``as_of`` read those versions.
- Every memory keeps the ids of the messages it came from (``sources``).
- Reads never cross organisations: ``org`` comes from the authenticated caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from datetime import UTC, datetime
from typing import Any

from underlay import errors
from underlay.memory import extract, retrieval
from underlay.memory.curation import Curator
from underlay.memory.embedding import Embedder
from underlay.memory.filters import matches
from underlay.memory.interface import MemoryStore, Plan, Row
from underlay.memory.llm_extract import LLMExtractor
from underlay.memory.models import (
    AddMemory,
    AddResult,
    ContextTurn,
    Filter,
    Memory,
    SearchMemory,
    SearchResult,
)
from underlay.types import new_id

CANDIDATES = 100
log = logging.getLogger("underlay.memory")


def to_time(value: datetime | None, default: float) -> float:
    if value is None:
        return default
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def from_time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def digest(text: str) -> str:
    """The identity of a text for de-duplication: case, spacing and end marks ignored."""
    norm = re.sub(r"[\s.!]+", " ", text.lower()).strip()
    return hashlib.sha256(norm.encode()).hexdigest()[:32]


def public_fields(row: Row) -> dict[str, Any]:
    """A version's fields as the API and the export format name them (empty -> None)."""
    return {
        "id": row.id,
        "memory": row.text,
        "version": row.version,
        "user_id": row.user_id or None,
        "agent_id": row.agent_id or None,
        "run_id": row.run_id or None,
        "actor": row.actor or None,
        "key": row.key or None,
        "value": row.value or None,
        "metadata": row.metadata,
        "sources": row.sources,
        "entities": row.entities,
        "valid_from": from_time(row.valid_from),
        "valid_to": from_time(row.valid_to),
        "created_at": from_time(row.created_at),
    }


def memory_model(row: Row, score: float | None = None) -> Memory:
    return Memory(**public_fields(row), score=score)


def context_turn(row: Row) -> ContextTurn:
    return ContextTurn(
        id=row.id,
        memory=row.text,
        actor=row.actor or None,
        sources=row.sources,
        valid_from=from_time(row.valid_from),
    )


def valid_at(row: Row, at: float) -> bool:
    return row.valid_from <= at and (row.valid_to is None or row.valid_to > at)


class MemoryService:
    def __init__(
        self,
        store: MemoryStore,
        embedder: Embedder,
        *,
        llm: LLMExtractor | None = None,
        llm_fallback: bool = True,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.llm = llm
        self.llm_fallback = llm_fallback
        # Decisions read the current versions, then write: one writer at a time, so two
        # adds of the same fact cannot both supersede the same version.
        self.writing = asyncio.Lock()

    async def embed(self, texts: list[str]) -> tuple[Any, list[int]]:
        """Vectors and token counts of ``texts``, computed off the event loop."""
        def work() -> tuple[Any, list[int]]:
            return self.embedder.embed(texts), self.embedder.count_tokens(texts)

        return await asyncio.to_thread(work)

    async def _facts(self, content: str, speaker: str | None, owner: str) -> list[extract.Fact]:
        """The configured extractor's facts; the built-in one if the LLM fails (and may)."""
        if self.llm is None:
            return extract.extract(content, speaker, owner)
        try:
            return await self.llm.extract(content, speaker, owner)
        except errors.Unavailable as exc:
            if not self.llm_fallback:
                raise
            log.warning("memory: %s; using the built-in extractor", exc.message)
            return extract.extract(content, speaker, owner)

    async def close(self) -> None:
        await self.store.close()
        if self.llm is not None:
            await self.llm.aclose()

    # -- add ---------------------------------------------------------------------------

    async def add(self, org: str, inp: AddMemory, now: float) -> AddResult:
        """Store messages (``infer=False``) or the facts they state, resolving conflicts."""
        scope = inp.columns()
        at = to_time(inp.timestamp, now)
        chunk = new_id("chk")
        units: list[tuple[int, extract.Fact, list[str], str]] = []
        for i, msg in enumerate(inp.message_list()):
            sources = [msg.id] if msg.id else []
            if inp.infer:
                owner = msg.name or inp.user_id or inp.agent_id or "user"
                facts = await self._facts(msg.content, msg.name, owner)
                units += [(i, f, sources, msg.name or "") for f in facts]
            else:
                text = f"{msg.name}: {msg.content}" if msg.name else msg.content
                fact = extract.Fact(text, entities=extract.entities(text, msg.name))
                units.append((i, fact, sources, msg.name or ""))
        if not units:
            return AddResult(results=[])
        vectors, tokens = await self.embed([u[1].text for u in units])
        async with self.writing:
            curator = Curator(self.store, org, scope, at)
            for n, (seq, fact, sources, actor) in enumerate(units):
                row = Row(
                    id=new_id("mem"),
                    version=1,
                    org=org,
                    text=fact.text,
                    hash=digest(fact.text),
                    valid_from=at,
                    created_at=now,
                    actor=actor,
                    key=fact.key or "",
                    value=fact.value or "",
                    metadata=dict(inp.metadata),
                    sources=sources,
                    entities=list(fact.entities),
                    chunk=chunk,
                    seq=seq,
                    tokens=tokens[n],
                    user_id=scope.get("user_id", ""),
                    agent_id=scope.get("agent_id", ""),
                    run_id=scope.get("run_id", ""),
                )
                if inp.infer:
                    await curator.decide(row, vectors[n], fact)
                else:
                    curator.keep(row, vectors[n])
            await self.store.apply(curator.plan)
        return AddResult(results=curator.ops)

    # -- search ------------------------------------------------------------------------

    async def search(self, org: str, inp: SearchMemory) -> SearchResult:
        """Hybrid retrieval (dense + BM25 + entities + neighbours), see ``retrieval``."""
        scope = inp.columns()
        current = inp.as_of is None
        n = CANDIDATES if current else CANDIDATES * 3

        async def nearest() -> list[int]:
            vectors, _ = await self.embed([inp.query])
            return await self.store.dense(org, scope, vectors[0], n, current=current)

        # The lexical and key-value lookups run on the store while the query embeds.
        dense, lexical, asked = await asyncio.gather(
            nearest(),
            self.store.lexical(org, scope, retrieval.query_words(inp.query), n, current=current),
            self._asked_facts(org, scope, inp),
        )
        rows = await self.store.rows(org, list({*dense, *lexical}))
        rows = self._visible(rows, inp.as_of, inp.filters)
        scores = retrieval.fuse([[r for r in ranked if r in rows] for ranked in (dense, lexical)])
        asked = self._visible(asked, inp.as_of, inp.filters)
        # Smoothing needs only the candidates' own adjacency: a neighbour that is not a
        # candidate scores nothing. Expansion then fetches the turns after the picks.
        near = retrieval.Neighbours.of(rows.values())
        picked = retrieval.rerank(
            scores, rows, near, retrieval.query_entities(inp.query), inp.limit
        )
        if asked:  # the key-value channel: the fact asked about, as true then, goes first
            rows |= asked
            best = max([1.0, *(score for _, score in picked)])
            picked = [(r, best) for r in asked] + [p for p in picked if p[0] not in asked]
            picked = picked[: inp.limit]
        everything = dict(rows)
        if inp.expand and picked:
            following = await self.store.adjacent(
                org, [(rows[p].chunk, rows[p].seq + 1) for p, _ in picked if rows[p].chunk]
            )
            everything |= self._visible({r.rowid: r for r in following}, inp.as_of, [])
            near = retrieval.Neighbours.of(everything.values())
        context = (
            retrieval.expand([p for p, _ in picked], everything, near, inp.max_tokens)
            if inp.expand
            else {}
        )
        results, tokens = [], 0
        for rowid, score in picked:
            memory = memory_model(rows[rowid], round(score, 6))
            memory.context = [context_turn(everything[c]) for c in context.get(rowid, [])]
            tokens += rows[rowid].tokens + sum(everything[c].tokens for c in context.get(rowid, []))
            results.append(memory)
        return SearchResult(results=results, tokens=tokens)

    async def _asked_facts(
        self, org: str, scope: dict[str, str], inp: SearchMemory
    ) -> dict[int, Row]:
        """Key-value facts the query asks about ("Where does Ana live?" -> ``ana/location``),
        in the order ``extract.asks_for`` ranks the attributes; the version true ``as_of``."""
        attributes = extract.asks_for(inp.query)
        if not attributes:
            return {}
        subjects = [*retrieval.query_entities(inp.query), *(v.lower() for v in scope.values())]
        found: dict[int, Row] = {}
        at = to_time(inp.as_of, 0.0) if inp.as_of else None
        for attribute in attributes:
            for subject in dict.fromkeys([*subjects, "user"]):
                current = await self.store.current_by_key(org, scope, f"{subject}/{attribute}")
                if current is None:
                    continue
                row: Row | None = current
                if at is not None:
                    versions = await self.store.versions(org, current.id)
                    row = next((v for v in versions if v.key and valid_at(v, at)), None)
                if row is not None:
                    found[row.rowid] = row
                    break
        return found

    @staticmethod
    def _visible(
        rows: dict[int, Row], as_of: datetime | None, filters: list[Filter]
    ) -> dict[int, Row]:
        at = to_time(as_of, 0.0) if as_of else None
        return {
            k: r
            for k, r in rows.items()
            if (r.valid_to is None if at is None else valid_at(r, at)) and matches(r, filters)
        }

    # -- the rest of the API -----------------------------------------------------------

    async def current(self, org: str, memory_id: str) -> Row:
        versions = await self.store.versions(org, memory_id)
        if not versions:
            raise errors.NotFound(f"no memory {memory_id}", field="memory_id")
        return versions[-1]

    async def update(
        self, org: str, memory_id: str, text: str, metadata: dict[str, Any] | None, now: float
    ) -> Memory:
        vectors, tokens = await self.embed([text])
        async with self.writing:
            return await self._update(org, memory_id, text, metadata, now, vectors, tokens)

    async def _update(
        self,
        org: str,
        memory_id: str,
        text: str,
        metadata: dict[str, Any] | None,
        now: float,
        vectors: Any,
        tokens: list[int],
    ) -> Memory:
        cur = await self.current(org, memory_id)
        if cur.valid_to is not None:
            raise errors.Conflict(f"memory {memory_id} was deleted", field="memory_id")
        row = Row(
            **{
                **cur.__dict__,
                "rowid": 0,
                "version": cur.version + 1,
                "text": text,
                "hash": digest(text),
                "valid_from": now,
                "created_at": now,
                "tokens": tokens[0],
                "key": "",
                "value": "",
                "metadata": cur.metadata if metadata is None else metadata,
                "entities": list(extract.entities(text, cur.actor or None)),
            }
        )
        await self.store.apply(
            Plan(inserts=[(row, vectors[0])], ends=[(cur.rowid, now, "superseded")])
        )
        return memory_model(row)

    async def delete(self, org: str, memory_id: str, now: float) -> Memory:
        async with self.writing:
            return await self._delete(org, memory_id, now)

    async def _delete(self, org: str, memory_id: str, now: float) -> Memory:
        cur = await self.current(org, memory_id)
        if cur.valid_to is not None:
            raise errors.Conflict(f"memory {memory_id} was already deleted", field="memory_id")
        await self.store.apply(Plan(ends=[(cur.rowid, now, "deleted")]))
        cur.valid_to, cur.end_reason = now, "deleted"
        return memory_model(cur)

    async def delete_all(self, org: str, scope: dict[str, str], now: float) -> int:
        async with self.writing:
            return await self._delete_all(org, scope, now)

    async def _delete_all(self, org: str, scope: dict[str, str], now: float) -> int:
        plan, after = Plan(), 0
        while batch := await self.store.scan(org, scope, after=after, limit=1000, current=True):
            plan.ends += [(r.rowid, now, "deleted") for r in batch]
            after = batch[-1].rowid
        await self.store.apply(plan)
        return len(plan.ends)
