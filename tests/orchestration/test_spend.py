"""Money per task and per attempt: ledger spend joined with outcomes (``tasks.costs``).

A priced test syscall (``Probe``: 0.10 USD a call, or less when it says so) is invoked
as an agent's principal attributed to a task attempt, the way a task's syscalls are;
the attempts themselves are leased and ended through the queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from kernel.helpers import Probe, default_org, make_agent, rows, table_with
from underlay import errors
from underlay.config import Config
from underlay.kernel.context import Principal
from underlay.kernel.kernel import Kernel
from underlay.orchestration import escalations
from underlay.orchestration.queue import NewTask, TaskQueue
from underlay.orchestration.syscalls import group as orchestration
from underlay.storage import schema

T0 = 1_000_000.0


@pytest.fixture
async def k(config: Config) -> AsyncIterator[Kernel]:
    kernel = await Kernel.open(config, table=table_with(orchestration, Probe().group))
    yield kernel
    await kernel.close()


async def as_agent(k: Kernel, name: str, budget: str = "10.00 USD") -> Principal:
    actor = await make_agent(k, name, ["test.work", "tasks.read"], budget=budget)
    return await k.authn.authenticate(actor.token)


async def work(k: Kernel, who: Principal, lease: Any = None, **payload: Any) -> None:
    """One priced call, attributed to ``lease``'s attempt when given."""
    if lease is not None:
        who = replace(who, task_id=lease.task_id, attempt=lease.attempt)
    await k.invoke("test.work", payload, principal=who)


async def costs(k: Kernel, by: str, token: str | None = None, **kw: Any) -> list[dict[str, Any]]:
    report: Any = await k.invoke("tasks.costs", {"by": by, **kw}, token=token or k.admin_token())
    return [r.model_dump(mode="json") for r in report.rows]


async def test_spend_per_task_per_attempt_and_per_agent_joined_with_outcomes(k: Kernel) -> None:
    org, q = default_org(k), TaskQueue(k.db)
    fixer, reviewer, idle = [await as_agent(k, n) for n in ("fixer", "reviewer", "idle")]
    admin = await k.authn.authenticate(k.admin_token())
    flaky, _ = await q.submit(NewTask(org, "q", "fix", {}, fixer.id, max_attempts=3), T0)
    doomed, _ = await q.submit(NewTask(org, "q", "fix", {}, fixer.id, max_attempts=1), T0)
    review, _ = await q.submit(NewTask(org, "q", "review", {}, reviewer.id), T0)
    ops, _ = await q.submit(NewTask(org, "q", "ops", {}, admin.id), T0)
    w = await q.register_worker("h", 1, ["q"], T0)
    first = {lease.task_id: lease for lease in await q.claim(w, ["q"], 4, T0)}

    await work(k, fixer, first[flaky])
    await work(k, fixer, first[flaky])  # attempt 1 of flaky: 0.20, then it is retried
    await q.fail(first[flaky], {"class": "transient"}, T0 + 4, retryable=True)
    await work(k, fixer, first[doomed])  # 0.10 ...
    with pytest.raises(errors.Conflict):
        await work(k, fixer, first[doomed], fail="fatal")  # ... its hold voided: no spend
    await q.fail(first[doomed], {"class": "permanent"}, T0 + 2, retryable=False)
    await work(k, reviewer, first[review], actual_cost="0.04 USD")
    await q.complete(first[review], {}, T0 + 1)
    await q.complete(first[ops], {}, T0 + 1)
    [second] = await q.claim(w, ["q"], 4, T0 + 70)
    await work(k, fixer, second)
    await work(k, fixer, second, actual_cost="0.04 USD")  # attempt 2 of flaky: 0.14
    await q.complete(second, {}, T0 + 71)
    await work(k, fixer)  # outside any task: only in the agent's own total
    await work(k, idle)  # an agent that never ran a task
    await work(k, admin)  # paid by the org: nobody's agent spend

    by_handler = {r["key"]: r for r in await costs(k, "handler")}
    assert by_handler["fix"] == {
        "key": "fix", "tasks": 2, "succeeded": 1, "attempts": 3,
        "worker_seconds": 7.0, "seconds_per_success": 7.0, "attempts_per_success": 3.0,
        "retry_tax": round(6 / 7, 4),
        "spend": "0.44 USD", "spend_per_success": "0.44 USD",
        "spend_retry_tax": round(0.30 / 0.44, 4), "agent_spend": None,
    }  # fmt: skip
    assert [by_handler["review"][c] for c in ("spend", "spend_per_success", "spend_retry_tax")] == [
        "0.04 USD", "0.04 USD", 0.0,
    ]  # fmt: skip
    assert (by_handler["ops"]["spend"], by_handler["ops"]["spend_per_success"]) == (
        "0.00 USD", "0.00 USD",
    )  # fmt: skip
    assert [r["spend"] for r in await costs(k, "queue")] == ["0.48 USD"]

    by_agent = {r["key"]: r for r in await costs(k, "agent")}
    assert set(by_agent) == {fixer.id, reviewer.id, idle.id, admin.id}
    money = ("tasks", "spend", "spend_per_success", "spend_retry_tax", "agent_spend")
    assert [by_agent[fixer.id][c] for c in money] == [
        2, "0.44 USD", "0.44 USD", 0.6818, "0.54 USD",
    ]  # fmt: skip
    assert [by_agent[reviewer.id][c] for c in money] == [
        1, "0.04 USD", "0.04 USD", 0.0, "0.04 USD",
    ]  # fmt: skip
    assert [by_agent[idle.id][c] for c in money] == [0, "0.00 USD", None, 0.0, "0.10 USD"]
    assert by_agent[idle.id]["worker_seconds"] == 0.0
    assert by_agent[admin.id]["agent_spend"] is None  # a human: its org pays

    held = await rows(k, schema.transfers, task_id=flaky)
    assert sorted((t["kind"], t["attempt"], t["amount"]) for t in held) == [
        ("pending", 1, 100_000_000), ("pending", 1, 100_000_000),
        ("pending", 2, 100_000_000), ("pending", 2, 100_000_000),
        ("post", 1, 100_000_000), ("post", 1, 100_000_000),
        ("post", 2, 40_000_000), ("post", 2, 100_000_000),
    ]  # fmt: skip
    voided = [t for t in await rows(k, schema.transfers, task_id=doomed) if t["kind"] == "void"]
    assert [(t["attempt"], t["amount"]) for t in voided] == [(1, 0)]


