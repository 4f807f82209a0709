"""What only the embedded store does: the sign-bit pass, its cache, pruning, migration."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import numpy as np
import pytest
import sqlite_vec

from underlay.memory.drivers import sqlite
from underlay.memory.drivers.sqlite import SQLiteMemoryStore
from underlay.memory.interface import Plan, Row

ORG = "org_01JQ8ZJ4WD3T9X6M2N5B7C0A1E"
DIMS = 32


def mem(text: str, **kw: object) -> Row:
    return Row(
        id=f"mem_{abs(hash(text)) % 10**10}",
        version=1,
        org=ORG,
        text=text,
        hash=f"h:{text}",
        valid_from=1.0,
        created_at=1.0,
        **kw,  # type: ignore[arg-type]
    )


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIMS)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def test_dense_ranks_exactly_among_the_hamming_candidates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "PREFILTER", 50)
    rng = np.random.default_rng(1)
    vectors = unit(rng, 400)
    store = await SQLiteMemoryStore.open(tmp_path / "m.db", DIMS)
    try:
        ids = await store.apply(
            Plan(inserts=[(mem(f"turn {i}", user_id="u1"), v) for i, v in enumerate(vectors)])
        )
        for probe in (0, 123, 399):
            query = vectors[probe] + 0.05 * unit(rng, 1)[0]
            got = await store.dense(ORG, {"user_id": "u1"}, query, 3, current=True)
            assert got[0] == ids[probe]
            cosines = vectors[[ids.index(r) for r in got]] @ query
            assert list(cosines) == sorted(cosines, reverse=True)  # exact order, best first
    finally:
        await store.close()


async def test_another_connections_writes_reach_a_loaded_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a, b = unit(rng, 2)
    first = await SQLiteMemoryStore.open(tmp_path / "m.db", DIMS)
    second = await SQLiteMemoryStore.open(tmp_path / "m.db", DIMS)
    try:
        [old] = await first.apply(Plan(inserts=[(mem("first"), a)]))
        assert await first.dense(ORG, {}, b, 5, current=True) == [old]  # index loaded
        [new] = await second.apply(Plan(inserts=[(mem("second"), b)]))
        await second.apply(Plan(ends=[(old, 2.0, "deleted")]))
        assert await first.dense(ORG, {}, b, 5, current=True) == [new]
        assert await first.dense(ORG, {}, b, 5, current=False) == [new, old]
    finally:
        await first.close()
        await second.close()


async def test_own_writes_update_a_loaded_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a, b = unit(rng, 2)
    store = await SQLiteMemoryStore.open(tmp_path / "m.db", DIMS)
    try:
        [old] = await store.apply(Plan(inserts=[(mem("first", user_id="u1"), a)]))
        assert await store.dense(ORG, {"user_id": "u1"}, a, 5, current=True) == [old]
        [new] = await store.apply(
            Plan(ends=[(old, 2.0, "updated")], inserts=[(mem("second", user_id="u1"), b)])
        )
        assert await store.dense(ORG, {"user_id": "u1"}, a, 5, current=True) == [new]
        assert await store.dense(ORG, {"user_id": "u2"}, a, 5, current=True) == []
    finally:
        await store.close()


async def test_words_in_too_many_rows_of_a_large_store_are_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(4)
    texts = [f"common filler {i}" for i in range(60)] + ["common rarest hikes", "rarest alone"]
    store = await SQLiteMemoryStore.open(tmp_path / "m.db", DIMS)
    try:
        ids = await store.apply(
            Plan(inserts=[(mem(t), v) for t, v in zip(texts, unit(rng, len(texts)), strict=True)])
        )
        everything = await store.lexical(ORG, {}, ["common", "rarest"], 100, current=True)
        assert len(everything) == 62  # a small store keeps every word
        monkeypatch.setattr(sqlite, "COMMON_FLOOR", 10)  # 61 of 62 rows hold "common"
        store._term_docs = {}
        assert (
            sorted(await store.lexical(ORG, {}, ["common", "rarest"], 100, current=True))
            == (ids[-2:])
        )
        assert await store.lexical(ORG, {}, ["common"], 100, current=True) == []
        assert await store.lexical(ORG, {}, ["hiking"], 100, current=True) == [ids[-2]]  # stems
    finally:
        await store.close()


def _schema_1_store(path: Path, vectors: np.ndarray) -> None:
    """A store as schema 1 wrote it: vectors in a vec0 table."""
    db = apsw.Connection(str(path))
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    cols = sqlite._COLUMNS
    schema = sqlite._SCHEMA.split("CREATE TABLE IF NOT EXISTS memory_vectors")[0]
    db.execute(schema.replace("{dims}", str(DIMS)))
    db.execute(
        "CREATE VIRTUAL TABLE memories_vec USING vec0(org TEXT PARTITION KEY, user_id TEXT,"
        f" agent_id TEXT, run_id TEXT, current INTEGER, embedding FLOAT[{DIMS}]"
        " distance_metric=cosine)"
    )
    db.execute("INSERT INTO meta VALUES ('dimensions', ?), ('schema', '1')", (str(DIMS),))
    for i, v in enumerate(vectors):
        row = mem(f"old turn {i}", user_id="u1")
        values = [
            json.dumps(getattr(row, c)) if c in sqlite._JSON else getattr(row, c) for c in cols
        ]
        db.execute(
            f"INSERT INTO memories({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            values,
        )
        rowid = db.last_insert_rowid()
        db.execute("INSERT INTO memories_fts(rowid, text) VALUES (?, ?)", (rowid, row.text))
        db.execute(
            "INSERT INTO memories_vec(rowid, org, user_id, agent_id, run_id, current, embedding)"
            " VALUES (?, ?, 'u1', '', '', 1, ?)",
            (rowid, ORG, v.tobytes()),
        )
    db.close()


async def test_a_schema_1_store_is_migrated_on_open(tmp_path: Path) -> None:
    vectors = unit(np.random.default_rng(5), 5)
    _schema_1_store(tmp_path / "m.db", vectors)
    store = await SQLiteMemoryStore.open(tmp_path / "m.db", DIMS)
    try:
        assert (await store.dense(ORG, {"user_id": "u1"}, vectors[3], 1, current=True)) == [4]
        assert await store.lexical(ORG, {}, ["turn"], 10, current=True)
    finally:
        await store.close()
    db = apsw.Connection(str(tmp_path / "m.db"))
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert "memories_vec" not in tables
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    assert db.execute("SELECT count(*) FROM memory_bits").fetchone() == (5,)
