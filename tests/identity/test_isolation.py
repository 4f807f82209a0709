"""Cross-org isolation: another org's objects are NotFound, never data, never mutable."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.helpers import Actor, audit_events, balance, make_agent, make_org, rows, usd
from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.storage import schema


@pytest.fixture
async def world(kernel: Kernel) -> dict[str, Any]:
    """Org A (default) with an agent, a token and a transfer; org B with its own agent."""
    a_agent = await make_agent(kernel, "shared-name", ["budget.*"], budget="3.00 USD")
    a_token: Any = await kernel.invoke(
        "tokens.create", {"kind": "agent", "subject": a_agent.id, "name": "a-spare"},
        token=kernel.admin_token(),
    )
    b_admin = await make_org(kernel, "org-b")
    b_agent = await make_agent(kernel, "b-agent", ["budget.*"], "1.00 USD", token=b_admin.token)
    return {"a": a_agent, "a_token": a_token.info, "b": b_admin, "b_agent": b_agent}


NOT_FOUND_CALLS = [
    ("agents.get", lambda w: {"agent": w["a"].id}),
    ("agents.get", lambda w: {"agent": w["a"].name}),
    ("agents.disable", lambda w: {"agent": w["a"].id}),
    ("agents.disable", lambda w: {"agent": w["a"].name}),
    ("tokens.revoke", lambda w: {"token_id": w["a_token"].id}),
    ("tokens.create", lambda w: {"kind": "agent", "subject": w["a"].id}),
    ("tokens.list", lambda w: {"subject": w["a"].id}),
    ("budget.balance", lambda w: {"agent": w["a"].id}),
    ("budget.transfers", lambda w: {"agent": w["a"].id}),
    ("budget.fund", lambda w: {"to": w["a"].id, "amount": "1.00 USD"}),
]


async def test_org_b_admin_gets_not_found_for_org_a_objects(
    kernel: Kernel, world: dict[str, Any]
) -> None:
    b: Actor = world["b"]
    for syscall, body in NOT_FOUND_CALLS:
        with pytest.raises(errors.NotFound) as caught:
            await kernel.invoke(syscall, body(world), token=b.token)
        leaked = str(caught.value.to_dict())
        assert world["a"].org_id not in leaked and str(world["a"].did) not in leaked, syscall
        assert "3.00" not in leaked, syscall
    await assert_org_a_untouched(kernel, world)


async def test_org_b_agent_cannot_reach_org_a(kernel: Kernel, world: dict[str, Any]) -> None:
    b_agent: Actor = world["b_agent"]
    a: Actor = world["a"]
    with pytest.raises(errors.NotFound):
        await kernel.invoke("budget.grant", {"to": a.id, "amount": "0.50 USD"}, token=b_agent.token)
    with pytest.raises(errors.NotFound):
        await kernel.invoke("budget.balance", {"agent": a.name}, token=b_agent.token)
    assert (await balance(kernel, b_agent.id, b_agent.org_id)).available == usd("1.00")


async def assert_org_a_untouched(kernel: Kernel, world: dict[str, Any]) -> None:
    a: Actor = world["a"]
    got: Any = await kernel.invoke("agents.get", {"agent": a.id}, token=kernel.admin_token())
    assert got.status == "active"
    [tok] = await rows(kernel, schema.tokens, id=world["a_token"].id)
    assert tok["revoked_at"] is None
    assert (await balance(kernel, a.id)).available == usd("3.00")
    me: Any = await kernel.invoke("self.whoami", {}, token=a.token)
    assert me.id == a.id


async def test_lists_show_only_the_callers_org(kernel: Kernel, world: dict[str, Any]) -> None:
    b: Actor = world["b"]
    agents: Any = await kernel.invoke("agents.list", {}, token=b.token)
    assert [x.name for x in agents.items] == ["b-agent"]
    tokens: Any = await kernel.invoke("tokens.list", {"include_revoked": True}, token=b.token)
    assert world["a_token"].id not in {t.id for t in tokens.items}
    assert all(t.subject_id in (b.id, world["b_agent"].id) for t in tokens.items)
    transfers: Any = await kernel.invoke("budget.transfers", {}, token=world["b_agent"].token)
    assert [str(t.amount) for t in transfers.items] == ["1.00 USD"]
    tail: Any = await kernel.invoke("audit.tail", {"limit": 1000}, token=b.token)
    assert tail.items and all(e.actor_id in (b.id, "system") for e in tail.items)
    a_events = {e["hash"] for e in await audit_events(kernel)}
    assert a_events.isdisjoint({e.hash for e in tail.items})


async def test_the_same_name_in_two_orgs_names_two_agents(
    kernel: Kernel, world: dict[str, Any]
) -> None:
    b: Actor = world["b"]
    theirs: Any = await kernel.invoke("agents.create", {"name": "shared-name"}, token=b.token)
    assert theirs.id != world["a"].id
    got: Any = await kernel.invoke("agents.get", {"agent": "shared-name"}, token=b.token)
    assert got.id == theirs.id and got.org_id == b.org_id


async def test_idempotency_keys_do_not_cross_orgs(kernel: Kernel, world: dict[str, Any]) -> None:
    b: Actor = world["b"]
    mine: Any = await kernel.invoke(
        "agents.create", {"name": "k"}, token=kernel.admin_token(), idempotency_key="same"
    )
    theirs: Any = await kernel.invoke(
        "agents.create", {"name": "k"}, token=b.token, idempotency_key="same"
    )
    assert mine.id != theirs.id and theirs.org_id == b.org_id


async def test_the_ledger_refuses_another_orgs_hold(kernel: Kernel, world: dict[str, Any]) -> None:
    a: Actor = world["a"]
    await kernel.ledger.transfer(
        a.org_id, "hold-a", ("agent", a.id), ("usage", a.org_id), usd("1.00"), pending_ttl=60
    )
    with pytest.raises(errors.NotFound):
        await kernel.ledger.resolve(world["b"].org_id, "hold-a", void=True)
    with pytest.raises(errors.NotFound):  # nor can it name org A's accounts
        await kernel.ledger.transfer(
            world["b"].org_id, "steal", ("agent", a.id), ("usage", world["b"].org_id), usd("1")
        )
    assert (await balance(kernel, a.id)).pending == usd("1.00")
