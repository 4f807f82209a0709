"""Every syscall of the builtin table is guarded: by its capability, by operator status, or
(for ``self`` syscalls) by being an authenticated agent or human at all."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.helpers import CHAIN, audit_events, make_agent, make_org
from underlay import errors
from underlay.kernel.context import SELF
from underlay.kernel.kernel import Kernel
from underlay.kernel.syscall import Syscall


def guarded(k: Kernel) -> list[Syscall]:
    return [sc for sc in k.table if sc.capability != SELF and not sc.operator_only]


async def test_the_builtin_table_has_all_three_kinds_of_guard(kernel: Kernel) -> None:
    kinds = {
        "capability": guarded(kernel),
        "operator": [sc for sc in kernel.table if sc.operator_only],
        "self": [sc for sc in kernel.table if sc.capability == SELF],
    }
    assert all(kinds.values()), kinds
    assert sum(len(v) for v in kinds.values()) == len(kernel.table)


async def test_every_capability_guarded_syscall_denies_an_agent_without_it(kernel: Kernel) -> None:
    nobody = await make_agent(kernel, "nobody")  # no capabilities at all
    names = [sc.name for sc in guarded(kernel)]
    for name in names:
        trail: list[str] = []
        with pytest.raises(errors.PermissionDenied) as caught:
            await kernel.invoke(name, {}, token=nobody.token, trail=trail)
        assert caught.value.code == "permission_denied", name
        assert trail == CHAIN[:4], name
    denied = await audit_events(kernel, actor_id=nobody.id)
    assert [(e["syscall"], e["outcome"], e["error_code"]) for e in denied] == [
        (name, "denied", "permission_denied") for name in names
    ]


async def test_every_capability_guarded_syscall_admits_an_agent_holding_it(kernel: Kernel) -> None:
    """The positive control: holding exactly the capability gets a call past authorize."""
    for i, sc in enumerate(guarded(kernel)):
        holder = await make_agent(kernel, f"holder-{i}", [sc.capability])
        trail: list[str] = []
        try:
            await kernel.invoke(sc.name, {}, token=holder.token, trail=trail)
        except errors.PermissionDenied:
            assert "handler" in trail, f"{sc.name} denied at authorize despite {sc.capability}"
        except errors.UnderlayError as exc:
            assert exc.code in ("invalid_input", "not_found"), (sc.name, exc)


async def test_an_empty_token_scope_denies_every_guarded_syscall_even_to_an_admin(
    kernel: Kernel,
) -> None:
    issued: Any = await kernel.invoke(
        "tokens.create", {"kind": "human", "scopes": []}, token=kernel.admin_token()
    )
    scoped = issued.token.get_secret_value()
    for sc in guarded(kernel):
        with pytest.raises(errors.PermissionDenied):
            await kernel.invoke(sc.name, {}, token=scoped)
    me: Any = await kernel.invoke("self.whoami", {}, token=scoped)  # self needs no scope
    assert me.kind == "human" and me.scopes == []


async def test_operator_only_syscalls_are_denied_to_another_orgs_admin(kernel: Kernel) -> None:
    operator_only = [sc.name for sc in kernel.table if sc.operator_only]
    other = await make_org(kernel, "other")
    me: Any = await kernel.invoke("self.whoami", {}, token=other.token)
    assert me.capabilities == ["*"] and not me.is_operator
    for name in operator_only:
        with pytest.raises(errors.PermissionDenied):
            await kernel.invoke(name, {"name": "sneaky"}, token=other.token)
    denied = await audit_events(kernel, org_id=other.org_id)
    assert [(e["syscall"], e["outcome"]) for e in denied] == [
        (name, "denied") for name in operator_only
    ]
    mine = await audit_events(kernel)  # the operator's org saw only its own orgs.create
    assert [(e["syscall"], e["outcome"]) for e in mine] == [("orgs.create", "ok")]


async def test_operator_only_syscalls_are_denied_to_agents_holding_the_capability(
    kernel: Kernel,
) -> None:
    for sc in kernel.table:
        if sc.operator_only:
            agent = await make_agent(kernel, f"wannabe-{sc.name}", [sc.capability])
            with pytest.raises(errors.PermissionDenied):
                await kernel.invoke(sc.name, {"name": "sneaky"}, token=agent.token)


async def test_self_syscalls_are_refused_to_an_enrollment_token(kernel: Kernel) -> None:
    issued: Any = await kernel.invoke(
        "tokens.create", {"kind": "enrollment"}, token=kernel.admin_token()
    )
    enrollment = issued.token.get_secret_value()
    selfish = [sc.name for sc in kernel.table if sc.capability == SELF]
    for name in selfish:
        with pytest.raises(errors.PermissionDenied):
            await kernel.invoke(name, {}, token=enrollment)
    for sc in guarded(kernel):  # and everything but agents.enroll is out of reach
        if sc.name != "agents.enroll":
            with pytest.raises(errors.PermissionDenied):
                await kernel.invoke(sc.name, {}, token=enrollment)


async def test_self_syscalls_are_open_to_any_agent(kernel: Kernel) -> None:
    nobody = await make_agent(kernel, "nobody")
    me: Any = await kernel.invoke("self.whoami", {}, token=nobody.token)
    assert (me.kind, me.id, me.capabilities) == ("agent", nobody.id, [])
    bal: Any = await kernel.invoke("budget.balance", {}, token=nobody.token)
    assert str(bal.available) == "0.00 USD"


async def test_agents_enroll_needs_an_enrollment_token_even_for_an_admin(kernel: Kernel) -> None:
    with pytest.raises(errors.PermissionDenied):
        await kernel.invoke("agents.enroll", {"name": "x"}, token=kernel.admin_token())
