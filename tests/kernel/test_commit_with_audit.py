"""``CallContext.commit_with_audit``: a handler's write committed with its audit event."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Connection, text

from kernel.helpers import OpenKernel, audit_events
from underlay import errors
from underlay.kernel.context import CallContext
from underlay.kernel.kernel import Kernel
from underlay.kernel.syscall import SyscallGroup
from underlay.types import Money


class Put(BaseModel):
    key: str
    fail_after: bool = False  # the handler raises after handing over its write
    slow: float = 0.0  # the effect sleeps (in its thread) before writing


class Stored(BaseModel):
    key: str


class Witness:
    """The keys whose ``then`` and ``undo`` ran."""

    def __init__(self) -> None:
        self.then: list[str] = []
        self.undone: list[str] = []


def group(w: Witness) -> SyscallGroup:
    g = SyscallGroup("effects")

    @g.syscall("effects.put", mutating=True)
    async def put(ctx: CallContext, inp: Put) -> Stored:
        """A test-only syscall: inserts ``key`` with its audit event."""

        def work(conn: Connection) -> None:
            if inp.slow:
                time.sleep(inp.slow)
            conn.execute(text("INSERT INTO effect_rows (key) VALUES (:k)"), {"k": inp.key})

        def then() -> None:
            w.then.append(inp.key)

        async def undo() -> None:
            w.undone.append(inp.key)

        ctx.commit_with_audit(work, then=then, undo=undo)
        ctx.audit.update(key=inp.key)
        if inp.fail_after:
            raise errors.Conflict("the handler changed its mind")
        return Stored(key=inp.key)

    @g.syscall("effects.peek")
    async def peek(ctx: CallContext, inp: Put) -> Stored:
        """A test-only read-only syscall that still hands over a write."""
        ctx.commit_with_audit(
            lambda conn: conn.execute(
                text("INSERT INTO effect_rows (key) VALUES (:k)"), {"k": inp.key}
            )
        )
        return Stored(key=inp.key)

    @g.syscall("effects.paid", mutating=True, cost=Money.parse("0.01 USD"))
    async def paid(ctx: CallContext, inp: Put) -> Stored:
        """A test-only syscall with a cost, which must not hand over a write."""
        ctx.commit_with_audit(lambda conn: None)
        return Stored(key=inp.key)

    return g


@pytest.fixture
def witness() -> Witness:
    return Witness()


@pytest.fixture
async def k(open_kernel: OpenKernel, witness: Witness) -> Kernel:
    kernel = await open_kernel(group(witness))
    async with kernel.db.write() as conn:
        await conn.execute(text("CREATE TABLE effect_rows (key VARCHAR(40) PRIMARY KEY)"))
    return kernel


async def keys(k: Kernel) -> list[str]:
    async with k.db.read() as conn:
        return sorted(r[0] for r in await conn.execute(text("SELECT key FROM effect_rows")))


async def test_the_write_and_its_audit_event_commit_together(k: Kernel, witness: Witness) -> None:
    out: Any = await k.invoke("effects.put", {"key": "a"}, token=k.admin_token())
    assert out.key == "a"
    assert await keys(k) == ["a"]
    [event] = await audit_events(k, syscall="effects.put")
    assert (event["outcome"], event["detail"]["result"]) == ("ok", {"key": "a"})
    assert witness.then == ["a"] and witness.undone == []


async def test_a_failed_transaction_keeps_neither_and_undoes(k: Kernel, witness: Witness) -> None:
    await k.invoke("effects.put", {"key": "dup"}, token=k.admin_token())
    with pytest.raises(errors.InternalError, match=r"effects\.put"):
        await k.invoke("effects.put", {"key": "dup"}, token=k.admin_token())
    assert await keys(k) == ["dup"]
    events = await audit_events(k, syscall="effects.put")
    # the second call's "ok" event went with its failed write; its error is audited
    assert [(e["outcome"], e["error_code"]) for e in events] == [
        ("ok", None),
        ("error", "internal"),
    ]
    assert witness.undone == ["dup"]
    assert witness.then == ["dup"]  # only the first call's


async def test_a_handler_that_raises_after_handing_over_drops_the_write(
    k: Kernel, witness: Witness
) -> None:
    with pytest.raises(errors.Conflict, match="changed its mind"):
        await k.invoke("effects.put", {"key": "b", "fail_after": True}, token=k.admin_token())
    assert await keys(k) == []
    [event] = await audit_events(k, syscall="effects.put")
    assert (event["outcome"], event["error_code"]) == ("error", "conflict")
    assert witness.then == [] and witness.undone == []


async def test_unaudited_calls_still_write_their_effects(k: Kernel) -> None:
    await k.invoke("effects.peek", {"key": "c"}, token=k.admin_token())
    assert await keys(k) == ["c"]
    assert await audit_events(k, syscall="effects.peek") == []


async def test_a_cancelled_caller_does_not_split_the_write_from_its_outcome(
    k: Kernel, witness: Witness
) -> None:
    call = asyncio.create_task(
        k.invoke("effects.put", {"key": "d", "slow": 0.3}, token=k.admin_token())
    )
    await asyncio.sleep(0.1)  # the transaction is being written
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(100):  # the write goes on without its caller, then runs ``then``
        if witness.then:
            break
        await asyncio.sleep(0.02)
    assert await keys(k) == ["d"]
    assert witness.then == ["d"] and witness.undone == []
    assert len(await audit_events(k, syscall="effects.put")) == 1


async def test_an_idempotency_key_never_replays_a_result_whose_write_failed(k: Kernel) -> None:
    """Effects are settled before idempotency stores the result: a failed write leaves
    the key with the error (replayed as such), not with a result that never happened."""
    await k.invoke("effects.put", {"key": "x"}, token=k.admin_token())
    with pytest.raises(errors.InternalError):
        await k.invoke("effects.put", {"key": "x"}, token=k.admin_token(), idempotency_key="i1")
    async with k.db.write() as conn:
        await conn.execute(text("DELETE FROM effect_rows"))
    with pytest.raises(errors.InternalError):  # replayed: the handler does not run again
        await k.invoke("effects.put", {"key": "x"}, token=k.admin_token(), idempotency_key="i1")
    assert await keys(k) == []
    outcomes = [e["outcome"] for e in await audit_events(k, syscall="effects.put")]
    assert outcomes == ["ok", "error", "error"]  # the failed write is audited, as is its replay
    out: Any = await k.invoke(
        "effects.put", {"key": "x"}, token=k.admin_token(), idempotency_key="i2"
    )
    assert out.key == "x" and await keys(k) == ["x"]


async def test_a_later_failure_leaves_written_effects_and_their_event(
    k: Kernel, witness: Witness
) -> None:
    """Effects are written before idempotency stores the result: if storing it fails
    (the store is away, say), what was written stands, with its audit event."""

    async def broken_finish(*args: Any, **kwargs: Any) -> None:
        raise errors.Unavailable("the idempotency store is away")

    original = k.idempotency.finish
    k.idempotency.finish = broken_finish  # type: ignore[method-assign]
    try:
        with pytest.raises(errors.Unavailable, match="store is away"):
            await k.invoke(
                "effects.put", {"key": "late"}, token=k.admin_token(), idempotency_key="i3"
            )
    finally:
        k.idempotency.finish = original  # type: ignore[method-assign]
    assert witness.then == ["late"] and witness.undone == []
    assert await keys(k) == ["late"]
    outcomes = [e["outcome"] for e in await audit_events(k, syscall="effects.put")]
    assert outcomes == ["ok", "error"]


async def test_a_syscall_with_a_cost_may_not_hand_over_a_write(k: Kernel) -> None:
    with pytest.raises(errors.InternalError, match=r"effects\.paid"):
        await k.invoke("effects.paid", {"key": "y"}, token=k.admin_token())
