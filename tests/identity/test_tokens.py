"""Bearer tokens: scoped, expiring, revocable; an agent's tokens die with the agent."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.helpers import OpenKernel, count, make_agent, rows
from underlay import errors
from underlay.identity.authn import hash_token
from underlay.kernel.kernel import Kernel
from underlay.storage import schema
from underlay.testing.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def k(open_kernel: OpenKernel, clock: FakeClock) -> Kernel:
    return await open_kernel(clock=clock)


async def whoami(k: Kernel, token: str) -> Any:
    return await k.invoke("self.whoami", {}, token=token)


async def mint(k: Kernel, token: str | None = None, **body: Any) -> tuple[str, Any]:
    issued: Any = await k.invoke("tokens.create", body, token=token or k.admin_token())
    return issued.token.get_secret_value(), issued.info


async def test_only_the_hash_of_a_token_is_stored(k: Kernel) -> None:
    token, info = await mint(k, kind="human", name="laptop")
    assert token.startswith("ul_") and len(token) == 46
    [row] = await rows(k, schema.tokens, id=info.id)
    assert row["token_hash"] == hash_token(token)
    assert token not in str(row)


async def test_a_token_expires_after_its_ttl(k: Kernel, clock: FakeClock) -> None:
    agent = await make_agent(k, "a")
    token, info = await mint(k, kind="agent", subject=agent.id, ttl_seconds=60)
    assert info.expires_at == clock.now() + 60
    assert (await whoami(k, token)).id == agent.id
    clock.advance(59.9)
    assert (await whoami(k, token)).id == agent.id  # cached, still checked for expiry
    clock.advance(0.1)
    with pytest.raises(errors.Unauthenticated, match="expired"):
        await whoami(k, token)


async def test_an_expired_token_is_rejected_by_a_fresh_kernel_too(
    open_kernel: OpenKernel, k: Kernel, clock: FakeClock
) -> None:
    token, _ = await mint(k, kind="human", ttl_seconds=1)
    clock.advance(5)
    other = await open_kernel(clock=clock)
    with pytest.raises(errors.Unauthenticated, match="expired"):
        await whoami(other, token)


async def test_revocation_is_effective_immediately(k: Kernel) -> None:
    agent = await make_agent(k, "a")
    token, info = await mint(k, kind="agent", subject=agent.id)
    assert (await whoami(k, token)).id == agent.id  # now cached
    revoked: Any = await k.invoke("tokens.revoke", {"token_id": info.id}, token=k.admin_token())
    assert revoked.revoked_at is not None
    with pytest.raises(errors.Unauthenticated, match="revoked"):
        await whoami(k, token)
    assert (await whoami(k, agent.token)).id == agent.id  # its other token still works
    again: Any = await k.invoke("tokens.revoke", {"token_id": info.id}, token=k.admin_token())
    assert again.revoked_at == revoked.revoked_at  # idempotent by nature


async def test_another_process_sees_a_revocation_within_the_cache_window(
    open_kernel: OpenKernel, k: Kernel, clock: FakeClock
) -> None:
    other = await open_kernel(clock=clock)  # a second process on the same database
    token, info = await mint(k, kind="human")
    assert (await whoami(other, token)).kind == "human"  # cached over there
    await k.invoke("tokens.revoke", {"token_id": info.id}, token=k.admin_token())
    clock.advance(other.config.token_cache_seconds)
    with pytest.raises(errors.Unauthenticated):
        await whoami(other, token)


async def test_a_disabled_agents_tokens_are_rejected(k: Kernel, clock: FakeClock) -> None:
    agent = await make_agent(k, "a")
    second, _ = await mint(k, kind="agent", subject=agent.id)
    assert (await whoami(k, agent.token)).id == agent.id
    disabled: Any = await k.invoke("agents.disable", {"agent": "a"}, token=k.admin_token())
    assert disabled.status == "disabled"
    for token in (agent.token, second):
        with pytest.raises(errors.Unauthenticated, match="disabled"):
            await whoami(k, token)
    listed: Any = await k.invoke("agents.list", {"status": "disabled"}, token=k.admin_token())
    assert [a.id for a in listed.items] == [agent.id]


async def test_scopes_narrow_an_agents_capabilities(k: Kernel) -> None:
    agent = await make_agent(k, "a", ["agents.read", "budget.read", "tokens.create"])
    narrow, info = await mint(k, kind="agent", subject=agent.id, scopes=["agents.*"])
    assert info.scopes == ["agents.*"]
    me = await whoami(k, narrow)
    assert me.scopes == ["agents.*"]
    await k.invoke("agents.list", {}, token=narrow)  # agents.read: held and in scope
    await make_agent(k, "b")
    await k.invoke("budget.balance", {"agent": "b"}, token=agent.token)  # needs budget.read
    with pytest.raises(errors.PermissionDenied):
        await k.invoke("budget.balance", {"agent": "b"}, token=narrow)  # ...scoped out
    await k.invoke("budget.balance", {}, token=narrow)  # its own: a self syscall
    with pytest.raises(errors.PermissionDenied):
        await k.invoke("tokens.create", {}, token=narrow)  # held, but out of scope
    with pytest.raises(errors.PermissionDenied):  # in scope, but never held
        await k.invoke("agents.create", {"name": "x"}, token=narrow)


async def test_an_agent_mints_only_narrower_tokens_for_itself(k: Kernel) -> None:
    agent = await make_agent(k, "a", ["agents.read", "tokens.create"])
    other = await make_agent(k, "b")
    token, info = await mint(k, agent.token, scopes=["agents.read"])
    assert info.subject_id == agent.id
    assert (await whoami(k, token)).scopes == ["agents.read"]
    with pytest.raises(errors.PermissionDenied) as caught:
        await mint(k, agent.token, scopes=["budget.fund"])
    assert caught.value.field == "capabilities"
    with pytest.raises(errors.PermissionDenied):
        await mint(k, agent.token, subject=other.id)
    for kind in ("human", "enrollment"):
        with pytest.raises(errors.PermissionDenied):
            await mint(k, agent.token, kind=kind)


async def test_an_agent_revokes_only_its_own_tokens(k: Kernel) -> None:
    a = await make_agent(k, "a", ["tokens.*"])
    b = await make_agent(k, "b")
    _, b_info = await mint(k, kind="agent", subject=b.id)
    with pytest.raises(errors.NotFound):
        await k.invoke("tokens.revoke", {"token_id": b_info.id}, token=a.token)
    _, mine = await mint(k, a.token)
    await k.invoke("tokens.revoke", {"token_id": mine.id}, token=a.token)


async def test_tokens_list_shows_no_secrets_and_hides_revoked_by_default(k: Kernel) -> None:
    a = await make_agent(k, "a", ["tokens.read"])
    token, info = await mint(k, kind="agent", subject=a.id, name="spare")
    await k.invoke("tokens.revoke", {"token_id": info.id}, token=k.admin_token())
    listed: Any = await k.invoke("tokens.list", {"subject": "a"}, token=k.admin_token())
    assert [t.name for t in listed.items] == ["token"]
    every: Any = await k.invoke(
        "tokens.list", {"subject": "a", "include_revoked": True}, token=k.admin_token()
    )
    assert sorted(t.name for t in every.items) == ["spare", "token"]
    own: Any = await k.invoke("tokens.list", {}, token=a.token)  # an agent sees only its own
    assert {t.subject_id for t in own.items} == {a.id}
    assert token not in str(every.model_dump()) and a.token not in str(every.model_dump())


async def test_a_human_token_is_minted_by_that_human(k: Kernel) -> None:
    token, info = await mint(k, kind="human", scopes=["agents.read"], ttl_seconds=3600)
    me = await whoami(k, token)
    assert (me.kind, me.id, me.is_operator) == ("human", info.subject_id, True)


async def test_an_unknown_subject_is_not_found(k: Kernel) -> None:
    with pytest.raises(errors.NotFound):
        await mint(k, kind="agent", subject="agt_nope")
    assert await count(k, schema.tokens, name="token") == 0
