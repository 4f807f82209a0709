"""The invoke chain, one step a function, assembled once in this visible order:

    trace → authenticate → audit → authorize → idempotency → budget → policy → handler

On the way out the order reverses, so the cost is committed (``budget``) before the audit
event is written (``audit``), and the audit event before the span ends (``trace``).
``audit`` sits right after ``authenticate`` so that denials are audited too; a call that
failed authentication has no org to be audited in and is only traced.
Each step appends its name to ``call.trail`` (tests assert the order from it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from underlay import errors
from underlay.kernel import audit as audit_log
from underlay.kernel.context import CallContext, Effect, Principal
from underlay.kernel.idempotency import request_hash
from underlay.kernel.syscall import Syscall
from underlay.types import Money, to_wire

if TYPE_CHECKING:
    from underlay.kernel.kernel import Kernel

log = logging.getLogger("underlay.kernel")


@dataclass
class Call:
    """One invocation as it travels down the chain."""

    syscall: Syscall
    payload: dict[str, Any] | BaseModel
    token: str | None = None
    principal: Principal | None = None
    idempotency_key: str | None = None
    trace_id: str = ""
    input: BaseModel | None = None
    ctx: CallContext | None = None
    cost: Money | None = None
    replayed: bool = False
    handled: bool = False  # the handler returned
    audited: bool = False  # its audit event was written with its effects
    trail: list[str] = field(default_factory=list)


Next = Callable[[Call], Awaitable[BaseModel]]
Step = Callable[["Kernel", Call, Next], Awaitable[BaseModel]]


async def trace(k: Kernel, call: Call, nxt: Next) -> BaseModel:
    call.trail.append("trace")
    if k.tracer is None:
        call.trace_id = secrets.token_hex(16)
        return await nxt(call)
    with k.tracer.start_as_current_span(f"underlay {call.syscall.name}") as span:
        call.trace_id = format(span.get_span_context().trace_id, "032x")
        span.set_attribute("underlay.syscall", call.syscall.name)
        try:
            result = await nxt(call)
        except errors.UnderlayError as exc:
            span.set_attribute("underlay.error_code", exc.code)
            raise
        finally:
            if call.principal is not None:
                span.set_attribute("underlay.org_id", call.principal.org_id)
                span.set_attribute("underlay.principal", call.principal.id)
            for name in call.trail:
                span.add_event(name)
        return result


async def authenticate(k: Kernel, call: Call, nxt: Next) -> BaseModel:
    call.trail.append("authenticate")
    if call.principal is None:
        call.principal = await k.authn.authenticate(call.token)
    return await nxt(call)


async def audit(k: Kernel, call: Call, nxt: Next) -> BaseModel:
    call.trail.append("audit")
    try:
        result = await nxt(call)
    except errors.UnderlayError as exc:
        outcome = "denied" if isinstance(exc, errors.PermissionDenied) else "error"
        await _write_audit(k, call, outcome, exc.code)
        raise
    if call.audited:  # written with the handler's effects (``_settle``)
        return result
    if call.syscall.mutating or k.config.audit_reads or call.replayed:
        await _write_audit(k, call, "replayed" if call.replayed else "ok", None)
    return result


async def _run_and_settle(k: Kernel, call: Call, nxt: Next) -> BaseModel:
    """The rest of the chain, then the handler's ``commit_with_audit`` writes committed
    with the call's audit event — before idempotency stores the result, so no stored
    result points at an effect that was never written."""
    try:
        result = await nxt(call)
    except BaseException:
        if call.handled:  # the handler returned, a later step failed: its effects go
            await asyncio.shield(_undo(call))
        raise
    if call.ctx is not None and call.ctx.with_audit:
        # shielded: a cancelled caller must not split an effect from its outcome
        await asyncio.shield(_settle(k, call))
    return result


async def _settle(k: Kernel, call: Call) -> None:
    assert call.ctx is not None
    effects = call.ctx.with_audit
    try:
        if call.syscall.mutating or k.config.audit_reads:
            await _write_audit(k, call, "ok", None, effects)
            call.audited = True
        else:
            await k.db.run_write(lambda conn: [e.work(conn) for e in effects])
    except BaseException as exc:
        await _undo(call)
        if isinstance(exc, errors.UnderlayError) or not isinstance(exc, Exception):
            raise
        log.exception("writing the effects of %s failed (trace %s)", call.syscall.name,
                      call.trace_id)  # fmt: skip
        raise errors.InternalError(
            f"internal error in {call.syscall.name} (trace {call.trace_id})"
        ) from exc
    for effect in effects:
        if effect.then is not None:
            effect.then()


async def _undo(call: Call) -> None:
    """Every pending effect's ``undo``, each on its own (one failing stops no other)."""
    assert call.ctx is not None
    for effect in call.ctx.with_audit:
        if effect.undo is not None:
            try:
                await effect.undo()
            except Exception:
                log.exception("undoing an effect of %s failed (trace %s)", call.syscall.name,
                              call.trace_id)  # fmt: skip


