"""The memory store contract: every driver keeps the promises of ``MemoryStore``.

One suite, run on each driver (``store`` is parametrised): the embedded SQLite store and
the PostgreSQL one (pgvector, on a throwaway ``pgserver`` instance, one schema per
test). Vectors have 4 dimensions so that cosine orderings can be written by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from underlay import errors
from underlay.memory.drivers import postgres
from underlay.memory.drivers.postgres import PostgresMemoryStore
from underlay.memory.drivers.sqlite import SQLiteMemoryStore
from underlay.memory.interface import MemoryStore, Plan, Row
from underlay.testing import pgvector

DIMS = 4
# Ids as long as real ones: sqlite-vec keeps text over 12 bytes apart from short text.
ORG, OTHER = "org_01JQ8ZJ4WD3T9X6M2N5B7C0A1E", "org_01JQ8ZJ4WD3T9X6M2N5B7C0A1F"
U1, U2 = "usr_01JQ8ZK0000000000000000001", "usr_01JQ8ZK0000000000000000002"

Opener = Callable[..., Awaitable[MemoryStore]]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the driver's store at this test's location (again and again: durability)."""
    if request.param == "sqlite":

        async def open_sqlite(dims: int = DIMS) -> MemoryStore:
            return await SQLiteMemoryStore.open(tmp_path / "m.db", dims)

        yield open_sqlite
        return
    url = pgvector.fresh_schema()

    async def open_postgres(dims: int = DIMS) -> MemoryStore:
        return await PostgresMemoryStore.open(url, dims)

    yield open_postgres
    pgvector.drop_schema(url)


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[MemoryStore]:
    s = await opener()
    yield s
    await s.close()


