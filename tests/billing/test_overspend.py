"""Concurrent callers never overspend: the hold is the check, and the check is atomic."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

from kernel.helpers import OpenKernel, Probe, balance, make_agent, rows, table_with, usd
from underlay import errors
from underlay.config import Config
from underlay.kernel.kernel import Kernel
from underlay.storage import schema

BUDGET, COST, CALLERS = "1.00", "0.15", 20
FIT = int(Decimal(BUDGET) // Decimal(COST))  # 6 calls fit, 14 do not


async def assert_outcome(k: Kernel, agent_id: str, outcomes: list[Any], probe: Probe) -> None:
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(ok) == FIT, refused
    assert all(isinstance(e, errors.BudgetExceeded) for e in refused), refused
    assert len(refused) == CALLERS - FIT
    assert probe.runs == FIT  # a refused call never reached its handler
    bal = await balance(k, agent_id)
    expected = usd(BUDGET) - usd(str(Decimal(COST) * FIT))
    assert (bal.posted, bal.pending, bal.available) == (expected, usd("0"), expected)
    [account] = await rows(k, schema.accounts, owner_kind="agent", owner_id=agent_id)
    assert account["credits_posted"] - account["debits_posted"] >= 0
    holds = [t for t in await rows(k, schema.transfers) if t["id"].startswith("hold:")]
    assert sorted(t["kind"] for t in holds) == ["pending"] * FIT + ["post"] * FIT


async def test_twenty_concurrent_tasks_never_overspend(open_kernel: OpenKernel) -> None:
    probe = Probe(cost=f"{COST} USD")
    k = await open_kernel(probe.group)
    agent = await make_agent(k, "spender", ["test.work"], budget=f"{BUDGET} USD")
    outcomes = await asyncio.gather(
        *(k.invoke("test.work", {"sleep": 0.01}, token=agent.token) for _ in range(CALLERS)),
        return_exceptions=True,
    )
    await assert_outcome(k, agent.id, list(outcomes), probe)


async def test_twenty_callers_in_ten_kernels_on_threads_never_overspend(
    open_kernel: OpenKernel, config: Config
) -> None:
    """Each thread runs its own event loop and its own Kernel (engine, pool, caches) on the
    same database: as close to separate processes as one test process gets."""
    probe = Probe(cost=f"{COST} USD")
    k = await open_kernel(probe.group)
    agent = await make_agent(k, "spender", ["test.work"], budget=f"{BUDGET} USD")
    threads_n, per_thread = 10, CALLERS // 10
    ready = threading.Barrier(threads_n)
    outcomes: list[Any] = []
    lock = threading.Lock()

    async def process() -> None:
        kk = await Kernel.open(config, table=table_with(probe.group))
        try:
            await asyncio.to_thread(ready.wait, 30)
            got = await asyncio.gather(
                *(
                    kk.invoke("test.work", {"sleep": 0.01}, token=agent.token)
                    for _ in range(per_thread)
                ),
                return_exceptions=True,
            )
            with lock:
                outcomes.extend(got)
        finally:
            await kk.close()

    def run() -> None:
        try:
            asyncio.run(process())
        except BaseException as exc:  # surface a crashed thread as an outcome
            with lock:
                outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(threads_n)]
    for t in threads:
        t.start()
    def join_all() -> None:
        for t in threads:
            t.join(60)

    await asyncio.to_thread(join_all)
    assert len(outcomes) == CALLERS
    await assert_outcome(k, agent.id, outcomes, probe)
