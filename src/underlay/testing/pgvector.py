"""A throwaway PostgreSQL with pgvector for tests, from the ``pgserver`` package.

Debian's PostgreSQL has no pgvector package; ``pgserver`` ships PostgreSQL 16 with
pgvector 0.6 and starts it in about a second, also as root (it then runs the server as a
``pgserver`` system user). The first call of any function here starts one server per
process in a new temporary directory; it listens on a unix socket in that directory only
(no TCP port). ``fresh_schema`` gives each test its own schema (in one shared database
with pgvector enabled; a few milliseconds), ``fresh_database`` its own database. The
server is a throwaway and runs without ``fsync``: no test database has to outlive a crash.

Cleanup: the server is stopped and its directory removed at interpreter exit (``atexit``).
A process that died without running its exit handlers (SIGKILL, a timeout) leaves a
directory named after its pid behind; the next start stops the server still running
there, if any, and removes the directory.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PREFIX = "underlay-pgvector-"

_lock = threading.RLock()
_server: Any = None
_root: Path | None = None
_counter = itertools.count()
_shared: str | None = None  # the database fresh_schema's schemas live in


def _pgserver() -> Any:
    try:
        with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR when run as root
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "the PostgreSQL memory tests need the pgserver package (PostgreSQL with "
            "pgvector): pip install pgserver, or pip install -e '.[dev]'"
        ) from exc
    return pgserver


def _reap_stale() -> None:
    """Stop the servers and remove the directories of test processes that are gone."""
    import psutil

    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int(path.name[len(PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if owner == os.getpid() or psutil.pid_exists(owner):
            continue
        pidfile = path / "data" / "postmaster.pid"
        try:
            postmaster = psutil.Process(int(pidfile.read_text().split("\n", 1)[0]))
            if str(path / "data") in " ".join(postmaster.cmdline()):
                postmaster.terminate()
                try:
                    postmaster.wait(5)
                except psutil.TimeoutExpired:
                    postmaster.kill()
        except (OSError, ValueError, psutil.Error):
            pass
        shutil.rmtree(path, ignore_errors=True)


def _start() -> Any:
    global _server, _root
    pgserver = _pgserver()
    _reap_stale()
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    _root = root
    atexit.register(stop)
    _server = pgserver.get_server(root / "data", cleanup_mode="delete")
    with psycopg.connect(_server.get_uri(), autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    return _server


def stop() -> None:
    """Stop the server (if this process started one) and remove its directory."""
    global _server, _root, _shared
    with _lock:
        server, root, _server, _root, _shared = _server, _root, None, None, None
    if server is not None:
        try:
            server.cleanup()
        finally:
            atexit.unregister(server._cleanup)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


def _running() -> Any:
    with _lock:
        return _server if _server is not None else _start()


def server_url() -> str:
    """The URL of the server's ``postgres`` database (starting the server if need be)."""
    return str(_running().get_uri())


def _execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def fresh_database() -> str:
    """The URL of a new, empty database on the test server (pgvector not yet enabled)."""
    server = _running()
    name = f"ul_mem_{next(_counter)}"
    _execute(server.get_uri(), f'CREATE DATABASE "{name}"')
    return str(server.get_uri(database=name))


def drop_database(url: str) -> None:
    """Drop a database ``fresh_database`` made (closing its connections)."""
    name = conninfo_to_dict(url)["dbname"]
    _execute(server_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_schema() -> str:
    """A connection string whose tables land in a new, empty schema (cheaper than a
    database: no copy of a template). The schemas share one database where pgvector is
    enabled (in ``public``, which stays on the search path for its ``vector`` type)."""
    global _shared
    server = _running()
    with _lock:
        if _shared is None:
            _shared = fresh_database()
            _execute(_shared, "CREATE EXTENSION IF NOT EXISTS vector")
    name = f"ul_mem_{next(_counter)}"
    _execute(_shared, f'CREATE SCHEMA "{name}"')
    return make_conninfo(
        server.get_uri(database=conninfo_to_dict(_shared)["dbname"]),
        options=f"-c search_path={name},public",
    )


def drop_schema(conninfo: str) -> None:
    """Drop a schema ``fresh_schema`` made, with everything in it."""
    options = str(conninfo_to_dict(conninfo)["options"])
    name = options.split("search_path=", 1)[1].split(",", 1)[0]
    _execute(conninfo, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