def vec(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


def mem(text: str, id: str = "", version: int = 1, org: str = ORG, **kw: Any) -> Row:
    return Row(
        id=id or f"mem_{abs(hash(text)) % 10**8}",
        version=version,
        org=org,
        text=text,
        hash=kw.pop("hash", f"h:{text}"),
        valid_from=kw.pop("valid_from", 1.0),
        created_at=kw.pop("created_at", 1.0),
        **kw,
    )


async def put(store: MemoryStore, *rows: Row, v: np.ndarray | None = None) -> list[int]:
    return await store.apply(Plan(inserts=[(r, vec(1, 0, 0, 0) if v is None else v) for r in rows]))


async def everything(store: MemoryStore, org: str = ORG) -> list[Row]:
    return await store.scan(org, {}, after=0, limit=1000, current=False)


# -- writes ----------------------------------------------------------------------------


async def test_apply_stores_every_field_and_returns_increasing_row_ids(
    store: MemoryStore,
) -> None:
    full = mem(
        'Zoë moved to Zürich — "finally"',
        id="mem_full",
        version=3,
        user_id="u1",
        agent_id="a1",
        run_id="r1",
        actor="Zoë",
        key="city",
        value="Zürich",
        metadata={"z": 1, "a": {"nested": [1, 2.5, None, True]}, "m": "ü"},
        sources=["msg_2", "msg_1"],
        entities=["Zoë", "Zürich"],
        chunk="chk_1",
        seq=7,
        tokens=12,
        valid_from=1_767_225_600.123456,
        created_at=1_767_225_601.5,
    )
    first = await put(store, full, mem("plain"))
    second = await put(store, mem("later"))
    assert len(first) == 2 and first[0] < first[1] < second[0]
    got = (await store.rows(ORG, first))[first[0]]
    assert got == dataclasses.replace(full, rowid=first[0])
    assert list(got.metadata) == ["z", "a", "m"]  # key order kept, as the caller wrote it
    assert await store.apply(Plan()) == []


async def test_apply_is_atomic_when_an_insert_breaks_uniqueness(store: MemoryStore) -> None:
    [old] = await put(store, mem("the first fact about apples", id="mem_1"))
    clash = Plan(
        inserts=[
            (mem("a second fact about bananas", id="mem_2"), vec(0, 1, 0, 0)),
            (mem("the first fact again", id="mem_1"), vec(0, 0, 1, 0)),  # (org, id, 1) exists
        ],
        ends=[(old, 5.0, "superseded")],
    )
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own error today
        await store.apply(clash)
    inside = Plan(  # the same id and version twice within one plan
        inserts=[(mem("cherries", id="mem_3"), vec(0, 1, 0, 0))] * 2,
        ends=[(old, 5.0, "deleted")],
    )
    with pytest.raises(Exception):  # noqa: B017
        await store.apply(inside)
    rows = await everything(store)
    assert [(r.rowid, r.id, r.valid_to, r.end_reason) for r in rows] == [(old, "mem_1", None, "")]
    assert await store.versions(ORG, "mem_2") == []
    for current in (True, False):
        assert await store.lexical(ORG, {}, ["bananas", "cherries"], 10, current=current) == []
        assert await store.dense(ORG, {}, vec(0, 1, 0, 0), 10, current=current) == [old]
    [new] = await put(store, mem("bananas after all", id="mem_2"))  # the store still works
    assert new > old
    assert await store.lexical(ORG, {}, ["bananas"], 10, current=True) == [new]


async def test_ends_close_a_version_and_hide_it_from_current_reads_only(
    store: MemoryStore,
) -> None:
    [v1] = await put(store, mem("Ana lives in Lyon", id="mem_a", key="city", value="Lyon"))
    [v2] = await store.apply(
        Plan(
            inserts=[
                (
                    mem(
                        "Ana lives in Berlin",
                        id="mem_a",
                        version=2,
                        key="city",
                        value="Berlin",
                        valid_from=9.0,
                    ),
                    vec(1, 0, 0, 0),
                )
            ],
            ends=[(v1, 9.0, "superseded")],
        )
    )
    rows = await store.rows(ORG, [v1, v2])
    assert (rows[v1].valid_to, rows[v1].end_reason) == (9.0, "superseded")
    assert (rows[v2].valid_to, rows[v2].end_reason) == (None, "")
    assert await store.dense(ORG, {}, vec(1, 0, 0, 0), 10, current=True) == [v2]
    assert sorted(await store.dense(ORG, {}, vec(1, 0, 0, 0), 10, current=False)) == [v1, v2]
    assert await store.lexical(ORG, {}, ["lives"], 10, current=True) == [v2]
    assert sorted(await store.lexical(ORG, {}, ["lives"], 10, current=False)) == [v1, v2]
    assert [r.rowid for r in await store.scan(ORG, {}, after=0, limit=10, current=True)] == [v2]
    assert (await store.current_by_key(ORG, {}, "city")).rowid == v2  # type: ignore[union-attr]
    assert await store.current_by_hash(ORG, {}, "h:Ana lives in Lyon") is None
    await store.apply(Plan(ends=[(v2, 12.0, "deleted")]))
    assert await store.dense(ORG, {}, vec(1, 0, 0, 0), 10, current=True) == []
    assert await store.lexical(ORG, {}, ["lives"], 10, current=True) == []
    assert await store.current_by_key(ORG, {}, "city") is None
    assert [r.end_reason for r in await store.versions(ORG, "mem_a")] == ["superseded", "deleted"]


async def test_a_version_inserted_already_ended_is_not_current(store: MemoryStore) -> None:
    [gone] = await put(store, mem("imported history", valid_to=4.0, end_reason="deleted"))
    assert await store.dense(ORG, {}, vec(1, 0, 0, 0), 10, current=True) == []
    assert await store.dense(ORG, {}, vec(1, 0, 0, 0), 10, current=False) == [gone]
    assert await store.lexical(ORG, {}, ["history"], 10, current=True) == []
    assert await store.lexical(ORG, {}, ["history"], 10, current=False) == [gone]
    assert await store.current_by_hash(ORG, {}, "h:imported history") is None


# -- retrieval -------------------------------------------------------------------------


async def test_dense_ranks_by_cosine_distance_not_length(store: MemoryStore) -> None:
    vectors = {
        "same direction, long": vec(10, 0, 0, 0),
        "slightly off": vec(1, 0.1, 0, 0),
        "diagonal": vec(1, 1, 0, 0),
        "orthogonal": vec(0, 0, 1, 0),
        "opposite": vec(-1, 0, 0, 0),
    }
    ids = {}
    for text in ["orthogonal", "diagonal", "opposite", "same direction, long", "slightly off"]:
        [ids[text]] = await put(store, mem(text), v=vectors[text])
    ranked = await store.dense(ORG, {}, vec(0.5, 0, 0, 0), 10, current=True)
    assert ranked == [ids[t] for t in vectors]
    assert await store.dense(ORG, {}, vec(0.5, 0, 0, 0), 2, current=True) == ranked[:2]
    assert (await store.dense(ORG, {}, vec(0, 0, 3, 0), 1, current=False)) == [ids["orthogonal"]]


async def test_lexical_matches_any_word_stemmed_best_first(store: MemoryStore) -> None:
    ids = {}
    for text in [
        "I was running late for the train",
        "She runs every morning",
        "Cats sleep all day",
        "apples and bananas in the kitchen",
        "apples on the table today",
        "We met again at the Café Müller",
        "mail bob@example.com about version 3.11",
    ]:
        [ids[text]] = await put(store, mem(text))

    async def find(*words: str) -> list[int]:
        return await store.lexical(ORG, {}, list(words), 10, current=True)

    assert sorted(await find("run")) == sorted(
        [ids["I was running late for the train"], ids["She runs every morning"]]
    )
    assert sorted(await find("running")) == sorted(await find("run"))
    assert await find("cat", "zebra") == [ids["Cats sleep all day"]]
    assert await find("zebra") == []
    assert await find() == []
    both = await find("apples", "bananas")
    assert both == [ids["apples and bananas in the kitchen"], ids["apples on the table today"]]
    assert await find("again") == [ids["We met again at the Café Müller"]]  # no stop words
    assert await find("cafe", "muller") == [ids["We met again at the Café Müller"]]  # accents
    mail = ids["mail bob@example.com about version 3.11"]
    assert await find("example") == await find("11") == [mail]  # punctuation splits words
    assert await find('o"brien', "it's", "?") == []  # quotes and marks are only text
    assert len(await store.lexical(ORG, {}, ["run"], 1, current=True)) == 1


async def test_lexical_ranks_by_bm25_rare_words_and_repeats_weigh_more(
    store: MemoryStore,
) -> None:
    common = await put(store, *(mem(f"apple pie number {i}") for i in range(6)))
    [rare] = await put(store, mem("zucchini bread number six"))
    [twice] = await put(store, mem("tea tea tea"))
    [once] = await put(store, mem("tea and cake"))
    ranked = await store.lexical(ORG, {}, ["apple", "zucchini"], 10, current=True)
    assert ranked[0] == rare and sorted(ranked[1:]) == common  # idf: the rare word wins
    assert await store.lexical(ORG, {}, ["tea"], 10, current=True) == [twice, once]


async def test_dense_and_lexical_run_concurrently(store: MemoryStore) -> None:
    [a] = await put(store, mem("the deploy key rotates on Monday"), v=vec(0, 1, 0, 0))
    [b] = await put(store, mem("lunch is at noon"), v=vec(1, 0, 0, 0))
    got = await asyncio.gather(
        *[store.dense(ORG, {}, vec(1, 0, 0, 0), 1, current=True) for _ in range(5)],
        *[store.lexical(ORG, {}, ["deploy"], 5, current=True) for _ in range(5)],
    )
    assert got == [[b]] * 5 + [[a]] * 5


# -- reads -----------------------------------------------------------------------------


async def test_every_read_is_confined_to_its_organisation(store: MemoryStore) -> None:
    def same(org: str) -> Row:
        return mem("shared words here", id="mem_x", org=org, key="k", hash="h", chunk="c", seq=1)

    [mine] = await put(store, same(ORG))
    [theirs] = await put(store, same(OTHER))
    q = vec(1, 0, 0, 0)
    for org, own in ((ORG, mine), (OTHER, theirs)):
        for current in (True, False):
            assert await store.dense(org, {}, q, 10, current=current) == [own]
            assert await store.lexical(org, {}, ["shared"], 10, current=current) == [own]
            assert [
                r.rowid for r in await store.scan(org, {}, after=0, limit=10, current=current)
            ] == [own]
        assert list(await store.rows(org, [mine, theirs])) == [own]
        assert [r.rowid for r in await store.adjacent(org, [("c", 1)])] == [own]
        assert [r.rowid for r in await store.versions(org, "mem_x")] == [own]
        assert (await store.current_by_key(org, {}, "k")).rowid == own  # type: ignore[union-attr]
        assert (await store.current_by_hash(org, {}, "h")).rowid == own  # type: ignore[union-attr]
    assert await store.rows("org_none", [mine, theirs]) == {}
    assert await store.versions("org_none", "mem_x") == []
    assert await store.dense("org_none", {}, q, 10, current=False) == []
    assert await store.lexical("org_none", {}, ["shared"], 10, current=False) == []


async def test_reads_filter_by_the_scope_columns_given(store: MemoryStore) -> None:
    scopes: list[dict[str, Any]] = [
        {"user_id": U1, "agent_id": "a1", "run_id": "r1"},
        {"user_id": U1, "agent_id": "a2", "run_id": ""},
        {"user_id": U2, "agent_id": "a1", "run_id": "r1"},
        {"user_id": "", "agent_id": "a3", "run_id": ""},
    ]
    ids = []
    for i, sc in enumerate(scopes):
        [rowid] = await put(store, mem(f"scoped note {i}", key="topic", hash="same", **sc))
        ids.append(rowid)
    q = vec(1, 0, 0, 0)
    cases: list[tuple[dict[str, str], list[int]]] = [
        ({}, ids),
        ({"user_id": U1}, ids[:2]),
        ({"user_id": U1, "agent_id": "a2"}, [ids[1]]),
        ({"agent_id": "a1"}, [ids[0], ids[2]]),
        ({"run_id": "r1"}, [ids[0], ids[2]]),
        ({"user_id": U2, "agent_id": "a1", "run_id": "r1"}, [ids[2]]),
        ({"user_id": "", "agent_id": "a3"}, [ids[3]]),
        ({"user_id": "u3"}, []),
        ({"user_id": U2, "agent_id": "a2"}, []),
    ]
    for scope, want in cases:
        assert sorted(await store.dense(ORG, scope, q, 10, current=True)) == want, scope
        assert sorted(await store.lexical(ORG, scope, ["note"], 10, current=True)) == want, scope
        scanned = await store.scan(ORG, scope, after=0, limit=10, current=True)
        assert [r.rowid for r in scanned] == want, scope
        by_key = await store.current_by_key(ORG, scope, "topic")
        by_hash = await store.current_by_hash(ORG, scope, "same")
        allowed: list[int | None] = [*want] or [None]
        assert (by_key.rowid if by_key else None) in allowed, scope
        assert (by_hash.rowid if by_hash else None) in allowed, scope


async def test_current_by_key_and_by_hash_find_the_true_version(store: MemoryStore) -> None:
    [lyon] = await put(
        store, mem("lives in Lyon", id="mem_c", key="city", value="Lyon", hash="d1", user_id="ana")
    )
    await put(store, mem("works as a nurse", key="job", hash="d2", user_id="ana"))
    found = await store.current_by_key(ORG, {"user_id": "ana"}, "city")
    assert found is not None and (found.rowid, found.value) == (lyon, "Lyon")
    assert await store.current_by_key(ORG, {"user_id": "bo"}, "city") is None
    assert await store.current_by_key(ORG, {}, "pet") is None
    found = await store.current_by_hash(ORG, {"user_id": "ana"}, "d1")
    assert found is not None and found.rowid == lyon
    assert await store.current_by_hash(ORG, {}, "d3") is None
    [berlin] = await store.apply(
        Plan(
            inserts=[
                (
                    mem(
                        "lives in Berlin",
                        id="mem_c",
                        version=2,
                        key="city",
                        value="Berlin",
                        hash="d3",
                        user_id="ana",
                    ),
                    vec(1, 0, 0, 0),
                )
            ],
            ends=[(lyon, 3.0, "superseded")],
        )
    )
    found = await store.current_by_key(ORG, {"user_id": "ana"}, "city")
    assert found is not None and found.rowid == berlin
    assert await store.current_by_hash(ORG, {}, "d1") is None
    assert (await store.current_by_hash(ORG, {}, "d3")).rowid == berlin  # type: ignore[union-attr]


async def test_versions_are_oldest_first(store: MemoryStore) -> None:
    for version in (3, 1, 2):  # written out of order, e.g. by an import
        await put(store, mem(f"take {version}", id="mem_v", version=version))
    await put(store, mem("someone else", id="mem_w"))
    assert [r.version for r in await store.versions(ORG, "mem_v")] == [1, 2, 3]
    assert [r.text for r in await store.versions(ORG, "mem_v")] == ["take 1", "take 2", "take 3"]
    assert await store.versions(ORG, "mem_unknown") == []


async def test_scan_pages_in_insertion_order_with_a_cursor(store: MemoryStore) -> None:
    written: list[int] = []
    for batch in (["a", "b", "c"], ["d"], ["e", "f", "g"]):
        written += await put(store, *(mem(f"note {t}", user_id="u") for t in batch))
    await put(store, mem("note elsewhere", user_id="v"))
    await store.apply(Plan(ends=[(written[1], 2.0, "deleted"), (written[4], 2.0, "deleted")]))

    async def pages(current: bool) -> list[list[int]]:
        out, after = [], 0
        while batch := await store.scan(
            ORG, {"user_id": "u"}, after=after, limit=3, current=current
        ):
            out.append([r.rowid for r in batch])
            after = batch[-1].rowid
        return out

    assert written == sorted(written)
    assert await pages(current=False) == [written[0:3], written[3:6], written[6:]]
    live = [r for i, r in enumerate(written) if i not in (1, 4)]
    assert await pages(current=True) == [live[0:3], live[3:]]
    assert await store.scan(ORG, {}, after=written[-1] + 10_000, limit=5, current=False) == []


async def test_adjacent_returns_the_rows_at_those_positions(store: MemoryStore) -> None:
    turns = await put(store, *(mem(f"turn {i}", chunk="chk_1", seq=i) for i in range(4)))
    [other] = await put(store, mem("turn zero elsewhere", chunk="chk_2", seq=0))
    await put(store, mem("same position, other org", org=OTHER, chunk="chk_1", seq=1))
    await store.apply(Plan(ends=[(turns[3], 5.0, "deleted")]))
    got = await store.adjacent(
        ORG, [("chk_1", 1), ("chk_1", 3), ("chk_2", 0), ("chk_1", 9), ("chk_3", 1)]
    )
    assert sorted(r.rowid for r in got) == [turns[1], turns[3], other]  # ended ones too
    assert {r.rowid: (r.chunk, r.seq) for r in got}[turns[1]] == ("chk_1", 1)
    assert await store.adjacent(ORG, []) == []
    assert await store.rows(ORG, []) == {}


# -- lifecycle -------------------------------------------------------------------------


async def test_close_is_idempotent_and_a_reopened_store_keeps_everything(
    opener: Opener,
) -> None:
    store = await opener()
    [a] = await put(
        store, mem("durable fact about tea", id="mem_t", key="drink", hash="dt"), v=vec(0, 0, 0, 1)
    )
    [b] = await store.apply(
        Plan(
            inserts=[
                (
                    mem("durable fact about coffee", id="mem_t", version=2, key="drink", hash="dc"),
                    vec(0, 0, 1, 0),
                )
            ],
            ends=[(a, 4.0, "superseded")],
        )
    )
    before = await everything(store)
    await store.close()
    await store.close()

    again = await opener()
    try:
        assert await everything(again) == before
        assert await again.dense(ORG, {}, vec(0, 0, 1, 0), 5, current=True) == [b]
        assert await again.lexical(ORG, {}, ["tea", "coffee"], 5, current=False) != []
        assert await again.lexical(ORG, {}, ["tea"], 5, current=True) == []
        assert (await again.current_by_key(ORG, {}, "drink")).rowid == b  # type: ignore[union-attr]
        [c] = await put(again, mem("after reopening"))
        assert c > b
    finally:
        await again.close()


async def test_reopening_with_other_dimensions_is_refused(opener: Opener) -> None:
    store = await opener()
    await store.close()
    with pytest.raises(errors.InvalidInput, match="4-dimensional"):
        await opener(dims=8)


async def test_postgres_enables_pgvector_in_a_new_database() -> None:
    url = pgvector.fresh_database()
    try:
        store = await PostgresMemoryStore.open(url, DIMS)
        [rowid] = await put(store, mem("first"))
        assert await store.dense(ORG, {}, vec(1, 0, 0, 0), 1, current=True) == [rowid]
        await store.close()
    finally:
        pgvector.drop_database(url)


async def test_postgres_without_pgvector_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(postgres, "EXTENSION", "no_such_vector_extension")
    url = pgvector.fresh_database()
    try:
        with pytest.raises(errors.Unavailable, match="pgserver"):
            await PostgresMemoryStore.open(url, DIMS)
    finally:
        pgvector.drop_database(url)


async def test_postgres_out_of_reach_is_unavailable(tmp_path: Path) -> None:
    url = f"postgresql://postgres@/memory?host={tmp_path}"  # no server listens there
    with pytest.raises(errors.Unavailable, match="cannot reach"):
        await PostgresMemoryStore.open(url, DIMS)


async def test_postgres_takes_the_kernels_sqlalchemy_url() -> None:
    url = pgvector.fresh_database()
    try:
        store = await PostgresMemoryStore.open(url.replace(":", "+psycopg:", 1), DIMS)
        assert await store.scan(ORG, {}, after=0, limit=1, current=False) == []
        await store.close()
    finally:
        pgvector.drop_database(url)
