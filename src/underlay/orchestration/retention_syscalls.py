"""The ``tasks.prune`` syscall: retention of finished tasks, on an operator's demand.

Installation-wide (every organisation's tasks, like the ``retention_days`` loop of
``underlay up``), so operators only. What goes and what stays: ``retention.prune``.
Audited with the counts and the cutoff.
"""

from __future__ import annotations

from pydantic import Field

from underlay.kernel.context import CallContext
from underlay.kernel.policy import FailurePolicy
from underlay.kernel.syscall import SyscallGroup
from underlay.orchestration import retention
from underlay.types import StrictModel

group = SyscallGroup("orchestration")


class PruneTasks(StrictModel):
    older_than_days: float = Field(
        gt=0, description="delete tasks that finished more than this many days ago"
    )
    dry_run: bool = Field(default=False, description="count what would go, delete nothing")


class PruneReport(StrictModel):
    cutoff: float = Field(description="tasks finished before this (epoch s) were taken")
    dry_run: bool
    tasks: int
    attempts: int
    workflows: int = Field(description="DBOS workflows (one per attempt that took steps)")


@group.syscall(
    "tasks.prune",
    capability="tasks.admin",
    mutating=True,
    operator_only=True,
    policy=FailurePolicy(timeout_seconds=3600.0),
)
async def prune(ctx: CallContext, inp: PruneTasks) -> PruneReport:
    """Delete finished tasks older than N days with their attempts and DBOS workflows."""
    from underlay.orchestration.worker import dbos_url

    now = ctx.now()
    done = await retention.prune(
        ctx.kernel.db, dbos_url(ctx.kernel.config), now=now,
        cutoff=now - inp.older_than_days * retention.DAY, dry_run=inp.dry_run,
    )  # fmt: skip
    report = PruneReport(
        cutoff=done.cutoff, dry_run=done.dry_run, tasks=done.tasks, attempts=done.attempts,
        workflows=done.workflows,
    )  # fmt: skip
    ctx.audit.update(report.model_dump())
    return report
