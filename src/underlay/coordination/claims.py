"""Claims: advisory, expiring leases on paths of a repository, visible to every agent.

An agent about to work on ``src/auth/*`` claims it for a while; every agent of the
organisation sees the live claims (``claims.list``), and acquiring a claim returns the
live claims of others that overlap it, so two agents learn that they are about to edit
the same place before their branches meet in the queue. Claims are advisory: an
overlapping claim is granted, unless the caller asks for ``exclusive`` — then an
overlap is a ``conflict`` naming the holders. A claim ends when it expires (its
``ttl_seconds`` from acquisition or the last renewal) or when its holder releases it;
only its holder (or a human of the organisation) may renew or release it.

Overlap of two path globs is decided conservatively (when unsure, they overlap): equal
or matching each other, one a directory of the other, or literal prefixes (up to the
first wildcard) of which one starts the other.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import select, update

from underlay import errors
from underlay.coordination.models import Claim
from underlay.storage.engine import Database
from underlay.storage.schema import claims, repositories
from underlay.types import new_id

WILDCARDS = "*?["


def _prefix(glob: str) -> str:
    cut = min((glob.index(c) for c in WILDCARDS if c in glob), default=len(glob))
    return glob[:cut]


def overlap(a: str, b: str) -> bool:
    """Whether the globs ``a`` and ``b`` may name a common path (see the module doc)."""
    a, b = a.strip("/"), b.strip("/")
    if a == b or fnmatchcase(a, b) or fnmatchcase(b, a):
        return True
    if a.startswith(b + "/") or b.startswith(a + "/"):
        return True
    if any(c in a + b for c in WILDCARDS):
        pa, pb = _prefix(a), _prefix(b)
        return pa.startswith(pb) or pb.startswith(pa)
    return False


def model(row: Any) -> Claim:
    return Claim.model_validate(row, from_attributes=True)


def _live(org_id: str, repo: str, now: float) -> Any:
    return select(claims).where(
        claims.c.org_id == org_id, claims.c.repo == repo, claims.c.expires_at > now,
        claims.c.released_at.is_(None),
    )  # fmt: skip


async def acquire(
    db: Database, org_id: str, repo: str, paths: list[str], holder: str, *, ttl: float,
    exclusive: bool, note: str, task_id: str | None, now: float,
) -> tuple[Claim, list[Claim]]:  # fmt: skip
    """A new claim, and the live claims of others it overlaps (refused if ``exclusive``)."""
    async with db.write() as conn:
        repo_row = (
            await conn.execute(
                select(repositories.c.name)
                .where(repositories.c.org_id == org_id, repositories.c.name == repo)
                .with_for_update()
            )
        ).first()  # fmt: skip  (the lock serializes claims on one repository)
        if repo_row is None:
            raise errors.NotFound(f"no repository {repo}", field="repo")
        others = [
            model(r) for r in await conn.execute(_live(org_id, repo, now))
            if r.holder != holder and any(overlap(p, q) for p in paths for q in r.paths)
        ]  # fmt: skip
        if exclusive and others:
            held = ", ".join(f"{c.holder} ({', '.join(c.paths)})" for c in others)
            raise errors.Conflict(f"already claimed by {held}", field="paths")
        claim_id = new_id("clm")
        await conn.execute(claims.insert().values(
            id=claim_id, org_id=org_id, repo=repo, paths=paths, holder=holder,
            task_id=task_id, note=note, expires_at=now + ttl, created_at=now,
        ))  # fmt: skip
        row = (await conn.execute(select(claims).where(claims.c.id == claim_id))).one()
    return model(row), others


async def live(db: Database, org_id: str, repo: str, now: float) -> list[Claim]:
    async with db.read() as conn:
        rows = await conn.execute(_live(org_id, repo, now).order_by(claims.c.created_at))
        return [model(r) for r in rows]


async def change(
    db: Database, org_id: str, claim_id: str, by: Any, now: float, **values: Any
) -> Claim:
    """Renew or release a live claim — its holder only (or a human of the org)."""
    async with db.write() as conn:
        row = (await conn.execute(
            select(claims).where(claims.c.org_id == org_id, claims.c.id == claim_id)
        )).first()  # fmt: skip
        if row is None or row.released_at is not None or row.expires_at <= now:
            raise errors.NotFound(f"no live claim {claim_id}", field="claim")
        if row.holder != by.id and by.kind != "human":
            raise errors.PermissionDenied(f"claim {claim_id} is {row.holder}'s, not yours")
        await conn.execute(update(claims).where(claims.c.id == claim_id).values(**values))
        row = (await conn.execute(select(claims).where(claims.c.id == claim_id))).one()
    return model(row)
