"""mem0 (the ``mem0ai`` package, 2.2.1) as a benchmark peer, offline and on our embedder.

Setup, all local:

* vector store: mem0's FAISS store (``faiss-cpu``), cosine distance, in a temporary
  directory owned by the peer; the history SQLite DB lives there too;
* embeddings: mem0 is configured with its ``openai`` embedder provider (a dummy key, so
  constructing it touches nothing), then its ``embedding_model`` is replaced by
  :class:`Mem0Embedding`, a thin adapter that implements mem0's ``EmbeddingBase`` over
  the embedder handed to :class:`Mem0Peer` -- the same model underlay uses;
* LLM: mem0 requires one in its config; it gets an ``openai`` one with a dummy key, and
  the object is replaced by :class:`_ForbiddenLLM`, which raises if anything calls it.
  Every add runs with ``infer=False`` (the turn is stored verbatim, no LLM extraction),
  so nothing should;
* telemetry: ``MEM0_TELEMETRY=False`` is set before mem0 is imported (and forced off if
  mem0 was imported earlier), and ``MEM0_DIR`` (mem0's config dir, written at import)
  defaults to a directory under the system temp dir instead of ``~/.mem0``.

Each scope gets its own ``Memory`` instance (own FAISS collection and history DB). mem0's
FAISS store filters by ``user_id`` only after fetching ``2 * top_k`` nearest vectors
across the whole index, so one shared index over several conversations would silently
return fewer hits per scope; separate instances avoid that artifact. ``user_id=scope`` is
still passed on every add and search, as a mem0 user would.

What mem0 2.2.1's search does here: it embeds the query, fetches ``max(4k, 60)``
candidates from FAISS, and ranks them by score. Its hybrid extras are inactive: FAISS has
no keyword search (mem0 logs a warning saying BM25 scoring is disabled), and entity
boosts and lemmatisation need spaCy with ``en_core_web_sm``, which is not installed (mem0
falls back to plain text and no entities). If spaCy is installed without that model, mem0
would try to download it; the peer blocks that (see :func:`_forbid_spacy_download`).
Memories scoring below ``threshold`` (mem0's default 0.1, cosine) are dropped, so a
search may return fewer than ``k`` hits.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

# Both must be in place before the first import of mem0: telemetry is read, and mem0's
# config dir created and written, at import time.
os.environ["MEM0_TELEMETRY"] = "False"
os.environ.setdefault("MEM0_DIR", os.path.join(tempfile.gettempdir(), "underlay-bench-mem0"))

import mem0.memory.main as _mem0_main
import mem0.memory.telemetry as _mem0_telemetry
from mem0 import Memory
from mem0.configs.embeddings.base import BaseEmbedderConfig
from mem0.embeddings.base import EmbeddingBase

from . import Hit, Turn, as_turn

__all__ = ["Mem0Embedding", "Mem0Peer"]

_DUMMY_KEY = "unused-mem0-peer-runs-offline"


class TextEmbedder(Protocol):
    """What the peer needs of an embedder (underlay's ``local_embedder()`` fits)."""

    dimensions: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _telemetry_off() -> None:
    """Make sure mem0 sends nothing, even if it was imported before this module."""
    if _mem0_telemetry.MEM0_TELEMETRY or _mem0_main.MEM0_TELEMETRY:
        _mem0_telemetry.MEM0_TELEMETRY = False
        _mem0_main.MEM0_TELEMETRY = False
        _mem0_telemetry.client_telemetry.close()
        _mem0_telemetry._shutdown_oss_telemetry()


def _forbid_spacy_download() -> None:
    """mem0 downloads spaCy's ``en_core_web_sm`` on first use when spaCy lacks it; stop that.

    With spaCy absent (the usual case here) mem0 already falls back to no lemmatisation
    and no entities; this only matters if spaCy gets installed without the model.
    """
    try:
        import spacy
    except ImportError:
        return
    if not spacy.util.is_package("en_core_web_sm"):
        from mem0.utils import spacy_models

        spacy_models._load_failed_full = True
        spacy_models._load_failed_lemma = True


class Mem0Embedding(EmbeddingBase):
    """mem0's embedder interface over one of ours (``embed(list[str]) -> (n, d) array``).

    ``memory_action`` ("add", "search", "update") is ignored: the model embeds queries and
    documents alike. ``embed_batch`` makes one batched call instead of mem0's default loop;
    the vectors are the same either way (mem0 only uses it on its LLM-inference path and
    for entity boosts, both inactive here).
    """

    def __init__(self, embedder: TextEmbedder) -> None:
        super().__init__(BaseEmbedderConfig(embedding_dims=embedder.dimensions))
        self._embedder = embedder

    def embed(
        self, text: str, memory_action: Literal["add", "search", "update"] | None = None
    ) -> list[float]:
        vectors = self._embedder.embed([text])
        return [float(x) for x in vectors[0]]

    def embed_batch(
        self, texts: Sequence[str], memory_action: str | None = "add"
    ) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._embedder.embed(list(texts))
        return [[float(x) for x in row] for row in vectors]


class _ForbiddenLLM:
    """Stands in for mem0's LLM: with ``infer=False`` it must never be reached."""

    def generate_response(self, *args: Any, **kwargs: Any) -> str:
        raise RuntimeError("Mem0Peer stores turns with infer=False; mem0 must not call an LLM")


class Mem0Peer:
    """mem0 ``Memory`` with FAISS, one add per turn (``infer=False``), our embedder.

    ``add_seconds`` and ``search_seconds`` record the wall time of every ``Memory.add``
    and ``Memory.search`` call. Call :meth:`close` (or use ``with``) to remove the
    temporary directory early; it is removed at interpreter exit otherwise.
    """

    name = "mem0"

    def __init__(
        self,
        embedder: TextEmbedder,
        *,
        threshold: float = 0.1,
        distance_strategy: Literal["cosine", "euclidean", "inner_product"] = "cosine",
        root: str | Path | None = None,
    ) -> None:
        _telemetry_off()
        _forbid_spacy_download()
        self._embedding = Mem0Embedding(embedder)
        self._dimensions = int(embedder.dimensions)
        self._threshold = threshold
        self._distance = distance_strategy
        self._tmp = tempfile.TemporaryDirectory(prefix="mem0-peer-", dir=root)
        self._root = Path(self._tmp.name)
        self._memories: dict[str, Memory] = {}
        self.add_seconds: list[float] = []
        self.search_seconds: list[float] = []

    def _memory(self, scope: str) -> Memory:
        memory = self._memories.get(scope)
        if memory is not None:
            return memory
        home = self._root / f"scope-{len(self._memories):04d}"
        home.mkdir()
        config = {
            "vector_store": {
                "provider": "faiss",
                "config": {
                    "collection_name": "mem0",
                    "path": str(home / "faiss"),
                    "distance_strategy": self._distance,
                    "embedding_model_dims": self._dimensions,
                },
            },
            "embedder": {
                "provider": "openai",
                "config": {"api_key": _DUMMY_KEY, "embedding_dims": self._dimensions},
            },
            "llm": {"provider": "openai", "config": {"api_key": _DUMMY_KEY}},
            "history_db_path": str(home / "history.db"),
        }
        memory = Memory.from_config(config)
        memory.embedding_model = self._embedding
        memory.llm = _ForbiddenLLM()
        self._memories[scope] = memory
        return memory

    def add_conversation(self, scope: str, turns: list[Turn] | list[Mapping[str, Any]]) -> None:
        memory = self._memory(scope)
        for raw in turns:
            turn = as_turn(raw)
            start = time.perf_counter()
            memory.add(
                turn.text,
                user_id=scope,
                metadata={"dia_id": turn.dia_id, "timestamp": turn.timestamp.isoformat()},
                infer=False,
            )
            self.add_seconds.append(time.perf_counter() - start)

    def search(self, scope: str, query: str, k: int) -> list[Hit]:
        memory = self._memories.get(scope)
        if memory is None or k <= 0 or not query.strip():
            return []
        start = time.perf_counter()
        found = memory.search(query, top_k=k, filters={"user_id": scope}, threshold=self._threshold)
        self.search_seconds.append(time.perf_counter() - start)
        hits = []
        for item in found["results"]:
            dia_id = (item.get("metadata") or {}).get("dia_id")
            hits.append(
                Hit(
                    text=item["memory"],
                    sources=[dia_id] if dia_id else [],
                    score=item.get("score"),
                )
            )
        return hits

    def close(self) -> None:
        for memory in self._memories.values():
            memory.close()
        self._memories.clear()
        self._tmp.cleanup()

    def __enter__(self) -> Mem0Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
