"""The ``repos.*``, ``queue.*``, ``claims.*`` and ``workspaces.*`` syscalls: repositories,
their merge queue, advisory claims on their paths, and agents' workspaces."""

from __future__ import annotations

from underlay.coordination import claims, queue, repos
from underlay.coordination.models import (
    AcquireClaim,
    ChangePage,
    ChangeRef,
    Claim,
    Claimed,
    ClaimList,
    ClaimRef,
    CreateWorkspace,
    ListChanges,
    MergeChange,
    Prediction,
    RegisterRepo,
    RenewClaim,
    RepoList,
    RepoRef,
    Repository,
    SubmitChange,
    SyncWorkspace,
    Workspace,
    WorkspaceList,
    WorkspaceRef,
)
from underlay.coordination.workspaces import Workspaces
from underlay.kernel.context import CallContext
from underlay.kernel.syscall import SyscallGroup
from underlay.types import Empty

group = SyscallGroup("coordination")


@group.syscall("repos.register", capability="repos.admin", mutating=True)
async def register(ctx: CallContext, inp: RegisterRepo) -> Repository:
    """Register a repository for the merge queue: a host path (operators) or a new bare
    repository that underlay owns; with its target branch, checks and queue settings."""
    row = await repos.register(
        ctx.kernel.db, ctx.kernel.config.home, ctx.org_id, inp, ctx.principal.id,
        operator=ctx.principal.is_operator, now=ctx.now(),
    )  # fmt: skip
    ctx.audit.update(repo=inp.name, owned=row.owned)
    return await repos.model(row)


@group.syscall("repos.get", capability="repos.read")
async def get_repo(ctx: CallContext, inp: RepoRef) -> Repository:
    """A repository: where it is, its target branch and head, checks and settings."""
    return await repos.model(await repos.get(ctx.kernel.db, ctx.org_id, inp.name))


@group.syscall("repos.list", capability="repos.read")
async def list_repos(ctx: CallContext, inp: Empty) -> RepoList:
    """The organisation's repositories."""
    rows = await repos.every(ctx.kernel.db, ctx.org_id)
    return RepoList(items=[await repos.model(r) for r in rows])


@group.syscall("queue.submit", capability="queue.submit", mutating=True)
async def submit(ctx: CallContext, inp: SubmitChange) -> MergeChange:
    """Queue a branch (its commit, as of now) to land on the repository's target, after
    its checks pass on the merge with everything ahead of it."""
    repo = await repos.get(ctx.kernel.db, ctx.org_id, inp.repo)
    change = await queue.submit(ctx.kernel.db, repo, inp.ref, ctx.principal.id, inp.task_id,
                                ctx.now())  # fmt: skip
    ctx.audit.update(change=change.id, head=change.head)
    return change


@group.syscall("queue.get", capability="queue.read")
async def status(ctx: CallContext, inp: ChangeRef) -> MergeChange:
    """A change's state: queued, testing, landed (with the commit), rejected (with the
    failing output), conflict (with the paths) or escalated."""
    return await queue.get(ctx.kernel.db, ctx.org_id, inp.change)


@group.syscall("queue.list", capability="queue.read")
async def list_changes(ctx: CallContext, inp: ListChanges) -> ChangePage:
    """A repository's changes, oldest first (optionally in one state)."""
    items = await queue.listing(ctx.kernel.db, ctx.org_id, inp.repo, inp.state, inp.limit)
    return ChangePage(items=items)


@group.syscall("queue.predict", capability="queue.read")
async def predict(ctx: CallContext, inp: RepoRef) -> Prediction:
    """Which queued changes would conflict — with each other or with the target — and
    in which paths, exactly as git would merge them (no checkout)."""
    repo = await repos.get(ctx.kernel.db, ctx.org_id, inp.name)
    return await queue.predict(ctx.kernel.db, repo)


