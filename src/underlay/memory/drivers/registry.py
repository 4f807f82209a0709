"""Memory stores and embedders by configured name.

``memory.driver``: ``sqlite`` (embedded, the default; sqlite-vec + FTS5 in one file) or
``postgres`` (pgvector + full-text search; ``memory.url``, default the database_url).
``memory.embedder``: ``minilm`` (all-MiniLM-L6-v2, run locally with numpy).
``memory.extractor``: ``rules`` (built in, deterministic) or ``llm`` (``memory.llm``).
"""

from __future__ import annotations

import asyncio
import os

from underlay import errors
from underlay.config import Config
from underlay.memory.embedding import Embedder, local_embedder
from underlay.memory.interface import MemoryStore
from underlay.memory.llm_extract import LLMExtractor, LLMSettings
from underlay.memory.service import MemoryService

STORES = ("sqlite", "postgres")
EMBEDDERS = ("minilm",)
EXTRACTORS = ("rules", "llm")


def _llm_extractor(config: Config) -> LLMExtractor | None:
    cfg = config.memory
    if cfg.extractor not in EXTRACTORS:
        raise errors.NotFound(
            f"no extractor {cfg.extractor!r} (known: {', '.join(EXTRACTORS)})",
            field="memory.extractor",
        )
    if cfg.extractor == "rules":
        return None
    if cfg.llm is None:
        raise errors.InvalidInput(
            "memory.extractor is llm: configure memory.llm (base_url, model)", field="memory.llm"
        )
    settings = LLMSettings(
        cfg.llm.base_url,
        cfg.llm.model,
        os.environ.get(cfg.llm.api_key_env),
        cfg.llm.timeout_seconds,
    )
    return LLMExtractor(settings)


async def open_memory(config: Config) -> MemoryService:
    """The memory layer of ``config``: a clear error for an unknown driver or embedder."""
    cfg = config.memory
    if cfg.embedder not in EMBEDDERS:
        raise errors.NotFound(
            f"no embedder {cfg.embedder!r} (known: {', '.join(EMBEDDERS)})", field="memory.embedder"
        )
    if cfg.driver not in STORES:
        raise errors.NotFound(
            f"no memory driver {cfg.driver!r} (known: {', '.join(STORES)})", field="memory.driver"
        )
    llm = _llm_extractor(config)
    embedder: Embedder = await asyncio.to_thread(local_embedder)
    store: MemoryStore
    if cfg.driver == "postgres":
        from underlay.memory.drivers.postgres import PostgresMemoryStore

        url = cfg.url or config.database_url
        if not url or url.startswith("sqlite"):
            raise errors.InvalidInput(
                "memory.driver is postgres: set memory.url (a PostgreSQL with pgvector)",
                field="memory.url",
            )
        store = await PostgresMemoryStore.open(url, embedder.dimensions)
    else:
        from underlay.memory.drivers.sqlite import SQLiteMemoryStore

        path = cfg.path or config.home / "memory.db"
        store = await SQLiteMemoryStore.open(path, embedder.dimensions)
    fallback = cfg.llm.fallback if cfg.llm else True
    return MemoryService(store, embedder, llm=llm, llm_fallback=fallback)
