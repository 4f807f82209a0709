"""The embedded memory store: SQLite with sqlite-vec (vectors) and FTS5 (full text).

One file (``memory.db`` under the home directory), WAL, ``synchronous=FULL`` so that a
committed write survives a power cut. The connections are apsw's (Python's own ``sqlite3``
is often built without extension loading), each on its own worker thread: every write
and most reads hop to the first, full-text search to the second (so it overlaps the
vector scan), and the event loop never blocks on disk.

Tables: ``memories`` (one row per version), ``memories_fts`` (FTS5, porter stemming,
external content), ``memory_vectors`` (each version's float32 embedding, sqlite-vec's
format), ``memory_bits`` (its sign bits, by organisation) and ``memory_entities`` (the
entity graph's edges: memory version -> entity name).

Dense search is two-pass: an in-memory sign-bit index (signindex.py, loaded per
organisation on first use) picks the scope's nearest rows by Hamming distance, then
sqlite-vec's ``vec_distance_cosine`` ranks them exactly. At 100,000 memories that is
~12 ms against 97 ms for a vec0 scan (docs/benchmarks.md; schema 1 used vec0 and is
migrated on open). Full-text search leaves out query words found in more than a fifth of
a large store's rows: BM25 over them costs the most and ranks the least.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import apsw
import numpy as np

from underlay import errors
from underlay.memory.drivers.signindex import SignIndex, sign_bits
from underlay.memory.drivers.sql_reads import SqlReads, scope_sql
from underlay.memory.interface import SCOPE_COLUMNS, Plan, Row

T = TypeVar("T")
SCHEMA_VERSION = 2
MMAP_BYTES = 1 << 30
PREFILTER = 2_000  # Hamming candidates re-scored exactly (at least; 20 per result wanted)
COMMON_SHARE = 0.2  # full text leaves out words found in more than this share of rows...
COMMON_FLOOR = 5_000  # ...and in more rows than this (small stores keep every word)

_COLUMNS = (
    "id version org user_id agent_id run_id text hash actor key value metadata sources "
    "entities chunk seq tokens valid_from valid_to created_at end_reason"
).split()
_JSON = {"metadata", "sources", "entities"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories(
  rowid INTEGER PRIMARY KEY,
  id TEXT NOT NULL, version INTEGER NOT NULL, org TEXT NOT NULL,
  user_id TEXT NOT NULL, agent_id TEXT NOT NULL, run_id TEXT NOT NULL,
  text TEXT NOT NULL, hash TEXT NOT NULL, actor TEXT NOT NULL,
  key TEXT NOT NULL, value TEXT NOT NULL,
  metadata TEXT NOT NULL, sources TEXT NOT NULL, entities TEXT NOT NULL,
  chunk TEXT NOT NULL, seq INTEGER NOT NULL, tokens INTEGER NOT NULL,
  valid_from REAL NOT NULL, valid_to REAL, created_at REAL NOT NULL,
  end_reason TEXT NOT NULL,
  UNIQUE(org, id, version)
);
CREATE INDEX IF NOT EXISTS memories_key ON memories(org, key) WHERE valid_to IS NULL;
CREATE INDEX IF NOT EXISTS memories_hash ON memories(org, hash) WHERE valid_to IS NULL;
CREATE INDEX IF NOT EXISTS memories_chunk ON memories(chunk, seq);
CREATE INDEX IF NOT EXISTS memories_scope ON memories(org, user_id, agent_id, run_id);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
  text, content='memories', content_rowid='rowid', tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS memory_vectors(rowid INTEGER PRIMARY KEY, embedding BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS memory_bits(
  org TEXT NOT NULL, rowid INTEGER NOT NULL, bits BLOB NOT NULL,
  PRIMARY KEY(org, rowid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memory_entities(
  rowid INTEGER NOT NULL, org TEXT NOT NULL, name TEXT NOT NULL,
  PRIMARY KEY(org, name, rowid)) WITHOUT ROWID;
"""


