"""Fleets as desired state: apply (with the diff), read, delete; members as actual state.

``apply`` is one transaction: it compares the new spec with the stored one, returns the
changes, and (unless a dry run) stores the spec with the next generation. The reconciler
(reconciler.py) reads specs and drives members towards them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from underlay import errors
from underlay.orchestration.fleet_models import FleetSpec
from underlay.orchestration.lifecycle import FINAL
from underlay.storage.engine import Database
from underlay.storage.schema import fleet_members, fleets


def diff(old: FleetSpec | None, new: FleetSpec | None) -> list[str]:
    """What changes from ``old`` to ``new``, one line per agent (and supervision)."""
    before = {a.name: a for a in old.agents} if old else {}
    after = {a.name: a for a in new.agents} if new else {}
    out = []
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a is None and b is not None:
            out.append(f"+ agent {name}: {b.replicas} x {b.program.describe()} ({b.restart})")
        elif b is None and a is not None:
            out.append(f"- agent {name}: {a.replicas} replicas stop")
        elif a is not None and b is not None and a != b:
            fields = [
                f"{f} {getattr(a, f)!s} -> {getattr(b, f)!s}"
                for f in (
                    "replicas",
                    "autoscale",
                    "restart",
                    "program",
                    "capabilities",
                    "budget",
                    "queue",
                    "health",
                    "termination_grace_seconds",
                )
                if getattr(a, f) != getattr(b, f)
            ]
            out.append(f"~ agent {name}: " + ", ".join(fields))
    for part in ("supervision", "evaluators", "failure_policy"):
        if old and new and getattr(old, part) != getattr(new, part):
            out.append(f"~ {part}: {_short(getattr(old, part))} -> {_short(getattr(new, part))}")
    return out


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


async def apply(
    db: Database, org_id: str, spec: FleetSpec, by: str, now: float, *, dry_run: bool
) -> tuple[int, list[str]]:
    def work(conn: Connection) -> tuple[int, list[str]]:
        row = _row(conn, org_id, spec.name)
        old = FleetSpec.model_validate(row.spec) if row is not None and not row.deleted else None
        changes = diff(old, spec)
        if old is not None and row.escalation_id and not changes:
            changes = [f"~ restart: the fleet gave up ({row.escalation_id}); it runs again"]
        generation = (row.generation if row is not None else 0) + (1 if changes else 0)
        if dry_run or not changes:
            return generation, changes
        values = {
            "spec": spec.model_dump(mode="json"),
            "generation": generation,
            "applied_by": by,
            "deleted": False,
            "updated_at": now,
            "escalation_id": None,
        }
        if row is None:
            conn.execute(fleets.insert().values(org_id=org_id, name=spec.name, **values))
        else:
            conn.execute(update(fleets).where(*_key(org_id, spec.name)).values(**values))
        return generation, changes

    return await db.run_write(work)


async def delete(db: Database, org_id: str, name: str, now: float) -> list[str]:
    def work(conn: Connection) -> list[str]:
        row = _row(conn, org_id, name)
        if row is None or row.deleted:
            raise errors.NotFound(f"no fleet {name}", field="name")
        conn.execute(
            update(fleets)
            .where(*_key(org_id, name))
            .values(deleted=True, generation=row.generation + 1, updated_at=now)
        )
        return diff(FleetSpec.model_validate(row.spec), None)

    return await db.run_write(work)


def _key(org_id: str, name: str) -> tuple[Any, Any]:
    return fleets.c.org_id == org_id, fleets.c.name == name


def _row(conn: Connection, org_id: str, name: str) -> Any:
    return conn.execute(select(fleets).where(*_key(org_id, name))).first()


async def read(db: Database, org_id: str | None = None, name: str | None = None) -> list[Any]:
    """Fleets (every organisation's when ``org_id`` is None: the reconciler's view)."""
    query = select(fleets)
    if org_id is not None:
        query = query.where(fleets.c.org_id == org_id)
    if name is not None:
        query = query.where(fleets.c.name == name)
    async with db.read() as conn:
        return list((await conn.execute(query.order_by(fleets.c.org_id, fleets.c.name))).all())


async def members(db: Database, org_id: str, name: str) -> list[Any]:
    query = (
        select(fleet_members)
        .where(fleet_members.c.org_id == org_id, fleet_members.c.fleet == name)
        .order_by(fleet_members.c.agent, fleet_members.c.replica)
    )
    async with db.read() as conn:
        return list((await conn.execute(query)).all())


def _live_member(org_id: str, agent_id: str) -> Any:
    m = fleet_members
    return select(m).where(m.c.org_id == org_id, m.c.agent_id == agent_id,
                           m.c.state.not_in(FINAL))  # fmt: skip


async def membership(db: Database, org_id: str, agent_id: str) -> Any:
    """The member ``agent_id`` is, if its run is not over."""
    async with db.read() as conn:
        return (await conn.execute(_live_member(org_id, agent_id))).first()


async def heartbeat(
    db: Database, org_id: str, agent_id: str, progress: str | None, now: float
) -> Any:
    """Record a heartbeat of the member that ``agent_id`` is (and its progress, whose
    change time is kept); the member's row, or None if the agent runs in no fleet now."""
    m = fleet_members

    def work(conn: Connection) -> Any:
        row = conn.execute(_live_member(org_id, agent_id)).first()
        if row is None:
            return None
        values: dict[str, Any] = {"beat_at": now}
        if progress is not None and progress != row.progress:
            values.update(progress=progress, progress_at=now)
        key = (m.c.org_id == org_id, m.c.fleet == row.fleet, m.c.agent == row.agent,
               m.c.replica == row.replica)  # fmt: skip
        conn.execute(update(m).where(*key).values(**values))
        return row

    return await db.run_write(work)
