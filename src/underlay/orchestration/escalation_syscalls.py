"""The ``escalations.*`` syscalls: the human inbox of escalations and approvals.

Agents raise (``escalations.raise``); humans read and resolve (``escalations.read``,
``escalations.resolve``). Resolving one that a task waits on resumes the task. Raised
context is the caller's data: it is shown to the resolver, and audited only by id.
"""

from __future__ import annotations

from typing import Any

from underlay import errors
from underlay.kernel.context import CallContext
from underlay.kernel.syscall import SyscallGroup
from underlay.orchestration import escalations as inbox
from underlay.orchestration.models import (
    Escalation,
    EscalationPage,
    EscalationRef,
    ListEscalations,
    RaiseEscalation,
    ResolveEscalation,
)
from underlay.storage.rows import in_org, page
from underlay.storage.schema import escalations
from underlay.types import new_id

group = SyscallGroup("escalations")


def escalation_model(row: Any) -> Escalation:
    return Escalation(
        id=row.id, kind=row.kind, source=row.source, summary=row.summary, context=row.context,
        state=row.state, resolution=row.resolution, resolved_by=row.resolved_by,
        task_id=row.task_id, raised_by=row.raised_by, created_at=row.created_at,
        resolved_at=row.resolved_at,
    )  # fmt: skip


@group.syscall("escalations.raise", mutating=True)
async def raise_(ctx: CallContext, inp: RaiseEscalation) -> Escalation:
    """Ask a human: an escalation or an approval, with its context (once per dedupe_key)."""
    p = ctx.principal
    row, created = await inbox.raise_(
        ctx.kernel.db, org_id=ctx.org_id, source=f"{p.kind}:{p.id}", summary=inp.summary,
        context=inp.context, dedupe_key=inp.dedupe_key or new_id("key"), raised_by=p.id,
        now=ctx.now(), kind=inp.kind,
    )  # fmt: skip
    ctx.audit.update(escalation=row.id, kind=inp.kind, created=created)
    return escalation_model(row)


@group.syscall("escalations.list", capability="escalations.read")
async def list_(ctx: CallContext, inp: ListEscalations) -> EscalationPage:
    """The organisation's escalations (open by default), oldest first, by cursor."""
    where = [escalations.c.state == inp.state] if inp.state else []
    rows, cursor = await page(
        ctx.kernel.db, escalations, ctx.org_id, where, limit=inp.limit, cursor=inp.cursor
    )
    return EscalationPage(items=[escalation_model(r) for r in rows], next_cursor=cursor)


@group.syscall("escalations.get", capability="escalations.read")
async def get(ctx: CallContext, inp: EscalationRef) -> Escalation:
    """One escalation with its context and, once resolved, its answer."""
    row = await in_org(ctx.kernel.db, escalations, ctx.org_id, inp.escalation_id)
    if row is None:
        raise errors.NotFound(f"no escalation {inp.escalation_id}", field="escalation_id")
    return escalation_model(row)


@group.syscall("escalations.resolve", mutating=True)
async def resolve(ctx: CallContext, inp: ResolveEscalation) -> Escalation:
    """Answer an open escalation (once); a task waiting on it resumes with the answer."""
    row = await inbox.resolve(
        ctx.kernel.db, ctx.org_id, inp.escalation_id, inp.resolution, ctx.principal.id, ctx.now()
    )
    ctx.audit.update(escalation=row.id, task=row.task_id)
    ctx.kernel.wake_workers()
    return escalation_model(row)
