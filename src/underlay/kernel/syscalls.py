"""The kernel's own syscalls: a no-op (for measuring the chain) and the audit trail."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy import select

from underlay.kernel import audit
from underlay.kernel.context import CallContext
from underlay.kernel.syscall import SyscallGroup
from underlay.storage import schema
from underlay.types import Empty, StrictModel

group = SyscallGroup("kernel")


@group.syscall("system.noop")
async def noop(ctx: CallContext, inp: Empty) -> Empty:
    """Do nothing: measures the cost of the invoke chain itself."""
    return Empty()


class TailAudit(StrictModel):
    limit: int = Field(default=20, ge=1, le=1000)
    before: int | None = Field(default=None, ge=1, description="show events with seq below this")
    syscall: str | None = None


class AuditEvent(StrictModel):
    seq: int
    ts: float
    actor_kind: str
    actor_id: str
    syscall: str
    outcome: str
    error_code: str | None
    detail: dict[str, Any]
    trace_id: str | None
    hash: str


class AuditPage(StrictModel):
    items: list[AuditEvent]
    next_cursor: int | None = None


class AuditReport(StrictModel):
    ok: bool
    events: int
    problems: list[dict[str, Any]]


@group.syscall("audit.tail", capability="audit.read")
async def tail(ctx: CallContext, inp: TailAudit) -> AuditPage:
    """The org's latest audit events, newest first; page back with ``before``."""
    t = schema.audit_events
    q = select(t).where(t.c.org_id == ctx.org_id).order_by(t.c.seq.desc()).limit(inp.limit)
    if inp.before is not None:
        q = q.where(t.c.seq < inp.before)
    if inp.syscall:
        q = q.where(t.c.syscall == inp.syscall)
    async with ctx.db.read() as conn:
        rows = (await conn.execute(q)).all()
    items = [AuditEvent(**{f: getattr(r, f) for f in AuditEvent.model_fields}) for r in rows]
    more = len(items) == inp.limit and items[-1].seq > 1
    return AuditPage(items=items, next_cursor=items[-1].seq if more else None)


@group.syscall("audit.verify", capability="audit.verify")
async def verify(ctx: CallContext, inp: Empty) -> AuditReport:
    """Check the org's hash chain: reports altered, removed or reordered events."""
    async with ctx.db.read() as conn:
        return AuditReport(**await audit.verify(conn, ctx.org_id))
