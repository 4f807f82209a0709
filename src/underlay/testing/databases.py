"""Fresh, isolated databases for tests, on SQLite or PostgreSQL.

``UNDERLAY_TEST_DB=postgres`` selects PostgreSQL at ``UNDERLAY_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). A template database is migrated
once per process; each test gets its own copy (``CREATE DATABASE ... TEMPLATE``), so
tests never see each other's rows, and the copy is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import psycopg

from underlay.storage.engine import Database
from underlay.storage.migrations import migrate

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
_counter = itertools.count()
_template: str | None = None


def backend() -> str:
    return os.environ.get("UNDERLAY_TEST_DB", "sqlite")


def _admin_url() -> str:
    return os.environ.get("UNDERLAY_TEST_PG_URL", DEFAULT_PG)


def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def _ddl(sql: str) -> None:
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(sql.encode())


def _ensure_template() -> str:
    global _template
    if _template is None:
        name = f"ul_tpl_{os.getpid()}"
        _ddl(f'DROP DATABASE IF EXISTS "{name}"')
        _ddl(f'CREATE DATABASE "{name}"')

        async def run() -> None:
            db = Database(_with_db(_admin_url(), name))
            await migrate(db)
            await db.dispose()

        asyncio.run(run()) if not _loop_running() else _run_in_thread(run)
        _template = name
    return _template


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _run_in_thread(fn: object) -> None:
    import threading

    t = threading.Thread(target=lambda: asyncio.run(fn()))  # type: ignore[operator]
    t.start()
    t.join()


def fresh_database_url(tmp: Path) -> str:
    """A URL of an empty-but-migrated database no other test uses."""
    if backend() == "sqlite":
        return f"sqlite:///{tmp / 'underlay.db'}"
    if backend() != "postgres":
        raise ValueError(f"UNDERLAY_TEST_DB must be sqlite or postgres, not {backend()!r}")
    template = _ensure_template()
    name = f"ul_t_{os.getpid()}_{next(_counter)}"
    _ddl(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return _with_db(_admin_url(), name)


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        _ddl(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_template() -> None:
    global _template
    if _template is not None:
        _ddl(f'DROP DATABASE IF EXISTS "{_template}" WITH (FORCE)')
        _template = None
