"""The database: one async SQLAlchemy engine on SQLite (embedded) or PostgreSQL.

Guarantees:

* ``write()`` is one transaction that holds the write lock from its start (SQLite
  ``BEGIN IMMEDIATE``; PostgreSQL ``READ COMMITTED`` with row locks taken by the caller).
  When the block exits without error the transaction is committed, and with SQLite's
  ``synchronous=FULL`` in WAL mode the commit is on disk before ``write()`` returns.
* ``run_write(work)`` gives the same guarantees for a synchronous ``work(connection)``;
  on SQLite it runs in one hop to a dedicated thread (the audit trail's append uses it).
* ``read()`` sees committed data only and never takes the write lock.
* Lock contention beyond the busy timeout surfaces as ``errors.Busy`` (retryable);
  other driver errors are translated to ``errors.Unavailable`` at this boundary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from underlay import errors

T = TypeVar("T")


def async_url(url: str) -> str:
    """Map a plain URL to its async driver: sqlite → aiosqlite, postgresql → psycopg."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    for prefix in ("postgresql+psycopg:", "postgresql:", "postgres:"):
        if url.startswith(prefix):
            return "postgresql+psycopg:" + url[len(prefix) :]
    return url


class Database:
    """An engine plus the two transaction shapes every store uses."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 30_000, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
            if ":memory:" in self.url or self.url.endswith("://"):
                raise errors.InvalidInput("in-memory SQLite is not supported: give a file path")
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self._direct: Engine | None = None
        self._direct_thread: ThreadPoolExecutor | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine.sync_engine, busy_timeout_ms)
            # one thread and connection for small hot write transactions (``run_write``)
            self._direct = create_engine(
                self.url.replace("sqlite+aiosqlite", "sqlite", 1),
                connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
                poolclass=StaticPool,
            )
            _configure_sqlite(self._direct, busy_timeout_ms)
            self._direct_thread = ThreadPoolExecutor(1, thread_name_prefix="underlay-sqlite")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed (durably) on normal exit, rolled back on error."""
        async with _translated():
            async with self.engine.connect() as conn:
                await conn.execution_options(underlay_write=True)  # SQLite: BEGIN IMMEDIATE
                async with conn.begin():
                    yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only connection (autocommit-free; nothing is written)."""
        async with _translated():
            async with self.engine.connect() as conn:
                yield conn

    async def run_write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction, committed durably before this returns.

        On SQLite the whole transaction runs in one hop to a dedicated thread and
        connection (each statement through aiosqlite would be a hop of its own, which costs
        several times the commit itself); elsewhere it runs on the async connection.
        """
        if self._direct is None or self._direct_thread is None:
            async with self.write() as conn:
                return await conn.run_sync(work)
        engine = self._direct

        def transaction() -> T:
            with engine.connect() as conn:
                conn = conn.execution_options(underlay_write=True)
                with conn.begin():
                    return work(conn)

        async with _translated():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._direct_thread, transaction)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._direct is not None and self._direct_thread is not None:
            self._direct_thread.submit(self._direct.dispose).result()
            self._direct_thread.shutdown()


def _configure_sqlite(sync_engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so BEGIN IMMEDIATE is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        _enable_wal(cur, busy_timeout_ms / 1000)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front; readers take a WAL snapshot and no lock.
        write = conn.get_execution_options().get("underlay_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _enable_wal(cur: Any, timeout_s: float) -> None:
    """Switch to WAL. On a brand-new file two starters race for the exclusive lock this
    needs, and SQLite answers "locked" at once instead of waiting: retry within the busy
    timeout (only ever contended while a database is being created)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except errors.UnderlayError:
        raise
    except OperationalError as exc:
        text = str(exc.orig).lower()
        if "locked" in text or "busy" in text:
            raise errors.Busy("the database is busy; retry shortly") from exc
        raise errors.Unavailable(f"database unavailable: {type(exc.orig).__name__}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise errors.Unavailable("database connection lost") from exc
        raise


__all__ = ["Database", "NullPool", "async_url"]