@functools.cache
def unaudited(model: type[BaseModel]) -> set[str]:
    """Fields an input model marks ``x-audit: false`` (user content such as remembered
    text): the audit event records the call without them."""
    return {
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict)
        and info.json_schema_extra.get("x-audit") is False
    }


async def _write_audit(
    k: Kernel, call: Call, outcome: str, code: str | None, effects: Sequence[Effect] = ()
) -> None:
    assert call.principal is not None
    detail: dict[str, Any] = {}
    if call.input is not None:
        detail["input"] = call.input.model_dump(
            mode="json", exclude_none=True, exclude=unaudited(type(call.input))
        )
    if call.ctx is not None and call.ctx.audit:
        detail["result"] = call.ctx.audit
    if call.cost:
        detail["cost"] = str(call.cost)
    if call.idempotency_key:
        detail["idempotency_key"] = call.idempotency_key
    await audit_log.record(
        k.db,
        org_id=call.principal.org_id,
        ts=k.clock.now(),
        actor_kind=call.principal.kind,
        actor_id=call.principal.id,
        syscall=call.syscall.name,
        outcome=outcome,
        error_code=code,
        detail=detail,
        trace_id=call.trace_id,
        effects=[e.work for e in effects],
    )


async def authorize(k: Kernel, call: Call, nxt: Next) -> BaseModel:
    call.trail.append("authorize")
    p, sc = call.principal, call.syscall
    assert p is not None
    if sc.operator_only and not p.is_operator:
        raise errors.PermissionDenied(f"{sc.name} is for operators only", capability=sc.capability)
    if not p.allows(sc.capability):
        raise errors.PermissionDenied(
            f"{p.kind} {p.id} lacks capability {sc.capability!r} for {sc.name}",
            capability=sc.capability,
        )
    call.input = validate(sc.input, call.payload)
    return await nxt(call)


