"""Idempotency keys: a repeated key returns the first result and never runs twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from kernel.helpers import (
    OpenKernel,
    Probe,
    audit_events,
    balance,
    count,
    make_agent,
    rows,
    usd,
)
from underlay import errors
from underlay.kernel.idempotency import IdempotencyStore
from underlay.kernel.kernel import Kernel
from underlay.kernel.policy import FailurePolicy
from underlay.storage import schema
from underlay.storage.engine import Database
from underlay.storage.migrations import migrate
from underlay.testing.clock import FakeClock


@pytest.fixture
def probe() -> Probe:
    return Probe(cost=None, policy=FailurePolicy(timeout_seconds=5))


@pytest.fixture
async def k(open_kernel: OpenKernel, probe: Probe) -> Kernel:
    return await open_kernel(probe.group)


async def test_a_repeated_key_returns_the_first_result_and_runs_once(
    k: Kernel, probe: Probe
) -> None:
    admin = k.admin_token()
    first: Any = await k.invoke("test.work", {"text": "x"}, token=admin, idempotency_key="once")
    for _ in range(3):
        again = await k.invoke("test.work", {"text": "x"}, token=admin, idempotency_key="once")
        assert again == first
    assert probe.runs == 1
    other: Any = await k.invoke("test.work", {"text": "x"}, token=admin, idempotency_key="twice")
    assert other.run == 2


async def test_agents_create_with_the_same_key_makes_one_agent(kernel: Kernel) -> None:
    admin = kernel.admin_token()
    body = {"name": "solo", "capabilities": [], "budget": "1.00 USD"}
    a: Any = await kernel.invoke("agents.create", body, token=admin, idempotency_key="mk-solo")
    b: Any = await kernel.invoke("agents.create", body, token=admin, idempotency_key="mk-solo")
    assert a == b
    assert await count(kernel, schema.agents, name="solo") == 1
    assert (await balance(kernel, a.id)).available == usd("1.00")  # funded once


async def test_twenty_concurrent_duplicates_create_exactly_one_agent(kernel: Kernel) -> None:
    admin = kernel.admin_token()
    body = {"name": "racer", "budget": "1.00 USD"}
    results: list[Any] = await asyncio.gather(
        *(
            kernel.invoke("agents.create", body, token=admin, idempotency_key="race")
            for _ in range(20)
        )
    )
    assert len({r.id for r in results}) == 1
    assert await count(kernel, schema.agents, name="racer") == 1
    assert (await balance(kernel, results[0].id)).available == usd("1.00")
    outcomes = sorted(e["outcome"] for e in await audit_events(kernel, syscall="agents.create"))
    assert outcomes == ["ok"] + ["replayed"] * 19


async def test_duplicates_from_two_kernels_on_one_database_create_one_agent(
    open_kernel: OpenKernel,
) -> None:
    """Two kernels (two engines, two pools) model two processes sharing the database."""
    k1, k2 = await open_kernel(), await open_kernel()
    admin = k1.admin_token()
    assert k2.admin_token() == admin
    body = {"name": "twin", "budget": "0.50 USD"}
    results: list[Any] = await asyncio.gather(
        *(
            kk.invoke("agents.create", body, token=admin, idempotency_key="two-procs")
            for _ in range(10)
            for kk in (k1, k2)
        )
    )
    assert len({r.id for r in results}) == 1
    assert await count(k1, schema.agents, name="twin") == 1
    assert (await balance(k2, results[0].id)).available == usd("0.50")


async def test_same_key_with_another_input_or_syscall_is_rejected(k: Kernel, probe: Probe) -> None:
    admin = k.admin_token()
    await k.invoke("test.work", {"text": "a"}, token=admin, idempotency_key="k")
    with pytest.raises(errors.IdempotencyKeyReused) as caught:
        await k.invoke("test.work", {"text": "b"}, token=admin, idempotency_key="k")
    assert caught.value.code == "idempotency_key_reused"
    with pytest.raises(errors.IdempotencyKeyReused):
        await k.invoke("agents.create", {"name": "n"}, token=admin, idempotency_key="k")
    assert probe.runs == 1
    assert await count(k, schema.agents, name="n") == 0


async def test_a_non_retryable_error_is_replayed_without_running_again(
    k: Kernel, probe: Probe
) -> None:
    admin = k.admin_token()
    for _ in range(2):
        with pytest.raises(errors.Conflict) as caught:
            await k.invoke("test.work", {"fail": "fatal"}, token=admin, idempotency_key="bad")
        assert caught.value.code == "conflict"
        assert "told to fail" in caught.value.message
    assert probe.runs == 1


async def test_a_retryable_error_releases_the_key(k: Kernel, probe: Probe) -> None:
    admin = k.admin_token()
    probe.script = [errors.Unavailable("down for a moment")]
    with pytest.raises(errors.Unavailable):
        await k.invoke("test.work", {"text": "r"}, token=admin, idempotency_key="retry-me")
    assert await count(k, schema.idempotency, key="retry-me") == 0
    ok: Any = await k.invoke("test.work", {"text": "r"}, token=admin, idempotency_key="retry-me")
    again: Any = await k.invoke("test.work", {"text": "r"}, token=admin, idempotency_key="retry-me")
    assert ok.run == again.run == 2 and probe.runs == 2


async def test_keys_belong_to_one_principal(k: Kernel, probe: Probe) -> None:
    a = await make_agent(k, "a", ["test.work"])
    b = await make_agent(k, "b", ["test.work"])
    ra: Any = await k.invoke("test.work", {}, token=a.token, idempotency_key="shared")
    rb: Any = await k.invoke("test.work", {}, token=b.token, idempotency_key="shared")
    assert (ra.run, rb.run) == (1, 2)


async def test_read_only_syscalls_ignore_the_key(kernel: Kernel) -> None:
    await kernel.invoke("system.noop", {}, token=kernel.admin_token(), idempotency_key="ro")
    assert await count(kernel, schema.idempotency) == 0


async def test_an_overlong_key_is_invalid_input(k: Kernel, probe: Probe) -> None:
    with pytest.raises(errors.InvalidInput):
        await k.invoke("test.work", {}, token=k.admin_token(), idempotency_key="k" * 201)
    assert probe.runs == 0


async def test_a_stored_secret_is_redacted_in_the_idempotency_table(kernel: Kernel) -> None:
    issued: Any = await kernel.invoke(
        "tokens.create", {"kind": "human"}, token=kernel.admin_token(), idempotency_key="tok"
    )
    secret = issued.token.get_secret_value()
    assert secret.startswith("ul_")
    assert secret not in str(await rows(kernel, schema.idempotency))


async def test_a_duplicate_waits_for_the_running_first_call(k: Kernel, probe: Probe) -> None:
    probe.gate = asyncio.Event()
    admin = k.admin_token()
    first = asyncio.create_task(k.invoke("test.work", {}, token=admin, idempotency_key="slow"))
    await asyncio.wait_for(probe.started.wait(), 5)
    second = asyncio.create_task(k.invoke("test.work", {}, token=admin, idempotency_key="slow"))
    await asyncio.sleep(0.05)
    assert not second.done()
    probe.gate.set()
    a, b = await asyncio.gather(first, second)
    assert a == b and probe.runs == 1


async def test_a_lapsed_lease_is_taken_over_by_exactly_one_waiter(config: Any) -> None:
    """The first runner died holding the key; two duplicates find its lease lapsed."""
    clock = FakeClock()
    dbs = [Database(config.resolved_database_url) for _ in range(2)]
    stores = [IdempotencyStore(db, clock.now, wait_seconds=5) for db in dbs]
    try:
        await migrate(dbs[0])
        assert await stores[0].claim("org", "p", "key", "s", "h", lease=10) is None
        for db in dbs:  # warm both pools so that the two claims really overlap
            async with db.read() as conn:
                await conn.execute(select(1))
        clock.advance(11)
        claims = [asyncio.create_task(s.claim("org", "p", "key", "s", "h", 10)) for s in stores]
        await asyncio.wait(claims, timeout=2, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.2)
        done, pending = {c for c in claims if c.done()}, {c for c in claims if not c.done()}
        assert len(done) == 1 and len(pending) == 1, "both duplicates took the lapsed claim over"
        assert done.pop().result() is None
        await stores[0].finish("org", "p", "key", {"result": {"ok": True}})
        assert await asyncio.wait_for(pending.pop(), 5) == {"result": {"ok": True}}
    finally:
        for db in dbs:
            await db.dispose()
