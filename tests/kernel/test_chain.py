"""The invoke chain: its order, and what each step guarantees to the next."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.helpers import (
    CHAIN,
    OpenKernel,
    Probe,
    audit_events,
    balance,
    count,
    default_org,
    make_agent,
    rows,
    usd,
)
from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.storage import schema


@pytest.fixture
def probe() -> Probe:
    return Probe(cost="0.10 USD")


@pytest.fixture
async def k(open_kernel: OpenKernel, probe: Probe) -> Kernel:
    return await open_kernel(probe.group)


async def hold_rows(k: Kernel) -> list[dict[str, Any]]:
    return [t for t in await rows(k, schema.transfers) if t["id"].startswith("hold:")]


async def test_costed_mutating_call_runs_every_step_in_order(k: Kernel, probe: Probe) -> None:
    worker = await make_agent(k, "worker", ["test.*"], budget="1.00 USD")
    trail: list[str] = []
    out: Any = await k.invoke("test.work", {"text": "hi"}, token=worker.token, trail=trail)
    assert trail == CHAIN
    assert (out.text, out.run, probe.runs) == ("hi", 1, 1)
    bal = await balance(k, worker.id)
    assert (bal.posted, bal.pending, bal.available) == (usd("0.90"), usd("0"), usd("0.90"))
    holds = await hold_rows(k)
    assert sorted(h["kind"] for h in holds) == ["pending", "post"]
    [event] = await audit_events(k, syscall="test.work")
    assert (event["outcome"], event["actor_id"], event["actor_kind"]) == ("ok", worker.id, "agent")
    assert event["detail"]["cost"] == "0.10 USD"
    assert event["detail"]["input"]["text"] == "hi"
    assert event["detail"]["result"] == {"run": 1}
    assert len(event["trace_id"]) == 32


async def test_read_only_call_passes_every_step_and_is_not_audited(kernel: Kernel) -> None:
    trail: list[str] = []
    await kernel.invoke("system.noop", {}, token=kernel.admin_token(), trail=trail)
    assert trail == CHAIN
    assert await audit_events(kernel, syscall="system.noop") == []


async def test_read_only_call_is_audited_when_configured(
    open_kernel: OpenKernel, config: Any
) -> None:
    k = await open_kernel(config=config.model_copy(update={"audit_reads": True}))
    await k.invoke("system.noop", None, token=k.admin_token())
    [event] = await audit_events(k, syscall="system.noop")
    assert event["outcome"] == "ok"


async def test_denial_happens_before_any_budget_hold(k: Kernel, probe: Probe) -> None:
    outsider = await make_agent(k, "outsider", ["system.*"], budget="1.00 USD")
    trail: list[str] = []
    with pytest.raises(errors.PermissionDenied) as caught:
        await k.invoke("test.work", {}, token=outsider.token, trail=trail)
    assert caught.value.code == "permission_denied"
    assert trail == CHAIN[:4]  # stopped at authorize
    assert probe.runs == 0
    assert await hold_rows(k) == []
    assert (await balance(k, outsider.id)).available == usd("1.00")
    [event] = await audit_events(k, syscall="test.work")
    assert (event["outcome"], event["error_code"]) == ("denied", "permission_denied")


async def test_budget_exceeded_never_runs_the_handler(k: Kernel, probe: Probe) -> None:
    poor = await make_agent(k, "poor", ["test.work"], budget="0.05 USD")
    broke = await make_agent(k, "broke", ["test.work"])
    for who in (poor, broke):
        trail: list[str] = []
        with pytest.raises(errors.BudgetExceeded) as caught:
            await k.invoke("test.work", {}, token=who.token, trail=trail)
        assert caught.value.code == "budget_exceeded"
        assert trail == CHAIN[:6]  # stopped at budget
    assert probe.runs == 0
    assert await hold_rows(k) == []
    assert (await balance(k, poor.id)).available == usd("0.05")
    events = await audit_events(k, syscall="test.work")
    assert [(e["actor_id"], e["error_code"]) for e in events] == [
        (poor.id, "budget_exceeded"), (broke.id, "budget_exceeded"),
    ]


async def test_failing_handler_voids_its_hold_and_audits_the_error(k: Kernel, probe: Probe) -> None:
    worker = await make_agent(k, "worker", ["test.work"], budget="1.00 USD")
    with pytest.raises(errors.Conflict):
        await k.invoke("test.work", {"fail": "fatal"}, token=worker.token)
    assert probe.runs == 1
    assert sorted(h["kind"] for h in await hold_rows(k)) == ["pending", "void"]
    bal = await balance(k, worker.id)
    assert (bal.posted, bal.pending) == (usd("1.00"), usd("0"))
    [event] = await audit_events(k, syscall="test.work")
    assert (event["outcome"], event["error_code"]) == ("error", "conflict")
    assert "cost" not in event["detail"]


async def test_a_crashing_handler_is_an_internal_error_that_leaks_nothing(
    k: Kernel, probe: Probe
) -> None:
    worker = await make_agent(k, "worker", ["test.work"], budget="1.00 USD")
    with pytest.raises(errors.InternalError) as caught:
        await k.invoke("test.work", {"fail": "crash"}, token=worker.token)
    assert "s3cr3t" not in str(caught.value) and "s3cr3t" not in str(caught.value.to_dict())
    assert (await balance(k, worker.id)).available == usd("1.00")
    [event] = await audit_events(k, syscall="test.work")
    assert event["error_code"] == "internal"
    assert "s3cr3t" not in str(event)


async def test_handler_may_post_less_than_was_held_never_more(k: Kernel) -> None:
    worker = await make_agent(k, "worker", ["test.work"], budget="1.00 USD")
    await k.invoke("test.work", {"actual_cost": "0.04 USD"}, token=worker.token)
    assert (await balance(k, worker.id)).available == usd("0.96")
    await k.invoke("test.work", {"actual_cost": "0.50 USD"}, token=worker.token)
    assert (await balance(k, worker.id)).available == usd("0.86")  # capped at the 0.10 held
    costs = [e["detail"]["cost"] for e in await audit_events(k, syscall="test.work")]
    assert costs == ["0.04 USD", "0.10 USD"]


async def test_a_human_caller_is_charged_to_the_org_account(k: Kernel) -> None:
    org = default_org(k)
    await k.invoke("test.work", {}, token=k.admin_token())
    bal = await k.ledger.balance(org, ("org", org), "USD")
    assert bal.posted == usd("-0.10")
    assert (await k.ledger.balance(org, ("usage", org), "USD")).posted == usd("0.10")


async def test_unauthenticated_calls_stop_before_audit(k: Kernel) -> None:
    for token in (None, "", "not-a-token", "ul_" + "x" * 43, "ul_" + "y" * 300):
        trail: list[str] = []
        with pytest.raises(errors.Unauthenticated) as caught:
            await k.invoke("test.work", {}, token=token, trail=trail)
        assert caught.value.code == "unauthenticated"
        assert trail == ["trace", "authenticate"]
    assert await count(k, schema.audit_events) == 0
    assert await hold_rows(k) == []


async def test_a_replayed_call_stops_at_idempotency_and_is_audited_as_replayed(
    k: Kernel, probe: Probe
) -> None:
    worker = await make_agent(k, "worker", ["test.work"], budget="1.00 USD")
    first: Any = await k.invoke(
        "test.work", {"text": "a"}, token=worker.token, idempotency_key="k1"
    )
    trail: list[str] = []
    again: Any = await k.invoke(
        "test.work", {"text": "a"}, token=worker.token, idempotency_key="k1", trail=trail
    )
    assert trail == CHAIN[:5]
    assert again == first and probe.runs == 1
    assert (await balance(k, worker.id)).available == usd("0.90")  # charged once
    outcomes = [e["outcome"] for e in await audit_events(k, syscall="test.work")]
    assert outcomes == ["ok", "replayed"]


async def test_unknown_syscall_is_not_found(kernel: Kernel) -> None:
    with pytest.raises(errors.NotFound) as caught:
        await kernel.invoke("nope.nothing", {}, token=kernel.admin_token())
    assert caught.value.field == "syscall"


async def test_nested_invoke_is_authorized_and_audited_like_any_call(kernel: Kernel) -> None:
    """agents.create with a budget funds the agent through budget.fund, via the kernel."""
    funded = await make_agent(kernel, "funded", budget="2.50 USD")
    assert (await balance(kernel, funded.id)).available == usd("2.50")
    [fund] = await audit_events(kernel, syscall="budget.fund")
    [create] = await audit_events(kernel, syscall="agents.create")
    assert fund["outcome"] == "ok" and fund["detail"]["result"]["to"] == funded.id
    assert fund["seq"] < create["seq"]  # the inner call finishes (and is audited) first
