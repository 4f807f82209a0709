"""The ``fleets.*`` syscalls: declarative fleets of agents, reconciled and supervised."""

from __future__ import annotations

from typing import Any

from underlay import errors
from underlay.kernel.context import SELF, CallContext
from underlay.kernel.syscall import SyscallGroup
from underlay.orchestration import fleets
from underlay.orchestration.fleet_models import (
    Applied,
    ApplyFleet,
    Fleet,
    FleetList,
    FleetRef,
    FleetSpec,
    Heartbeat,
    HeartbeatAck,
    Member,
    Membership,
    memory_scope,
)
from underlay.types import Empty

group = SyscallGroup("fleets")


async def fleet_model(ctx: CallContext, row: Any) -> Fleet:
    members = await fleets.members(ctx.kernel.db, ctx.org_id, row.name)
    return Fleet(
        name=row.name, generation=row.generation, spec=FleetSpec.model_validate(row.spec),
        members=[
            Member(agent=m.agent, replica=m.replica, agent_id=m.agent_id, task_id=m.task_id,
                   sandbox_id=m.sandbox_id, state=m.state, restarts=m.restarts,
                   beat_at=m.beat_at, progress=m.progress)
            for m in members
        ],
        escalation_id=row.escalation_id, deleted=row.deleted,
    )  # fmt: skip


@group.syscall("fleets.apply", mutating=True)
async def apply(ctx: CallContext, inp: ApplyFleet) -> Applied:
    """Declare a fleet's desired state; returns the changes (a dry run only shows them)."""
    generation, changes = await fleets.apply(
        ctx.kernel.db, ctx.org_id, inp.spec, ctx.principal.id, ctx.now(), dry_run=inp.dry_run
    )
    applied = bool(changes) and not inp.dry_run
    ctx.audit.update(fleet=inp.spec.name, generation=generation, changes=len(changes))
    return Applied(name=inp.spec.name, generation=generation, changes=changes, applied=applied)


@group.syscall("fleets.get", capability="fleets.read")
async def get(ctx: CallContext, inp: FleetRef) -> Fleet:
    """A fleet's spec and its members: identity, current run, lifecycle state, restarts."""
    found = await fleets.read(ctx.kernel.db, ctx.org_id, inp.name)
    if not found:
        raise errors.NotFound(f"no fleet {inp.name}", field="name")
    return await fleet_model(ctx, found[0])


@group.syscall("fleets.list", capability="fleets.read")
async def list_(ctx: CallContext, inp: Empty) -> FleetList:
    """The organisation's fleets (deleted ones until their members have stopped)."""
    rows = await fleets.read(ctx.kernel.db, ctx.org_id)
    return FleetList(items=[await fleet_model(ctx, r) for r in rows])


@group.syscall("fleets.delete", mutating=True)
async def delete(ctx: CallContext, inp: FleetRef) -> Applied:
    """Stop a fleet: its members' runs are cancelled and they are terminated."""
    changes = await fleets.delete(ctx.kernel.db, ctx.org_id, inp.name, ctx.now())
    ctx.audit.update(fleet=inp.name)
    return Applied(name=inp.name, generation=0, changes=changes, applied=True)


@group.syscall("fleets.heartbeat", capability=SELF)  # a liveness signal: not audited
async def heartbeat(ctx: CallContext, inp: Heartbeat) -> HeartbeatAck:
    """A fleet member's run, as its agent: alive, and how far it has got (progress)."""
    if ctx.principal.kind != "agent":
        raise errors.PermissionDenied("only a fleet member's agent sends its heartbeats")
    row = await fleets.heartbeat(
        ctx.kernel.db, ctx.org_id, ctx.principal.id, inp.progress, ctx.now()
    )
    if row is None:
        raise errors.NotFound(f"agent {ctx.principal.id} runs in no fleet now")
    return HeartbeatAck(fleet=row.fleet, agent=row.agent, replica=row.replica, state=row.state)


@group.syscall("fleets.me", capability=SELF)
async def me(ctx: CallContext, inp: Empty) -> Membership:
    """The caller's own fleet membership: fleet, agent, replica, state, memory scope and
    an evaluator's feedback for this run (how a sandboxed program learns them)."""
    row = await fleets.membership(ctx.kernel.db, ctx.org_id, ctx.principal.id)
    if row is None or ctx.principal.kind != "agent":
        raise errors.NotFound(f"{ctx.principal.id} runs in no fleet now")
    fleet = await fleets.read(ctx.kernel.db, ctx.org_id, row.fleet)
    spec = FleetSpec.model_validate(fleet[0].spec)
    agent = next(a for a in spec.agents if a.name == row.agent)
    return Membership(
        fleet=row.fleet, agent=row.agent, replica=row.replica, state=row.state,
        restarts=row.restarts, memory_scope=memory_scope(row.fleet, agent),
        feedback=row.feedback,
    )  # fmt: skip
