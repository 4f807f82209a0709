"""Budget syscalls: balance, fund, grant between agents, transfer history."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.helpers import audit_events, balance, count, make_agent, rows, usd
from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.storage import schema


async def test_fund_moves_budget_from_the_org_to_an_agent(kernel: Kernel) -> None:
    agent = await make_agent(kernel, "a")
    out: Any = await kernel.invoke(
        "budget.fund", {"to": "a", "amount": "2.50 USD", "memo": "weekly"},
        token=kernel.admin_token(),
    )
    assert (out.kind, str(out.amount), out.memo) == ("single", "2.50 USD", "weekly")
    bal: Any = await kernel.invoke("budget.balance", {}, token=agent.token)
    assert (bal.owner, str(bal.posted), str(bal.available)) == (
        f"agent:{agent.id}", "2.50 USD", "2.50 USD",
    )
    [event] = await audit_events(kernel, syscall="budget.fund")
    assert event["detail"]["result"] == {"transfer_id": out.id, "to": agent.id}


async def test_a_currency_mismatch_is_invalid_input(kernel: Kernel) -> None:
    await make_agent(kernel, "a")
    with pytest.raises(errors.InvalidInput) as caught:
        await kernel.invoke(
            "budget.fund", {"to": "a", "amount": "2.50 EUR"}, token=kernel.admin_token()
        )
    assert (caught.value.code, caught.value.field) == ("invalid_input", "amount")
    assert await count(kernel, schema.transfers) == 0


async def test_a_client_chosen_transfer_id_makes_funding_replayable(kernel: Kernel) -> None:
    agent = await make_agent(kernel, "a")
    body = {"to": "a", "amount": "1.00 USD", "transfer_id": "invoice-17"}
    first: Any = await kernel.invoke("budget.fund", body, token=kernel.admin_token())
    again: Any = await kernel.invoke("budget.fund", body, token=kernel.admin_token())
    assert first == again
    assert (await balance(kernel, agent.id)).available == usd("1.00")
    with pytest.raises(errors.Conflict):
        await kernel.invoke(
            "budget.fund", {**body, "amount": "9.00 USD"}, token=kernel.admin_token()
        )


async def test_an_idempotency_key_names_the_transfer(kernel: Kernel) -> None:
    agent = await make_agent(kernel, "a")
    out: Any = await kernel.invoke(
        "budget.fund", {"to": "a", "amount": "1 USD"}, token=kernel.admin_token(),
        idempotency_key="pay-1",
    )
    assert out.id == "fund:pay-1"
    assert (await balance(kernel, agent.id)).available == usd("1")


async def test_grant_between_agents(kernel: Kernel) -> None:
    giver = await make_agent(kernel, "giver", ["budget.grant"], budget="5.00 USD")
    taker = await make_agent(kernel, "taker")
    out: Any = await kernel.invoke(
        "budget.grant", {"to": "taker", "amount": "1.50 USD"}, token=giver.token
    )
    assert out.kind == "single"
    assert (await balance(kernel, giver.id)).available == usd("3.50")
    assert (await balance(kernel, taker.id)).available == usd("1.50")
    history: Any = await kernel.invoke("budget.transfers", {}, token=taker.token)
    assert [str(t.amount) for t in history.items] == ["1.50 USD"]


async def test_granting_more_than_available_is_budget_exceeded(kernel: Kernel) -> None:
    giver = await make_agent(kernel, "giver", ["budget.grant"], budget="1.00 USD")
    await make_agent(kernel, "taker")
    before = await count(kernel, schema.transfers)
    with pytest.raises(errors.BudgetExceeded) as caught:
        await kernel.invoke(
            "budget.grant", {"to": "taker", "amount": "1.01 USD"}, token=giver.token
        )
    assert caught.value.code == "budget_exceeded"
    assert await count(kernel, schema.transfers) == before
    assert (await balance(kernel, giver.id)).available == usd("1.00")


async def test_an_agent_cannot_grant_to_itself(kernel: Kernel) -> None:
    giver = await make_agent(kernel, "giver", ["budget.grant"], budget="1.00 USD")
    with pytest.raises(errors.InvalidInput):
        await kernel.invoke("budget.grant", {"to": "giver", "amount": "0.5 USD"}, token=giver.token)


async def test_reading_another_agents_budget_needs_budget_read(kernel: Kernel) -> None:
    reader = await make_agent(kernel, "reader", ["budget.read"])
    nosy = await make_agent(kernel, "nosy")
    target = await make_agent(kernel, "target", budget="2.00 USD")
    bal: Any = await kernel.invoke("budget.balance", {"agent": "target"}, token=reader.token)
    assert str(bal.available) == "2.00 USD"
    for syscall in ("budget.balance", "budget.transfers"):
        with pytest.raises(errors.PermissionDenied):
            await kernel.invoke(syscall, {"agent": "target"}, token=nosy.token)
    mine: Any = await kernel.invoke("budget.balance", {"agent": "nosy"}, token=nosy.token)
    assert mine.owner == f"agent:{nosy.id}"
    assert target.id


async def test_transfers_page_oldest_first(kernel: Kernel) -> None:
    agent = await make_agent(kernel, "a")
    for i in range(5):
        await kernel.invoke(
            "budget.fund", {"to": "a", "amount": f"{i + 1}.00 USD"}, token=kernel.admin_token()
        )
    amounts: list[str] = []
    cursor = None
    while True:
        page: Any = await kernel.invoke(
            "budget.transfers", {"limit": 2, "cursor": cursor}, token=agent.token
        )
        amounts += [str(t.amount) for t in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert amounts == [f"{i}.00 USD" for i in range(1, 6)]


async def test_the_org_account_is_the_admins_payer(kernel: Kernel) -> None:
    await make_agent(kernel, "a", budget="3.00 USD")
    bal: Any = await kernel.invoke("budget.balance", {}, token=kernel.admin_token())
    assert bal.owner.startswith("org:") and str(bal.posted) == "-3.00 USD"
    history: Any = await kernel.invoke("budget.transfers", {}, token=kernel.admin_token())
    assert [t.kind for t in history.items] == ["single"]
    assert len(await rows(kernel, schema.transfers)) == 1