def _row(values: tuple[Any, ...]) -> Row:
    data = dict(zip(["rowid", *_COLUMNS], values, strict=True))
    for name in _JSON:
        data[name] = json.loads(data[name])
    return Row(**data)


class SQLiteMemoryStore(SqlReads):
    MARK = "?"

    def __init__(self, path: Path, dimensions: int) -> None:
        self._path = path
        self._dims = dimensions
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="underlay-memory")
        self._db: Any = None
        self._text: Any = None  # a second connection, for full-text search
        self._text_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="underlay-fts")
        self._select = f"SELECT rowid, {', '.join(_COLUMNS)} FROM memories"
        self._indexes: dict[str, SignIndex] = {}  # by organisation; the store thread's
        self._data_version = -1
        self._stems: Any = None  # FTS5's own porter tokenizer, to look words up
        self._term_docs: dict[str, int] = {}  # stem -> rows holding it (a cache)
        self._term_rows = 0  # the store's size when that cache was started

    @classmethod
    async def open(cls, path: Path, dimensions: int) -> SQLiteMemoryStore:
        store = cls(path, dimensions)
        await store._call(store._open)
        await store._call(store._open_text, text=True)
        return store

    def _connect(self) -> Any:
        import sqlite_vec

        db = apsw.Connection(str(self._path))
        db.enable_load_extension(True)
        db.load_extension(sqlite_vec.loadable_path())
        db.enable_load_extension(False)
        db.setbusytimeout(30_000)
        db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")  # vec0 scans: 158 -> 94 ms at 100,000
        return db

    def _open_text(self) -> None:
        self._text = self._connect()
        self._text.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_terms"
            " USING fts5vocab(main, memories_fts, 'row')"
        )
        self._stems = self._text.fts5_tokenizer("porter", ["unicode61"])

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        db.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON")
        with db:
            db.execute(_SCHEMA.replace("{dims}", str(self._dims)))
            found = db.execute("SELECT value FROM meta WHERE key='dimensions'").fetchone()
            if found is None:
                db.execute(
                    "INSERT INTO meta VALUES ('dimensions', ?), ('schema', ?)",
                    (str(self._dims), str(SCHEMA_VERSION)),
                )
            elif int(found[0]) != self._dims:
                raise errors.InvalidInput(
                    f"{self._path} holds {found[0]}-dimensional vectors; the configured "
                    f"embedder makes {self._dims}: export, then import into a new store"
                )
            _migrate(db)
        self._db = db

    async def _call(self, fn: Callable[..., T], *args: Any, text: bool = False) -> T:
        """Run ``fn`` on the store's thread (``text``: the full-text connection's)."""
        pool = self._text_pool if text else self._pool
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # -- writes ------------------------------------------------------------------------

    async def apply(self, plan: Plan) -> list[int]:
        return await self._call(self._apply, plan)

    def _apply(self, plan: Plan) -> list[int]:
        db, ids = self._db, []
        db.execute("BEGIN IMMEDIATE")
        try:
            for rowid, at, reason in plan.ends:
                db.execute(
                    "UPDATE memories SET valid_to = ?, end_reason = ? WHERE rowid = ?",
                    (at, reason, rowid),
                )
            for row, vector in plan.inserts:
                values = [
                    json.dumps(getattr(row, c)) if c in _JSON else getattr(row, c) for c in _COLUMNS
                ]
                db.execute(
                    f"INSERT INTO memories({', '.join(_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(_COLUMNS))})",
                    values,
                )
                rowid = db.last_insert_rowid()
                db.execute("INSERT INTO memories_fts(rowid, text) VALUES (?, ?)", (rowid, row.text))
                vector = np.asarray(vector, np.float32)
                db.execute("INSERT INTO memory_vectors VALUES (?, ?)", (rowid, vector.tobytes()))
                db.execute(
                    "INSERT INTO memory_bits VALUES (?, ?, ?)", (row.org, rowid, sign_bits(vector))
                )
                db.executemany(
                    "INSERT OR IGNORE INTO memory_entities VALUES (?, ?, ?)",
                    [(rowid, row.org, e.lower()) for e in row.entities],
                )
                ids.append(rowid)
            db.execute("COMMIT")
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, apsw.ConstraintError):
                raise errors.Conflict(f"memory store: {exc}") from None
            if isinstance(exc, apsw.BusyError):
                raise errors.Busy("memory store is busy; retry") from None
            raise
        self._index_applied(plan, ids)
        return ids

    def _index_applied(self, plan: Plan, rowids: list[int]) -> None:
        """Bring the loaded sign-bit indexes up to a committed plan."""
        for index in self._indexes.values():
            index.retire([rowid for rowid, _, _ in plan.ends])
        for (row, vector), rowid in zip(plan.inserts, rowids, strict=True):
            if (loaded := self._indexes.get(row.org)) is not None:
                scope = tuple(getattr(row, c) for c in SCOPE_COLUMNS)
                loaded.add([(rowid, scope, row.valid_to is None, sign_bits(vector))])

    def _index(self, org: str) -> SignIndex:
        """The organisation's sign-bit index: rebuilt after another connection's writes."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._indexes.clear()
            self._data_version = version
        index = self._indexes.get(org)
        if index is None:
            index = SignIndex(self._dims)
            cols = ", ".join(f"m.{c}" for c in SCOPE_COLUMNS)
            found = self._db.execute(
                f"SELECT b.rowid, {cols}, m.valid_to IS NULL, b.bits FROM memory_bits b"
                " JOIN memories m ON m.rowid = b.rowid WHERE b.org = ? ORDER BY b.rowid",
                (org,),
            )
            index.add([(r[0], tuple(r[1:-2]), bool(r[-2]), r[-1]) for r in found])
            self._indexes[org] = index
        return index

    # -- retrieval ---------------------------------------------------------------------

    async def dense(
        self, org: str, scope: dict[str, str], vector: np.ndarray, n: int, *, current: bool
    ) -> list[int]:
        query = np.asarray(vector, np.float32)
        return await self._call(self._dense, org, scope, query, n, current)

    def _dense(
        self, org: str, scope: dict[str, str], query: np.ndarray, n: int, current: bool
    ) -> list[int]:
        near = self._index(org).nearest(
            scope, sign_bits(query), max(PREFILTER, 20 * n), current=current
        )
        if not near:
            return []
        sql = (
            f"SELECT rowid FROM memory_vectors WHERE rowid IN ({','.join('?' * len(near))})"
            " ORDER BY vec_distance_cosine(embedding, ?), rowid LIMIT ?"
        )
        return [r[0] for r in self._db.execute(sql, [*near, query.tobytes(), n])]

    async def lexical(
        self, org: str, scope: dict[str, str], words: list[str], n: int, *, current: bool
    ) -> list[int]:
        words = await self._call(self._telling, words, text=True)
        if not words:
            return []
        where, args = scope_sql(scope, self.MARK, "m.")
        if current:
            where += " AND m.valid_to IS NULL"
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        sql = (
            "SELECT m.rowid FROM memories_fts JOIN memories m ON m.rowid = memories_fts.rowid"
            f" WHERE memories_fts MATCH ? AND m.org = ?{where}"
            " ORDER BY bm25(memories_fts) LIMIT ?"
        )
        # On the second connection and thread: full text runs while the vectors are scanned
        # (WAL readers see every committed write).
        return await self._call(self._text_ids, sql, [match, org, *args, n], text=True)

    def _telling(self, words: list[str]) -> list[str]:
        """``words`` less those in too many rows (BM25 over 40,000 matches: ~60 ms)."""
        rows = self._text.execute("SELECT coalesce(max(rowid), 0) FROM memories").fetchone()[0]
        limit = max(COMMON_FLOOR, COMMON_SHARE * rows)
        if rows <= COMMON_FLOOR:
            return words
        if not self._term_rows <= rows <= 1.1 * self._term_rows:  # counts drift as rows come
            self._term_docs, self._term_rows = {}, rows
        kept = []
        for word in words:
            stems = self._stems(
                word.encode(),
                apsw.FTS5_TOKENIZE_QUERY,
                None,
                include_offsets=False,
                include_colocated=False,
            )
            docs = [self._docs(stem) for stem in stems]
            if docs and min(docs) <= limit:  # a word of several tokens is a phrase
                kept.append(word)
        return kept

    def _docs(self, stem: str) -> int:
        found = self._term_docs.get(stem)
        if found is None:
            hit = self._text.execute("SELECT doc FROM fts_terms WHERE term = ?", (stem,)).fetchone()
            found = self._term_docs[stem] = hit[0] if hit else 0
        return found

    def _text_ids(self, sql: str, args: list[Any]) -> list[int]:
        return [r[0] for r in self._text.execute(sql, args)]

    def _ids(self, sql: str, args: list[Any]) -> list[int]:
        return [r[0] for r in self._db.execute(sql, args)]

    # -- reads -------------------------------------------------------------------------

    def _rows(self, where: str, args: list[Any]) -> list[Row]:
        return [_row(r) for r in self._db.execute(f"{self._select} WHERE {where}", args)]

    async def _select_where(self, where: str, args: list[Any]) -> list[Row]:
        return await self._call(self._rows, where, args)

    async def rows(self, org: str, rowids: list[int]) -> dict[int, Row]:
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        # "+org": without the "+" the planner walks the organisation's index (every row of
        # the org: 25 ms at 100,000) instead of looking the row ids up (5 ms).
        found = await self._call(self._rows, f"rowid IN ({marks}) AND +org = ?", [*rowids, org])
        return {r.rowid: r for r in found}

    async def adjacent(self, org: str, positions: list[tuple[str, int]]) -> list[Row]:
        if not positions:
            return []
        values = ",".join("(?, ?)" * 1 for _ in positions)
        sql = (
            f"WITH want(c, s) AS (VALUES {values}) SELECT m.rowid, "
            + ", ".join(f"m.{c}" for c in _COLUMNS)
            # CROSS JOIN keeps "want" the outer loop: one chunk-index look-up per position
            + " FROM want CROSS JOIN memories m ON m.chunk = want.c AND m.seq = want.s"
            " WHERE m.org = ? ORDER BY m.rowid"
        )
        args = [v for pos in positions for v in pos]
        return await self._call(lambda: [_row(r) for r in self._db.execute(sql, [*args, org])])

    async def close(self) -> None:
        if self._text is not None:
            text, self._text = self._text, None
            await self._call(text.close, text=True)
        if self._db is not None:
            db, self._db = self._db, None
            await self._call(db.close)
        self._pool.shutdown(wait=True)
        self._text_pool.shutdown(wait=True)


def _migrate(db: Any) -> None:
    """Schema 1 -> 2: vectors out of sqlite-vec's vec0 table into plain ones, sign bits added."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'memories_vec'").fetchone():
        return
    found = db.execute(
        "SELECT v.rowid, m.org, v.embedding FROM memories_vec v"
        " JOIN memories m ON m.rowid = v.rowid"
    ).fetchall()
    db.executemany(
        "INSERT OR REPLACE INTO memory_vectors VALUES (?, ?)", [(r, e) for r, _, e in found]
    )
    db.executemany(
        "INSERT OR REPLACE INTO memory_bits VALUES (?, ?, ?)",
        [(org, r, sign_bits(np.frombuffer(e, np.float32))) for r, org, e in found],
    )
    db.execute("DROP TABLE memories_vec")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