@group.syscall("claims.acquire", capability="claims.write", mutating=True)
async def acquire(ctx: CallContext, inp: AcquireClaim) -> Claimed:
    """Claim paths of a repository for a while (advisory): the claim, and the others'
    live claims it overlaps (with exclusive, an overlap is refused instead)."""
    claim, others = await claims.acquire(
        ctx.kernel.db, ctx.org_id, inp.repo, inp.paths, ctx.principal.id,
        ttl=inp.ttl_seconds, exclusive=inp.exclusive, note=inp.note, task_id=inp.task_id,
        now=ctx.now(),
    )  # fmt: skip
    ctx.audit.update(claim=claim.id, overlapping=len(others))
    return Claimed(claim=claim, overlapping=others)


@group.syscall("claims.list", capability="claims.read")
async def list_claims(ctx: CallContext, inp: RepoRef) -> ClaimList:
    """A repository's live claims, oldest first: who works where, until when."""
    return ClaimList(items=await claims.live(ctx.kernel.db, ctx.org_id, inp.name, ctx.now()))


@group.syscall("claims.renew", capability="claims.write", mutating=True)
async def renew(ctx: CallContext, inp: RenewClaim) -> Claim:
    """Extend one's live claim to ``ttl_seconds`` from now."""
    now = ctx.now()
    return await claims.change(ctx.kernel.db, ctx.org_id, inp.claim, ctx.principal, now,
                               expires_at=now + inp.ttl_seconds)  # fmt: skip


@group.syscall("claims.release", capability="claims.write", mutating=True)
async def release(ctx: CallContext, inp: ClaimRef) -> Claim:
    """End one's claim now."""
    now = ctx.now()
    return await claims.change(ctx.kernel.db, ctx.org_id, inp.claim, ctx.principal, now,
                               released_at=now)  # fmt: skip


@group.syscall("workspaces.create", capability="workspaces.write", mutating=True)
async def create_workspace(ctx: CallContext, inp: CreateWorkspace) -> Workspace:
    """Your own branch (ws/<id>, at the target's head) and a clone of it in a sandbox of
    yours (given, or a new persistent one) at /workspace/<repo>."""
    made = await Workspaces(ctx.kernel).create(ctx.principal, inp.repo, inp.sandbox)
    ctx.audit.update(workspace=made.id, branch=made.branch, sandbox=made.sandbox)
    return made


@group.syscall("workspaces.sync", capability="workspaces.write", mutating=True)
async def sync_workspace(ctx: CallContext, inp: SyncWorkspace) -> Workspace:
    """Bring your workspace's commits onto its branch; with submit, queue it to land."""
    ws = await Workspaces(ctx.kernel).sync(ctx.principal, inp.workspace)
    if inp.submit:
        repo = await repos.get(ctx.kernel.db, ctx.org_id, ws.repo)
        ws.change = await queue.submit(ctx.kernel.db, repo, ws.branch, ctx.principal.id,
                                       inp.task_id, ctx.now())  # fmt: skip
    ctx.audit.update(workspace=ws.id, head=ws.synced_head)
    return ws


@group.syscall("workspaces.get", capability="workspaces.read")
async def get_workspace(ctx: CallContext, inp: WorkspaceRef) -> Workspace:
    """A workspace: its branch, sandbox, synced head and unmerged commits."""
    return await Workspaces(ctx.kernel).get(ctx.principal, inp.workspace)


@group.syscall("workspaces.list", capability="workspaces.read")
async def list_workspaces(ctx: CallContext, inp: RepoRef) -> WorkspaceList:
    """A repository's active workspaces: whose, where, how much unmerged work."""
    return WorkspaceList(items=await Workspaces(ctx.kernel).listing(ctx.principal, inp.name))


@group.syscall("workspaces.recover", capability="workspaces.write", mutating=True)
async def recover_workspace(ctx: CallContext, inp: WorkspaceRef) -> Workspace:
    """A new sandbox for your workspace whose sandbox is gone, from its synced branch."""
    return await Workspaces(ctx.kernel).recover(ctx.principal, inp.workspace)


@group.syscall("workspaces.delete", capability="workspaces.write", mutating=True)
async def delete_workspace(ctx: CallContext, inp: WorkspaceRef) -> Workspace:
    """Remove your workspace's branch and clone; refused while it holds unmerged work."""
    return await Workspaces(ctx.kernel).delete(ctx.principal, inp.workspace)