def validate(model: type[BaseModel], payload: dict[str, Any] | BaseModel) -> BaseModel:
    """Validate input; the first problem becomes ``InvalidInput`` naming its field."""
    if isinstance(payload, model):
        return payload
    if isinstance(payload, BaseModel):
        payload = payload.model_dump()
    if not isinstance(payload, dict):
        raise errors.InvalidInput("the input must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or None
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown field"
        elif first["type"] == "value_error":  # our validators' own words, without a prefix
            msg = msg.removeprefix("Value error, ")
        raise errors.InvalidInput(f"{loc}: {msg}" if loc else msg, field=loc) from None
    except errors.UnderlayError as exc:
        raise errors.InvalidInput(exc.message, field=exc.field) from None


async def idempotency(k: Kernel, call: Call, nxt: Next) -> BaseModel:
    call.trail.append("idempotency")
    key, sc, p = call.idempotency_key, call.syscall, call.principal
    if not key or not sc.mutating:
        return await _run_and_settle(k, call, nxt)
    assert p is not None and call.input is not None
    rhash = request_hash(sc.name, to_wire(call.input), k.request_key)
    lease = (sc.policy.timeout_seconds or 300) * sc.policy.retry.max_attempts + 30
    stored = await k.idempotency.claim(p.org_id, p.id, key, sc.name, rhash, lease)
    if stored is not None:
        call.replayed = True
        if "error" in stored:
            raise errors.UnderlayError.from_dict(stored["error"])
        return sc.output.model_validate(stored["result"])
    try:
        result = await _run_and_settle(k, call, nxt)
    except errors.UnderlayError as exc:
        if exc.retryable:
            await k.idempotency.release(p.org_id, p.id, key)
        else:
            await k.idempotency.finish(p.org_id, p.id, key, {"error": exc.to_dict()})
        raise
    except BaseException:
        await k.idempotency.release(p.org_id, p.id, key)
        raise
    await k.idempotency.finish(p.org_id, p.id, key, {"result": result.model_dump(mode="json")})
    return result


async def budget(k: Kernel, call: Call, nxt: Next) -> BaseModel:
    call.trail.append("budget")
    p = call.principal
    assert p is not None and call.input is not None
    cost = call.syscall.cost_for(call.input)
    if not cost:
        return await nxt(call)
    hold_id = f"hold:{call.trace_id}:{secrets.token_hex(4)}"
    await k.ledger.transfer(
        p.org_id,
        hold_id,
        p.payer,
        ("usage", p.org_id),
        cost,
        pending_ttl=k.config.hold_ttl_seconds,
        memo=call.syscall.name,
        task_id=p.task_id,  # the post (or void) carries the hold's attribution
        attempt=p.attempt,
    )
    try:
        result = await nxt(call)
    except BaseException:
        await k.ledger.resolve(p.org_id, hold_id, void=True, memo="failed")
        raise
    actual = call.ctx.actual_cost if call.ctx and call.ctx.actual_cost is not None else cost
    if actual.amount > cost.amount:
        actual = cost  # a handler never posts more than was held
    await k.ledger.resolve(p.org_id, hold_id, post=actual, memo=call.syscall.name)
    call.cost = actual
    return result


async def policy(k: Kernel, call: Call, nxt: Next) -> BaseModel:
    call.trail.append("policy")
    sc = call.syscall
    fallback = None
    if sc.policy.fallback:
        fb = k.table.get(sc.policy.fallback)
        fallback = lambda: k.invoke(fb.name, call.input, principal=call.principal)  # noqa: E731
    return await k.policies.run(f"{sc.name}@{sc.backend}", sc.policy, lambda: nxt(call), fallback)


async def handler(k: Kernel, call: Call) -> BaseModel:
    call.trail.append("handler")
    assert call.principal is not None
    ctx = call.ctx = CallContext(
        kernel=k,
        principal=call.principal,
        syscall=call.syscall,
        idempotency_key=call.idempotency_key,
        trace_id=call.trace_id,
    )
    try:
        result = await call.syscall.handler(ctx, call.input)
        call.handled = True
    except errors.UnderlayError:
        raise
    except Exception as exc:
        log.exception("syscall %s failed (trace %s)", call.syscall.name, call.trace_id)
        raise errors.InternalError(
            f"internal error in {call.syscall.name} (trace {call.trace_id})"
        ) from exc
    return result


STEPS: tuple[Step, ...] = (trace, authenticate, audit, authorize, idempotency, budget, policy)


def compose(k: Kernel, steps: tuple[Step, ...] = STEPS) -> Next:
    """Build the chain once: each step gets the next as a plain callable."""
    nxt: Next = lambda call: handler(k, call)  # noqa: E731
    for step in reversed(steps):
        nxt = (lambda s, n: lambda call: s(k, call, n))(step, nxt)
    return nxt
