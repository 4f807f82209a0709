"""Workspaces: an agent's own branch and working tree, inside its own sandbox.

``create`` makes branch ``ws/<id>`` at the target's head in the repository and a clone
of it in ``/workspace/<repo>`` of a sandbox of the agent's (given, or a new persistent
one created as the agent): the repository travels as a ``git bundle``, so the sandbox
never reaches the repository itself. The agent works and commits there with git.
``sync`` brings its commits back (a bundle made in the sandbox, fetched into the
repository with object checks, onto ``ws/<id>`` only) and can submit the branch to the
merge queue. A workspace read (``get``, ``list``) carries its predicted conflicts: where
its synced branch would conflict with the target or with another active workspace's
branch (``git merge-tree``, exact), so agents learn of a collision while they work.
``recover`` gives a workspace whose sandbox is gone (its agent was killed) a new sandbox
with a clone of the branch as last synced.

Every operation checks ownership: only the workspace's agent (or a human of the
organisation) acts on it. ``delete`` never deletes work: it refuses while the branch
holds commits the target does not, or while the sandbox holds uncommitted changes or
commits not synced yet, naming them.
"""

from __future__ import annotations

import asyncio
import base64
import shlex
import tempfile
from typing import Any

from sqlalchemy import select, update

from underlay import errors
from underlay.coordination import prediction, repos
from underlay.coordination.git import Git
from underlay.coordination.models import Overlap, Workspace
from underlay.kernel.context import Principal
from underlay.storage.schema import workspaces
from underlay.types import new_id

SYNC = "/workspace/.underlay-sync.bundle"


