"""Migrations: applied once, in order, idempotent, and safe when two starters race."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import inspect, select

from underlay.storage import schema
from underlay.storage.engine import Database
from underlay.storage.migrations import MIGRATIONS, migrate
from underlay.testing import databases


@pytest.fixture
def empty_url(tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all, on the backend under test."""
    if databases.backend() == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin = os.environ.get("UNDERLAY_TEST_PG_URL", databases.DEFAULT_PG)
    name = f"ul_empty_{os.getpid()}_{tmp_path.name[-20:]}".lower().replace("-", "_")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    yield url
    databases.drop_database(url)


@pytest.fixture
async def dbs(empty_url: str) -> AsyncIterator[list[Database]]:
    opened = [Database(empty_url) for _ in range(2)]
    yield opened
    for db in opened:
        await db.dispose()


async def tables(db: Database) -> set[str]:
    async with db.read() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def applied_versions(db: Database) -> list[int]:
    async with db.read() as conn:
        q = select(schema.schema_migrations.c.version).order_by(schema.schema_migrations.c.version)
        return list((await conn.execute(q)).scalars())


async def test_migrate_creates_every_table_once_and_is_idempotent(dbs: list[Database]) -> None:
    db = dbs[0]
    assert await tables(db) == set()
    assert await migrate(db) == [m.version for m in MIGRATIONS]
    assert await tables(db) == set(schema.metadata.tables)
    assert await migrate(db) == []
    assert await migrate(db) == []
    assert await applied_versions(db) == [m.version for m in MIGRATIONS]


async def test_two_concurrent_migrations_apply_once(dbs: list[Database]) -> None:
    results = await asyncio.gather(migrate(dbs[0]), migrate(dbs[1]))
    assert sorted(results, key=len) == [[], [m.version for m in MIGRATIONS]]
    assert await applied_versions(dbs[1]) == [m.version for m in MIGRATIONS]
    assert await tables(dbs[0]) == set(schema.metadata.tables)


async def test_migration_versions_are_unique_and_ordered() -> None:
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[0] == 1


async def test_task_attribution_of_transfers_migrates_an_existing_database(
    empty_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database from before migration 6 (transfers without ``task_id``/``attempt``)
    keeps its rows, gains the columns and their index, and then records attribution."""
    from dataclasses import replace

    from kernel.helpers import Probe, make_agent, rows, table_with
    from underlay.config import Config
    from underlay.kernel.kernel import Kernel
    from underlay.storage import migrations

    config = Config.load(home=tmp_path / "home", database_url=empty_url)
    table = table_with(Probe().group)
    before = [m for m in MIGRATIONS if m.version < 6]
    monkeypatch.setattr(migrations, "MIGRATIONS", before)
    k = await Kernel.open(config, table=table)
    agent = await make_agent(k, "old", ["test.work"], budget="1.00 USD")
    await k.close()
    db = Database(empty_url)
    async with db.write() as conn:  # back to the table as migration 1 first created it
        await conn.exec_driver_sql("DROP INDEX ix_transfers_task")
        await conn.exec_driver_sql("ALTER TABLE transfers DROP COLUMN task_id")
        await conn.exec_driver_sql("ALTER TABLE transfers DROP COLUMN attempt")
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    assert await migrate(db) == [m.version for m in MIGRATIONS if m.version >= 6]
    assert await migrate(db) == []
    async with db.read() as conn:
        columns = await conn.run_sync(lambda c: inspect(c).get_columns("transfers"))
        indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("transfers"))
    await db.dispose()
    assert {"task_id", "attempt"} <= {c["name"] for c in columns}
    assert {"ix_transfers_task": ["org_id", "task_id"]}.items() <= {
        i["name"]: i["column_names"] for i in indexes
    }.items()

    k = await Kernel.open(config, table=table)
    try:
        who = await k.authn.authenticate(agent.token)
        await k.invoke("test.work", {}, principal=replace(who, task_id="task_1", attempt=2))
        found = {(t["kind"], t["task_id"], t["attempt"]) for t in await rows(k, schema.transfers)}
    finally:
        await k.close()
    assert found == {("single", None, None), ("pending", "task_1", 2), ("post", "task_1", 2)}
