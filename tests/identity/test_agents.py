"""Agents: creation with identity, capabilities and budget; delegation only of what is held."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.helpers import balance, count, make_agent, usd
from underlay import errors
from underlay.identity.service import acting_agent
from underlay.kernel.context import Principal, covered_by
from underlay.kernel.kernel import Kernel
from underlay.storage import schema


async def test_create_get_and_list(kernel: Kernel) -> None:
    admin = kernel.admin_token()
    made: Any = await kernel.invoke(
        "agents.create",
        {"name": "fixer", "capabilities": ["sandbox.*"], "metadata": {"team": "ci"}},
        token=admin,
    )
    assert (made.status, made.capabilities) == ("active", ["sandbox.*"])
    assert made.metadata == {"team": "ci"}
    assert made.did.startswith("did:key:z6Mk")
    by_name: Any = await kernel.invoke("agents.get", {"agent": "fixer"}, token=admin)
    by_id: Any = await kernel.invoke("agents.get", {"agent": made.id}, token=admin)
    assert by_name == by_id == made
    with pytest.raises(errors.NotFound) as caught:
        await kernel.invoke("agents.get", {"agent": "nobody"}, token=admin)
    assert caught.value.field == "agent"


async def test_list_pages_with_a_cursor(kernel: Kernel) -> None:
    admin = kernel.admin_token()
    for i in range(5):
        await kernel.invoke("agents.create", {"name": f"a{i}"}, token=admin)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page: Any = await kernel.invoke("agents.list", {"limit": 2, "cursor": cursor}, token=admin)
        seen += [a.name for a in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == [f"a{i}" for i in range(5)] and len(seen) == 5 and pages == 3


async def test_names_are_unique_in_an_org(kernel: Kernel) -> None:
    await kernel.invoke("agents.create", {"name": "dup"}, token=kernel.admin_token())
    with pytest.raises(errors.Conflict) as caught:
        await kernel.invoke("agents.create", {"name": "dup"}, token=kernel.admin_token())
    assert caught.value.field == "name"
    assert await count(kernel, schema.agents, name="dup") == 1


async def test_a_budget_is_funded_from_the_org(kernel: Kernel) -> None:
    agent = await make_agent(kernel, "rich", budget="5.00 USD")
    assert (await balance(kernel, agent.id)).available == usd("5.00")
    org = agent.org_id
    assert (await kernel.ledger.balance(org, ("org", org), "USD")).posted == usd("-5.00")


async def test_a_budget_in_another_currency_leaves_no_half_made_agent(kernel: Kernel) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        await kernel.invoke(
            "agents.create", {"name": "euro", "budget": "5.00 EUR"}, token=kernel.admin_token()
        )
    assert caught.value.field == "amount"
    assert await count(kernel, schema.agents, name="euro") == 0
    assert await count(kernel, schema.accounts, owner_kind="agent") == 0


async def test_an_agent_cannot_create_an_agent_with_capabilities_it_lacks(kernel: Kernel) -> None:
    parent = await make_agent(kernel, "parent", ["agents.create", "sandbox.*", "memory.read"])
    for caps in (["budget.fund"], ["*"], ["sandbox.*", "tools.*"], ["memory.*"], ["agents.*"]):
        with pytest.raises(errors.PermissionDenied) as caught:
            await kernel.invoke(
                "agents.create", {"name": "child", "capabilities": caps}, token=parent.token
            )
        assert caught.value.field == "capabilities"
    assert await count(kernel, schema.agents, name="child") == 0
    child: Any = await kernel.invoke(
        "agents.create",
        {"name": "child", "capabilities": ["sandbox.exec", "sandbox.files.*", "memory.read"]},
        token=parent.token,
    )
    assert child.created_by == parent.id


async def test_a_scoped_token_delegates_only_what_its_scope_allows(kernel: Kernel) -> None:
    parent = await make_agent(
        kernel, "parent", ["agents.create", "sandbox.*"], scopes=["agents.create"]
    )
    with pytest.raises(errors.PermissionDenied):
        await kernel.invoke(
            "agents.create", {"name": "c", "capabilities": ["sandbox.exec"]}, token=parent.token
        )


async def test_an_agent_pays_for_its_childs_budget_from_its_own(kernel: Kernel) -> None:
    parent = await make_agent(kernel, "parent", ["agents.create", "budget.grant"], "1.00 USD")
    child: Any = await kernel.invoke(
        "agents.create", {"name": "child", "budget": "0.40 USD"}, token=parent.token
    )
    assert (await balance(kernel, parent.id)).available == usd("0.60")
    assert (await balance(kernel, child.id)).available == usd("0.40")
    with pytest.raises(errors.BudgetExceeded):
        await kernel.invoke(
            "agents.create", {"name": "greedy", "budget": "0.61 USD"}, token=parent.token
        )
    assert await count(kernel, schema.agents, name="greedy") == 0
    assert (await balance(kernel, parent.id)).available == usd("0.60")


@pytest.mark.parametrize(
    ("held", "requested", "ok"),
    [
        (("sandbox.*",), "sandbox.exec", True),
        (("sandbox.*",), "sandbox.files.*", True),
        (("sandbox.*",), "sandbox.*", True),
        (("*",), "anything.at.all", True),
        (("*",), "*", True),
        (("sandbox.exec",), "sandbox.*", False),
        (("sandbox.*",), "*", False),
        (("sandbox.*",), "sandbox", False),
        (("tools.?",), "tools.*", False),  # '?' matches the literal '*' but not all it grants
        (("tools.?",), "tools.x", True),
        (("[st]*",), "*", False),
        (("a?c",), "a?c", True),
    ],
)
def test_delegation_covers_only_what_is_held(
    held: tuple[str, ...], requested: str, ok: bool
) -> None:
    assert covered_by(requested, held) is ok


def test_scopes_that_exceed_capabilities_grant_nothing() -> None:
    p = Principal(
        kind="agent", id="a", org_id="o", capabilities=("sandbox.exec",), scopes=("sandbox.*",)
    )
    assert p.allows("sandbox.exec") and not p.allows("sandbox.files")
    assert p.effective_capabilities == ()
    q = Principal(kind="agent", id="a", org_id="o", capabilities=("sandbox.*",),
                  scopes=("sandbox.exec", "memory.*"))
    assert q.effective_capabilities == ("sandbox.exec",)


async def test_disable_keeps_the_record(kernel: Kernel) -> None:
    agent = await make_agent(kernel, "a", budget="1.00 USD")
    await kernel.invoke("agents.disable", {"agent": agent.id}, token=kernel.admin_token())
    got: Any = await kernel.invoke("agents.get", {"agent": "a"}, token=kernel.admin_token())
    assert got.status == "disabled"
    assert (await balance(kernel, agent.id)).available == usd("1.00")


async def test_acting_agent_is_the_active_agent_with_its_task(kernel: Kernel) -> None:
    agent = await make_agent(kernel, "worker", ["memory.*"])
    assert kernel.bootstrap_info is not None
    org = kernel.bootstrap_info.org_id
    async with kernel.db.read() as conn:
        acting = await acting_agent(conn, org, agent.id, task_id="t1", attempt=2)
        elsewhere = await acting_agent(conn, "another-org", agent.id)
    assert acting is not None
    assert (acting.kind, acting.id, acting.org_id) == ("agent", agent.id, org)
    assert (acting.capabilities, acting.task_id, acting.attempt) == (("memory.*",), "t1", 2)
    assert elsewhere is None  # an id from another org is nobody
    await kernel.invoke("agents.disable", {"agent": agent.id}, token=kernel.admin_token())
    async with kernel.db.read() as conn:
        assert await acting_agent(conn, org, agent.id) is None
