"""Self-signup: an enrollment token registers agents within the limits an admin set."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kernel.helpers import OpenKernel, audit_events, balance, count, rows, usd
from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.storage import schema


async def enrollment_token(k: Kernel, **limits: Any) -> tuple[str, Any]:
    issued: Any = await k.invoke(
        "tokens.create", {"kind": "enrollment", "name": "signup", "limits": limits},
        token=k.admin_token(),
    )
    return issued.token.get_secret_value(), issued.info


async def enroll(k: Kernel, token: str, name: str, **body: Any) -> Any:
    return await k.invoke("agents.enroll", {"name": name, **body}, token=token)


async def test_an_enrolled_agent_gets_an_identity_and_a_working_token(kernel: Kernel) -> None:
    token, info = await enrollment_token(kernel, max_agents=1, capabilities=["sandbox.*"])
    assert info.limits["max_agents"] == 1
    made = await enroll(kernel, token, "newbie", capabilities=["sandbox.exec"])
    assert made.agent.created_by == info.id and made.agent.capabilities == ["sandbox.exec"]
    own = made.token.get_secret_value()
    me: Any = await kernel.invoke("self.whoami", {}, token=own)
    assert (me.kind, me.id, me.did) == ("agent", made.agent.id, made.agent.did)
    sig: Any = await kernel.invoke("keys.sign", {"message": "hello"}, token=own)
    assert sig.did == made.agent.did
    [event] = await audit_events(kernel, syscall="agents.enroll")
    assert (event["actor_kind"], event["actor_id"]) == ("enrollment", info.id)


async def test_an_enrollment_token_registers_up_to_max_agents(kernel: Kernel) -> None:
    token, info = await enrollment_token(kernel, max_agents=3)
    for i in range(3):
        await enroll(kernel, token, f"e{i}")
    with pytest.raises(errors.LimitExceeded) as caught:
        await enroll(kernel, token, "e3")
    assert caught.value.code == "limit_exceeded"
    assert await count(kernel, schema.agents, created_by=info.id) == 3
    [row] = await rows_of(kernel, info.id)
    assert row["uses"] == 3


async def rows_of(k: Kernel, token_id: str) -> list[dict[str, Any]]:
    return await rows(k, schema.tokens, id=token_id)


async def test_a_failed_enrollment_does_not_use_up_a_place(kernel: Kernel) -> None:
    token, info = await enrollment_token(kernel, max_agents=1)
    await kernel.invoke("agents.create", {"name": "taken"}, token=kernel.admin_token())
    with pytest.raises(errors.Conflict):
        await enroll(kernel, token, "taken")
    await enroll(kernel, token, "free")
    assert (await rows_of(kernel, info.id))[0]["uses"] == 1


async def test_concurrent_enrollments_never_exceed_max_agents(kernel: Kernel) -> None:
    token, info = await enrollment_token(kernel, max_agents=5)
    results = await asyncio.gather(
        *(enroll(kernel, token, f"c{i}") for i in range(20)), return_exceptions=True
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(made) == 5
    assert all(isinstance(e, errors.LimitExceeded) for e in failed), failed
    assert await count(kernel, schema.agents, created_by=info.id) == 5


async def test_concurrent_enrollments_from_two_processes(open_kernel: OpenKernel) -> None:
    k1, k2 = await open_kernel(), await open_kernel()
    token, info = await enrollment_token(k1, max_agents=4)
    results = await asyncio.gather(
        *(enroll(kk, token, f"p{i}-{j}") for i in range(6) for j, kk in enumerate((k1, k2))),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 4
    assert all(isinstance(r, errors.LimitExceeded) for r in results if isinstance(r, BaseException))
    assert await count(k2, schema.agents, created_by=info.id) == 4


async def test_capabilities_outside_the_limits_are_denied(kernel: Kernel) -> None:
    token, info = await enrollment_token(kernel, max_agents=5, capabilities=["sandbox.*"])
    for caps in (["memory.add"], ["sandbox.*", "tools.*"], ["*"]):
        with pytest.raises(errors.PermissionDenied) as caught:
            await enroll(kernel, token, "x", capabilities=caps)
        assert caught.value.field == "capabilities"
    bare, _ = await enrollment_token(kernel, max_agents=5)  # no capabilities allowed at all
    with pytest.raises(errors.PermissionDenied):
        await enroll(kernel, bare, "y", capabilities=["sandbox.exec"])
    assert (await rows_of(kernel, info.id))[0]["uses"] == 0
    assert await count(kernel, schema.agents) == 0


async def test_a_budget_above_budget_per_agent_is_refused(kernel: Kernel) -> None:
    token, _ = await enrollment_token(kernel, max_agents=5, budget_per_agent="1.00 USD")
    with pytest.raises(errors.LimitExceeded) as caught:
        await enroll(kernel, token, "greedy", budget="1.01 USD")
    assert caught.value.field == "budget"
    made = await enroll(kernel, token, "modest", budget="1.00 USD")
    assert (await balance(kernel, made.agent.id)).available == usd("1.00")
    no_budget, _ = await enrollment_token(kernel, max_agents=5)
    with pytest.raises(errors.LimitExceeded):
        await enroll(kernel, no_budget, "any", budget="0.01 USD")


async def test_an_enrollment_token_can_only_enroll(kernel: Kernel) -> None:
    token, _ = await enrollment_token(kernel, max_agents=5, capabilities=["*"])
    with pytest.raises(errors.PermissionDenied):
        await kernel.invoke("agents.create", {"name": "x"}, token=token)
    with pytest.raises(errors.PermissionDenied):
        await kernel.invoke("agents.list", {}, token=token)


async def test_a_revoked_enrollment_token_stops_working(kernel: Kernel) -> None:
    token, info = await enrollment_token(kernel, max_agents=5)
    await kernel.invoke("tokens.revoke", {"token_id": info.id}, token=kernel.admin_token())
    with pytest.raises(errors.Unauthenticated):
        await enroll(kernel, token, "late")


async def test_an_admin_cannot_hand_out_capabilities_beyond_its_scope(kernel: Kernel) -> None:
    scoped: Any = await kernel.invoke(
        "tokens.create", {"kind": "human", "scopes": ["tokens.create"]}, token=kernel.admin_token()
    )
    with pytest.raises(errors.PermissionDenied):
        await kernel.invoke(
            "tokens.create",
            {"kind": "enrollment", "limits": {"capabilities": ["budget.*"]}},
            token=scoped.token.get_secret_value(),
        )
