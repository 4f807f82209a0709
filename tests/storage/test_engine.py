"""The engine: SQLite pragmas and write locking, error translation, transaction shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from underlay import errors
from underlay.config import Config
from underlay.storage import schema
from underlay.storage.engine import Database, async_url
from underlay.storage.migrations import migrate


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite database whatever the backend under test: these are SQLite's guarantees."""
    db = Database(f"sqlite:///{tmp_path / 'x.db'}", busy_timeout_ms=200)
    yield db
    await db.dispose()


@pytest.fixture
async def db(config: Config) -> AsyncIterator[Database]:
    """The backend under test, migrated."""
    d = Database(config.resolved_database_url)
    await migrate(d)
    yield d
    await d.dispose()


async def pragma(db: Database, name: str) -> object:
    async with db.read() as conn:
        return (await conn.execute(text(f"PRAGMA {name}"))).scalar()


async def test_sqlite_runs_in_wal_mode_with_full_sync(sqlite_db: Database) -> None:
    assert await pragma(sqlite_db, "journal_mode") == "wal"
    assert await pragma(sqlite_db, "synchronous") == 2  # FULL
    assert await pragma(sqlite_db, "busy_timeout") == 200
    assert await pragma(sqlite_db, "foreign_keys") == 1


async def test_pragmas_hold_on_every_pooled_connection(sqlite_db: Database) -> None:
    async def check() -> tuple[object, object]:
        async with sqlite_db.read() as conn:
            await asyncio.sleep(0.01)  # keep it checked out so the pool opens more
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            sync = (await conn.execute(text("PRAGMA synchronous"))).scalar()
            return mode, sync

    assert set(await asyncio.gather(*(check() for _ in range(5)))) == {("wal", 2)}


async def test_sqlite_writes_take_the_lock_at_begin_and_contention_is_busy(
    sqlite_db: Database,
) -> None:
    await migrate(sqlite_db)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with sqlite_db.write():  # BEGIN IMMEDIATE: the lock is taken here, no write yet
            entered.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await entered.wait()
    with pytest.raises(errors.Busy) as caught:
        async with sqlite_db.write() as conn:
            await conn.execute(select(1))
    assert caught.value.retryable and caught.value.code == "busy"
    async with sqlite_db.read() as conn:  # readers are never blocked by the writer
        await conn.execute(select(schema.orgs))
    release.set()
    await task


async def test_a_failed_write_rolls_back(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await conn.execute(
                schema.orgs.insert().values(id="o1", name="n", currency="USD", created_at=0)
            )
            raise RuntimeError("boom")
    async with db.read() as conn:
        assert (await conn.execute(select(schema.orgs))).all() == []


async def test_a_committed_write_is_visible_to_another_engine(db: Database, config: Config) -> None:
    async with db.write() as conn:
        await conn.execute(
            schema.orgs.insert().values(id="o1", name="n", currency="USD", created_at=0)
        )
    other = Database(config.resolved_database_url)
    try:
        async with other.read() as conn:
            assert (await conn.execute(select(schema.orgs.c.id))).scalars().all() == ["o1"]
    finally:
        await other.dispose()


async def test_an_unreachable_database_is_unavailable() -> None:
    db = Database("postgresql://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(errors.Unavailable) as caught:
            async with db.read() as conn:
                await conn.execute(select(1))
        assert caught.value.retryable
    finally:
        await db.dispose()


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_in_memory_sqlite_is_refused(url: str) -> None:
    with pytest.raises(errors.InvalidInput):
        Database(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://u@h/db", "mysql://u@h/db"),
    ],
)
def test_async_url(url: str, expected: str) -> None:
    assert async_url(url) == expected