async def test_spend_is_budget_data_and_since_bounds_it(k: Kernel) -> None:
    org, q = default_org(k), TaskQueue(k.db)
    fixer = await as_agent(k, "fixer")
    await q.submit(NewTask(org, "q", "fix", {}, fixer.id), T0)
    [lease] = await q.claim(await q.register_worker("h", 1, ["q"], T0), ["q"], 1, T0)
    await work(k, fixer, lease)
    await q.complete(lease, {}, T0 + 1)
    reader = await make_agent(k, "reader", ["tasks.read"])
    [row] = await costs(k, "handler", token=reader.token)
    assert (row["tasks"], row["spend"], row["spend_retry_tax"]) == (1, None, None)
    assert [r["spend"] for r in await costs(k, "handler")] == ["0.10 USD"]
    assert await costs(k, "handler", since=T0 + 1) == []  # the attempt started before
    [row] = await costs(k, "agent", since=T0 + 1)  # the spend was posted after (real time)
    assert (row["key"], row["tasks"], row["spend"], row["agent_spend"]) == (
        fixer.id, 0, "0.00 USD", "0.10 USD",
    )  # fmt: skip
    assert await costs(k, "agent", since=k.clock.now() + 3600) == []


async def test_a_wait_on_a_person_and_the_resumed_lease_are_one_attempt(k: Kernel) -> None:
    org, q = default_org(k), TaskQueue(k.db)
    fixer = await as_agent(k, "fixer")
    await q.submit(NewTask(org, "q", "fix", {}, fixer.id), T0)
    w = await q.register_worker("h", 1, ["q"], T0)
    [lease] = await q.claim(w, ["q"], 1, T0)
    await work(k, fixer, lease)
    esc = await q.escalate_failure(lease, {"class": "needs_human"}, T0 + 2)
    await escalations.resolve(k.db, org, esc, {"retry": True}, "someone", T0 + 50)
    [again] = await q.claim(w, ["q"], 1, T0 + 60)
    assert again.attempt == lease.attempt == 1
    await work(k, fixer, again, actual_cost="0.05 USD")
    await q.complete(again, {}, T0 + 61)
    [row] = await costs(k, "handler")
    assert (row["attempts"], row["retry_tax"]) == (2, round(2 / 3, 4))  # leases, worker time
    assert (row["spend"], row["spend_per_success"], row["spend_retry_tax"]) == (
        "0.15 USD", "0.15 USD", 0.0,
    )  # fmt: skip


async def test_unattributed_calls_are_charged_as_before(k: Kernel) -> None:
    fixer = await as_agent(k, "fixer", budget="0.15 USD")
    await work(k, fixer)
    with pytest.raises(errors.BudgetExceeded):
        await work(k, replace(fixer, task_id="task_x", attempt=1))  # attribution grants nothing
    spent = await rows(k, schema.transfers, memo="test.work")
    assert {(t["kind"], t["task_id"], t["attempt"]) for t in spent} == {
        ("pending", None, None), ("post", None, None),
    }  # fmt: skip
    assert await costs(k, "handler") == []
