"""Versioned, forward-only migrations.

Each migration is applied once, in order, inside one write transaction that also
records it in ``schema_migrations``; concurrent starters serialize (SQLite's write lock,
a PostgreSQL advisory lock), so two processes starting at once migrate exactly once.
A later layer adds a migration to ``MIGRATIONS``; it never edits an applied one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, inspect, select, text

from underlay.storage import schema
from underlay.storage.engine import Database


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _create(*tables: str) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        schema.metadata.create_all(conn, tables=[schema.metadata.tables[t] for t in tables])

    return apply


def _add_columns(table: str, *columns: str) -> Callable[[Connection], None]:
    """Add ``columns`` (nullable, as ``schema`` declares them) and the table's indexes
    that are missing. A database created after the columns were declared has them
    already (migration 1 creates tables from the current metadata): nothing to add."""

    def apply(conn: Connection) -> None:
        t = schema.metadata.tables[table]
        present = {c["name"] for c in inspect(conn).get_columns(table)}
        for name in columns:
            if name not in present:
                sql_type = t.c[name].type.compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}"))
        for index in t.indexes:
            index.create(conn, checkfirst=True)

    return apply


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "kernel, identity, billing, audit",
        _create(
            "orgs",
            "humans",
            "agents",
            "tokens",
            "accounts",
            "transfers",
            "audit_heads",
            "audit_events",
            "idempotency",
        ),
    ),
    Migration(2, "compute: sandboxes and snapshots", _create("sandboxes", "sandbox_snapshots")),
    Migration(
        3,
        "orchestration: tasks and workers",
        _create("tasks", "task_attempts", "task_queues", "workers"),
    ),
    Migration(4, "orchestration: the escalation inbox", _create("escalations")),
    Migration(5, "orchestration: fleets", _create("fleets", "fleet_members")),
    Migration(
        6,
        "billing: transfers attributed to a task attempt",
        _add_columns("transfers", "task_id", "attempt"),
    ),
    Migration(
        7,
        "orchestration: fleet members' heartbeats and progress",
        _add_columns("fleet_members", "run_started_at", "beat_at", "progress", "progress_at"),
    ),
    Migration(
        8,
        "coordination: repositories and the merge queue",
        _create("repositories", "merge_changes", "claims", "workspaces"),
    ),
    Migration(9, "comms: the event log and agents' mailboxes", _create("events", "messages")),
    Migration(10, "coordination: conflict predictions reported", _create("conflict_notices")),
    Migration(11, "tools: the credential vault", _create("vault_secrets", "vault_grants")),
    Migration(12, "compute: secrets a sandbox holds", _add_columns("sandboxes", "secret_names")),
]

_PG_LOCK_KEY = 0x756E646C  # "undl"


async def migrate(db: Database) -> list[int]:
    """Apply every pending migration; return the versions applied now."""
    async with db.write() as conn:
        if not db.is_sqlite:
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})"))
        await conn.run_sync(
            lambda c: schema.metadata.create_all(c, tables=[schema.schema_migrations])
        )
        done = set((await conn.execute(select(schema.schema_migrations.c.version))).scalars())
        applied = []
        for m in MIGRATIONS:
            if m.version in done:
                continue
            await conn.run_sync(m.apply)
            await conn.execute(
                schema.schema_migrations.insert().values(
                    version=m.version, name=m.name, applied_at=time.time()
                )
            )
            applied.append(m.version)
        return applied