class Workspaces:
    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel

    async def create(self, principal: Principal, repo_name: str, sandbox: str | None) -> Workspace:
        repo = await repos.get(self.kernel.db, principal.org_id, repo_name)
        git = repos.git_of(repo)
        target = await git.maybe_sha(f"refs/heads/{repo.target}")
        if target is None:
            raise errors.Conflict(f"{repo.name} has no {repo.target} branch yet", field="repo")
        if sandbox is None:
            made: Any = await self.kernel.invoke(
                "sandbox.create", {"persistent": True, "timeout": None,
                                   "metadata": {"workspace-of": repo.name}},
                principal=principal,
            )  # fmt: skip
            sandbox = made.id
        else:  # the caller's own sandbox: sandbox.get as the caller proves it
            await self.kernel.invoke("sandbox.get", {"sandbox": sandbox}, principal=principal)
        ws_id = new_id("ws")
        branch = f"ws/{ws_id}"
        await git.run("update-ref", f"refs/heads/{branch}", target, "")
        now = self.kernel.clock.now()
        async with self.kernel.db.write() as conn:
            await conn.execute(workspaces.insert().values(
                id=ws_id, org_id=principal.org_id, repo=repo.name, owner=principal.id,
                branch=branch, sandbox_id=sandbox, base=target, synced_head=target,
                state="active", created_at=now, updated_at=now,
            ))  # fmt: skip
        await self._clone(principal, git, repo.name, branch, sandbox)
        return await self.get(principal, ws_id)

    async def _clone(
        self, principal: Principal, git: Git, repo: str, branch: str, sandbox: str
    ) -> None:
        _, bundle = await git.run_bytes("bundle", "create", "-", f"refs/heads/{branch}")
        content = base64.b64encode(bundle).decode()
        await self._invoke(principal, "sandbox.files.write", sandbox=sandbox, path=SYNC,
                           encoding="base64", content=content)  # fmt: skip
        who = shlex.quote(principal.id)
        await self._sh(principal, sandbox, (
            f"git clone -q -b {shlex.quote(branch)} {SYNC} {shlex.quote(repo)} && rm -f {SYNC}"
            f" && cd {shlex.quote(repo)} && git remote remove origin"
            f" && git config user.name {who} && git config user.email {who}@agents.invalid"
        ))  # fmt: skip

    async def sync(self, principal: Principal, ws_id: str) -> Workspace:
        """The sandbox's commits onto the workspace's branch (a no-op when none are new)."""
        row = await self._owned(principal, ws_id)
        repo = await repos.get(self.kernel.db, row.org_id, row.repo)
        code, out = await self._sh(principal, row.sandbox_id, (
            f"cd {shlex.quote(row.repo)} && git rev-parse HEAD && "
            f"git bundle create -q {SYNC} HEAD ^{row.synced_head}"
        ), check=False)  # fmt: skip
        head = out.split()[0] if out.split() else ""
        if code != 0 and head == row.synced_head:
            return await self.get(principal, ws_id)  # nothing new
        if code != 0:
            raise errors.Conflict(f"the workspace could not be bundled: {out[-2000:]}")
        found: Any = await self._invoke(principal, "sandbox.files.read", sandbox=row.sandbox_id,
                                        path=SYNC)  # fmt: skip
        bundle = (base64.b64decode(found.content) if found.encoding == "base64"
                  else found.content.encode())  # fmt: skip
        await self._fetch(repos.git_of(repo), bundle, row.branch)
        await self._set(ws_id, synced_head=await repos.git_of(repo).sha(row.branch))
        return await self.get(principal, ws_id)

    async def _fetch(self, git: Git, bundle: bytes, branch: str) -> None:
        with tempfile.NamedTemporaryFile(suffix=".bundle") as fh:
            await asyncio.to_thread(fh.write, bundle)
            await asyncio.to_thread(fh.flush)
            await git.run("-c", "transfer.fsckObjects=true", "fetch", "-q", fh.name,
                          f"+HEAD:refs/heads/{branch}")  # fmt: skip

    async def recover(self, principal: Principal, ws_id: str) -> Workspace:
        """A new sandbox for a workspace whose sandbox is gone, from its synced branch."""
        row = await self._owned(principal, ws_id)
        if await self._alive(principal, row.sandbox_id):
            raise errors.Conflict(f"workspace {ws_id}'s sandbox is alive; nothing to recover")
        made: Any = await self.kernel.invoke(
            "sandbox.create", {"persistent": True, "timeout": None,
                               "metadata": {"workspace-of": row.repo}},
            principal=principal,
        )  # fmt: skip
        repo = await repos.get(self.kernel.db, row.org_id, row.repo)
        await self._clone(principal, repos.git_of(repo), row.repo, row.branch, made.id)
        await self._set(ws_id, sandbox_id=made.id)
        return await self.get(principal, ws_id)

    async def delete(self, principal: Principal, ws_id: str) -> Workspace:
        """Remove the branch and the clone — never while they hold unmerged work."""
        row = await self._owned(principal, ws_id)
        repo = await repos.get(self.kernel.db, row.org_id, row.repo)
        git = repos.git_of(repo)
        ahead = await self._ahead(git, repo.target, row.branch)
        if ahead:
            raise errors.Conflict(
                f"workspace {ws_id} holds unmerged work: {ahead} commit(s) on {row.branch} "
                f"not in {repo.target}; land them (queue.submit) first", field="workspace",
            )  # fmt: skip
        if await self._alive(principal, row.sandbox_id):
            _, out = await self._sh(principal, row.sandbox_id, (
                f"cd {shlex.quote(row.repo)} && git status --porcelain && "
                f"git rev-list {row.synced_head}..HEAD"
            ), check=False)  # fmt: skip
            if out.strip():
                raise errors.Conflict(
                    f"workspace {ws_id} holds work not synced (uncommitted or new commits): "
                    f"{out.strip()[:500]}; sync and land it first", field="workspace",
                )  # fmt: skip
            await self._sh(principal, row.sandbox_id, f"rm -rf {shlex.quote(row.repo)}")
        await git.run("update-ref", "-d", f"refs/heads/{row.branch}", await git.sha(row.branch))
        await self._set(ws_id, state="deleted")
        return await self.get(principal, ws_id)

    async def get(self, principal: Principal, ws_id: str) -> Workspace:
        row = await self._row(principal.org_id, ws_id)
        return (await self._models(row.org_id, row.repo, [row]))[0]

    async def listing(self, principal: Principal, repo: str) -> list[Workspace]:
        """The repository's active workspaces, predicted against each other in one pass
        (each pair merged once)."""
        query = select(workspaces).where(
            workspaces.c.org_id == principal.org_id, workspaces.c.repo == repo,
            workspaces.c.state == "active",
        ).order_by(workspaces.c.created_at)  # fmt: skip
        async with self.kernel.db.read() as conn:
            rows = list((await conn.execute(query)).all())
        return await self._models(principal.org_id, repo, rows) if rows else []

    async def _models(self, org_id: str, repo_name: str, rows: list[Any]) -> list[Workspace]:
        """``rows`` as workspaces, each with where its branch would conflict with the
        target or another active workspace's branch (as synced), exactly as git would
        merge them; only branches with unmerged commits are predicted."""
        repo = await repos.get(self.kernel.db, org_id, repo_name)
        git = repos.git_of(repo)
        ahead = {r.id: await self._ahead(git, repo.target, r.branch) for r in rows
                 if r.state == "active"}  # fmt: skip
        mine = [r.id for r in rows if ahead.get(r.id)]
        overlaps: dict[str, list[Overlap]] = {i: [] for i in mine}
        if mine:
            query = select(workspaces.c.id, workspaces.c.branch).where(
                workspaces.c.org_id == org_id, workspaces.c.repo == repo_name,
                workspaces.c.state == "active",
            ).order_by(workspaces.c.created_at)  # fmt: skip
            async with self.kernel.db.read() as conn:
                active = [(r.id, f"refs/heads/{r.branch}") for r in await conn.execute(query)]
            heads = [("target", f"refs/heads/{repo.target}"), *active]
            only = mine[0] if len(mine) == 1 else None
            found, _ = await prediction.pairwise(git, heads, only=only)
            for o in found:
                for me, other in ((o.a, o.b), (o.b, o.a)):
                    if me in overlaps:
                        overlaps[me].append(Overlap(a=me, b=other, conflicts=o.conflicts))
        out = []
        for r in rows:
            out.append(Workspace(
                id=r.id, repo=r.repo, owner=r.owner, branch=r.branch, sandbox=r.sandbox_id,
                path=f"/workspace/{r.repo}", base=r.base, synced_head=r.synced_head,
                unmerged_commits=ahead.get(r.id, 0), state=r.state, created_at=r.created_at,
                predicted_conflicts=overlaps.get(r.id, []),
            ))  # fmt: skip
        return out

    async def _ahead(self, git: Git, target: str, branch: str) -> int:
        _, out = await git.run("rev-list", "--count", f"refs/heads/{target}..refs/heads/{branch}")
        return int(out.strip() or 0)

    async def _owned(self, principal: Principal, ws_id: str) -> Any:
        row = await self._row(principal.org_id, ws_id)
        if row.state != "active":
            raise errors.NotFound(f"workspace {ws_id} was deleted", field="workspace")
        if row.owner != principal.id and principal.kind != "human":
            raise errors.PermissionDenied(f"workspace {ws_id} is {row.owner}'s, not yours")
        return row

    async def _row(self, org_id: str, ws_id: str) -> Any:
        query = select(workspaces).where(workspaces.c.org_id == org_id, workspaces.c.id == ws_id)
        async with self.kernel.db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise errors.NotFound(f"no workspace {ws_id}", field="workspace")
        return row

    async def _alive(self, principal: Principal, sandbox: str) -> bool:
        try:
            found: Any = await self._invoke(principal, "sandbox.get", sandbox=sandbox)
        except errors.NotFound:
            return False
        return bool(found.state in ("running", "paused"))

    async def _sh(
        self, principal: Principal, sandbox: str, script: str, *, check: bool = True
    ) -> tuple[int, str]:
        ran: Any = await self._invoke(principal, "sandbox.commands.run", sandbox=sandbox,
                                      cmd=script, timeout=300)  # fmt: skip
        out = ran.stdout + ran.stderr
        if check and ran.exit_code != 0:
            raise errors.Conflict(f"in the workspace's sandbox: {out.strip()[-2000:]}")
        return int(ran.exit_code or 0), out

    async def _invoke(self, principal: Principal, name: str, **payload: Any) -> Any:
        return await self.kernel.invoke(name, payload, principal=principal)

    async def _set(self, ws_id: str, **values: Any) -> None:
        values["updated_at"] = self.kernel.clock.now()
        async with self.kernel.db.write() as conn:
            await conn.execute(update(workspaces).where(workspaces.c.id == ws_id).values(**values))
