"""What the ``repos.*`` and ``queue.*`` syscalls take and return."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from underlay.types import StrictModel

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
REF = r"^[A-Za-z0-9_][A-Za-z0-9._/@{}^~-]{0,199}$"  # a branch, a tag or a sha; never an option
State = Literal["queued", "testing", "landed", "rejected", "conflict", "escalated"]
DECIDED = ("landed", "rejected", "conflict", "escalated")


class RegisterRepo(StrictModel):
    """A repository for the merge queue: an existing one on this host (``path``,
    operators only), or a bare one that underlay creates and owns (``create``)."""

    name: str = Field(pattern=NAME)
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    create: bool = False
    target: str = Field(default="main", pattern=REF, description="the branch landed on")
    checks: list[str] = Field(
        default_factory=list, max_length=20, description="shell lines run in a sandbox"
    )
    template: str = Field(default="default", description="the checks' sandbox template")
    check_timeout_seconds: float = Field(default=600, gt=0, le=86400)
    batch_size: int = Field(default=2, ge=1, le=64, description="changes tested together")
    concurrency: int = Field(default=2, ge=1, le=16, description="batches tested at once")
    max_conflict_tries: int = Field(
        default=3, ge=1, le=100, description="conflicts handed back before a human is asked"
    )

    @model_validator(mode="after")
    def _one_source(self) -> RegisterRepo:
        if (self.path is None) == (not self.create):
            raise ValueError("give exactly one of path (an existing repository) or create")
        if any(not c.strip() or len(c) > 4000 for c in self.checks):
            raise ValueError("checks: each is a non-blank shell line of at most 4000 characters")
        return self


class Repository(StrictModel):
    name: str
    path: str
    owned: bool
    target: str
    target_head: str | None = Field(description="the commit the target branch is at")
    checks: list[str]
    template: str
    check_timeout_seconds: float
    batch_size: int
    concurrency: int
    max_conflict_tries: int
    created_at: float


class RepoRef(StrictModel):
    name: str = Field(pattern=NAME)


class RepoList(StrictModel):
    items: list[Repository]


class SubmitChange(StrictModel):
    repo: str = Field(pattern=NAME)
    ref: str = Field(pattern=REF, description="the branch (or commit) to land")
    task_id: str | None = Field(default=None, max_length=100, description="attribution")


class MergeChange(StrictModel):
    id: str
    repo: str
    ref: str
    head: str
    submitted_by: str
    task_id: str | None
    state: State
    tries: int = Field(description="conflicts of this ref handed back so far")
    detail: str = Field(description="the failing checks' output, or the conflict")
    conflicts: list[str]
    landed_commit: str | None
    check_seconds: float = Field(description="its share of the checks' time: what landing cost")
    escalation_id: str | None
    created_at: float
    decided_at: float | None


class ChangeRef(StrictModel):
    change: str = Field(min_length=1, max_length=100)


class ListChanges(StrictModel):
    repo: str = Field(pattern=NAME)
    state: State | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ChangePage(StrictModel):
    items: list[MergeChange]


class Overlap(StrictModel):
    a: str = Field(description="a change id")
    b: str = Field(description="another change id, or 'target'")
    conflicts: list[str] = Field(description="the paths a merge of the two would conflict in")


class Prediction(StrictModel):
    """Pairwise conflict prediction between the queued changes, and each with the target
    (``git merge-tree``: exact, no checkout)."""

    repo: str
    target_head: str
    pairs_checked: int
    conflicts: list[Overlap]


def _clean_paths(paths: list[str]) -> list[str]:
    for p in paths:
        parts = p.strip("/").split("/")
        if not p.strip() or p.startswith("/") or ".." in parts or "\0" in p:
            raise ValueError(f"paths: {p!r} is not a path inside the repository")
    return paths


class AcquireClaim(StrictModel):
    repo: str = Field(pattern=NAME)
    paths: list[str] = Field(min_length=1, max_length=50, description="globs: src/auth/*")
    ttl_seconds: float = Field(default=900, gt=0, le=86400, description="until it expires")
    exclusive: bool = Field(default=False, description="refuse if another claim overlaps")
    note: str = Field(default="", max_length=500)
    task_id: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _paths(self) -> AcquireClaim:
        _clean_paths(self.paths)
        if any(len(p) > 500 for p in self.paths):
            raise ValueError("paths: at most 500 characters each")
        return self


class Claim(StrictModel):
    id: str
    repo: str
    paths: list[str]
    holder: str
    task_id: str | None
    note: str
    expires_at: float
    created_at: float


class Claimed(StrictModel):
    claim: Claim
    overlapping: list[Claim] = Field(description="others' live claims on the same paths")


class ClaimRef(StrictModel):
    claim: str = Field(min_length=1, max_length=100)


class RenewClaim(ClaimRef):
    ttl_seconds: float = Field(default=900, gt=0, le=86400)


class ClaimList(StrictModel):
    items: list[Claim]


class CreateWorkspace(StrictModel):
    repo: str = Field(pattern=NAME)
    sandbox: str | None = Field(
        default=None, description="one of the caller's sandboxes (default: a new persistent one)"
    )


class WorkspaceRef(StrictModel):
    workspace: str = Field(min_length=1, max_length=100)


class SyncWorkspace(WorkspaceRef):
    submit: bool = Field(default=False, description="then queue the branch to land")
    task_id: str | None = Field(default=None, max_length=100)


class Workspace(StrictModel):
    id: str
    repo: str
    owner: str
    branch: str
    sandbox: str
    path: str = Field(description="the working tree, inside the sandbox")
    base: str
    synced_head: str
    unmerged_commits: int = Field(description="commits on the branch the target lacks")
    state: Literal["active", "deleted"]
    created_at: float
    change: MergeChange | None = Field(default=None, description="sync with submit: the change")
    predicted_conflicts: list[Overlap] = Field(
        default_factory=list, description="with the target or other workspaces' branches"
    )


class WorkspaceList(StrictModel):
    items: list[Workspace]
