"""Repositories registered per organisation for the merge queue.

A repository is either one that already exists on this host (``path``; only an
operator may name host paths) or a bare repository that underlay creates and owns,
under ``home/repos/<org>/<name>.git``. Its settings — the target branch, the checks
and the queue's batch size, concurrency and conflict tries — are stored with it.
Registration checks that git can read the repository; the target branch may not exist
yet (an empty owned repository gets it from its first landing... or from a push).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from underlay import errors
from underlay.coordination.git import Git, GitError
from underlay.coordination.models import RegisterRepo, Repository
from underlay.storage.engine import Database
from underlay.storage.schema import repositories

SETTINGS = ("checks", "template", "check_timeout_seconds", "batch_size", "concurrency",
            "max_conflict_tries")  # fmt: skip


def git_of(row: Any) -> Git:
    return Git(Path(row.path))


async def register(
    db: Database, home: Path, org_id: str, inp: RegisterRepo, by: str, *, operator: bool, now: float
) -> Any:
    if inp.path is not None and not operator:
        raise errors.PermissionDenied(
            "only an operator registers a host path; ask for create: true instead"
        )
    if inp.path is not None:
        path = await asyncio.to_thread(Path(inp.path).resolve)
        code, _ = await Git(path).run("rev-parse", "--git-dir", ok=(0, 128))
        if code != 0:
            raise errors.InvalidInput(f"{inp.path} is not a git repository", field="path")
    else:
        path = home / "repos" / org_id / f"{inp.name}.git"
        if await asyncio.to_thread(path.exists):
            raise errors.Conflict(f"{path} exists already", field="name")
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        try:
            await Git(path.parent).run("init", "-q", "--bare", "-b", inp.target, str(path))
        except GitError as exc:
            raise errors.InvalidInput(f"cannot create the repository: {exc.message}") from None
    values = {
        "org_id": org_id, "name": inp.name, "path": str(path), "owned": inp.path is None,
        "target": inp.target, "settings": inp.model_dump(include=set(SETTINGS)),
        "created_by": by, "created_at": now,
    }  # fmt: skip
    try:
        async with db.write() as conn:
            await conn.execute(repositories.insert().values(**values))
    except IntegrityError:
        raise errors.Conflict(f"repository {inp.name} exists", field="name") from None
    return await get(db, org_id, inp.name)


async def get(db: Database, org_id: str, name: str) -> Any:
    """The repository's row, or NotFound naming it."""
    query = select(repositories).where(repositories.c.org_id == org_id, repositories.c.name == name)
    async with db.read() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise errors.NotFound(f"no repository {name}", field="repo")
    return row


async def every(db: Database, org_id: str | None = None) -> list[Any]:
    query = select(repositories).order_by(repositories.c.org_id, repositories.c.name)
    if org_id is not None:
        query = query.where(repositories.c.org_id == org_id)
    async with db.read() as conn:
        return list((await conn.execute(query)).all())


async def model(row: Any) -> Repository:
    head = await git_of(row).maybe_sha(f"refs/heads/{row.target}")
    return Repository(
        name=row.name, path=row.path, owned=row.owned, target=row.target, target_head=head,
        created_at=row.created_at, **row.settings,
    )  # fmt: skip
