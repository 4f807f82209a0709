"""The SDK: methods bound from the table; the blocking client derived from the async one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from underlay import errors
from underlay.config import Config
from underlay.identity.models import AgentRef
from underlay.sdk import AsyncUnderlay, Underlay


def normalize(agent: Any, me: Any, bal: Any, sig_ok: bool, forged_ok: bool,
              codes: list[str], names: list[str], replay_same: bool) -> dict[str, Any]:
    return {
        "agent": (agent.name, agent.capabilities, agent.status, agent.did[:12]),
        "me": (me.kind, me.id == agent.id, me.capabilities, me.did == agent.did),
        "balance": (str(bal.posted), str(bal.pending), str(bal.available)),
        "signature": (sig_ok, forged_ok),
        "codes": codes,
        "names": names,
        "replay_same": replay_same,
    }


CAPS = ["system.*", "tokens.read"]


async def async_scenario(ul: AsyncUnderlay) -> dict[str, Any]:
    fixer = await ul.agents.create("fixer", CAPS, budget="5.00 USD")
    twin = await ul.agents.create("twin", idempotency_key="mk-twin")
    replay = await ul.agents.create("twin", idempotency_key="mk-twin")
    a = await ul.as_agent(fixer)
    me = await a.self.whoami()
    bal = await a.budget.balance()
    sig = await a.keys.sign("hello")
    ok = (await a.keys.verify(fixer.did, "hello", sig.signature)).valid
    forged = (await a.keys.verify(fixer.did, "hellO", sig.signature)).valid
    codes = []
    for attempt in (
        lambda: a.agents.list(),
        lambda: ul.agents.get("ghost"),
        lambda: a.keys.verify("did:web:x", "m", sig.signature),
        lambda: ul.agents.create("fixer"),
        lambda: ul.budget.grant(to="fixer", amount="1 USD", idempotency_key="mk-twin"),
    ):
        try:
            await attempt()
            codes.append("ok")
        except errors.UnderlayError as exc:
            codes.append(exc.code)
    names = sorted(x.name for x in (await ul.agents.list()).items)
    return normalize(fixer, me, bal, ok, forged, codes, names, replay.id == twin.id)


def sync_scenario(ul: Underlay) -> dict[str, Any]:
    fixer = ul.agents.create("fixer", CAPS, budget="5.00 USD")
    twin = ul.agents.create("twin", idempotency_key="mk-twin")
    replay = ul.agents.create("twin", idempotency_key="mk-twin")
    a = ul.as_agent(fixer)
    me = a.self.whoami()
    bal = a.budget.balance()
    sig = a.keys.sign("hello")
    ok = a.keys.verify(fixer.did, "hello", sig.signature).valid
    forged = a.keys.verify(fixer.did, "hellO", sig.signature).valid
    codes = []
    for attempt in (
        lambda: a.agents.list(),
        lambda: ul.agents.get("ghost"),
        lambda: a.keys.verify("did:web:x", "m", sig.signature),
        lambda: ul.agents.create("fixer"),
        lambda: ul.budget.grant(to="fixer", amount="1 USD", idempotency_key="mk-twin"),
    ):
        try:
            attempt()
            codes.append("ok")
        except errors.UnderlayError as exc:
            codes.append(exc.code)
    names = sorted(x.name for x in ul.agents.list().items)
    return normalize(fixer, me, bal, ok, forged, codes, names, replay.id == twin.id)


def test_the_sync_client_gives_the_same_results_as_the_async_one(
    config: Config, tmp_path: Any
) -> None:
    """The same scenario on two fresh installations, once blocking, once async."""
    from underlay.testing import databases

    with Underlay.local(config=config) as sync_ul:
        sync_result = sync_scenario(sync_ul)

    (tmp_path / "second").mkdir()
    url = databases.fresh_database_url(tmp_path / "second")
    second = Config.load(home=tmp_path / "second-home", database_url=url)

    async def run() -> dict[str, Any]:
        ul = await AsyncUnderlay.local(config=second)
        try:
            return await async_scenario(ul)
        finally:
            await ul.close()

    try:
        async_result = asyncio.run(run())
    finally:
        databases.drop_database(url)
    assert sync_result == async_result
    assert sync_result["balance"] == ("5.00 USD", "0.00 USD", "5.00 USD")
    assert sync_result["signature"] == (True, False)
    assert sync_result["codes"] == [
        "permission_denied", "not_found", "invalid_input", "conflict", "idempotency_key_reused",
    ]
    assert sync_result["names"] == ["fixer", "twin"] and sync_result["replay_same"] is True


async def test_positional_arguments_fill_fields_in_order(ul: AsyncUnderlay) -> None:
    made = await ul.agents.create("pos", ["a.b"], None, {"k": "v"})
    assert (made.name, made.capabilities, made.metadata) == ("pos", ["a.b"], {"k": "v"})
    with pytest.raises(errors.InvalidInput, match="at most"):
        await ul.agents.get("a", "b")
    with pytest.raises(errors.InvalidInput) as caught:
        await ul.agents.get("pos", agent="pos")
    assert caught.value.field == "agent"


async def test_call_by_name_with_a_dict_a_model_or_keywords(ul: AsyncUnderlay) -> None:
    made = await ul.agents.create("named")
    assert (await ul.call("agents.get", agent="named")).id == made.id
    assert (await ul.call("agents.get", {"agent": "named"})).id == made.id
    assert (await ul.call("agents.get", AgentRef(agent=made.id))).id == made.id


async def test_unknown_attributes_raise_attribute_error(ul: AsyncUnderlay) -> None:
    for get in (lambda: ul.nope, lambda: ul.agents.nope, lambda: ul._private,
                lambda: ul.agents._x, lambda: ul.agents.create.nope):
        with pytest.raises(AttributeError):
            get()
    assert not hasattr(ul, "sandboxez")


def test_the_sync_client_raises_attribute_error_too(config: Config) -> None:
    with Underlay.local(config=config) as ul:
        with pytest.raises(AttributeError):
            ul.nope  # noqa: B018
        with pytest.raises(AttributeError):
            ul.agents.nope  # noqa: B018
        with pytest.raises(errors.NotFound):  # errors cross the portal with their type
            ul.agents.get("ghost")


async def test_methods_carry_the_tables_docs_and_namespaces_list_them(ul: AsyncUnderlay) -> None:
    assert ul.agents.create.__doc__ == ul.table.get("agents.create").doc
    assert {"create", "get", "list", "disable", "enroll"} <= set(dir(ul.agents))
    assert "whoami" in dir(ul.self)


async def test_with_token_and_as_agent_act_as_that_caller(ul: AsyncUnderlay) -> None:
    made = await ul.agents.create("helper", ["agents.read"])
    scoped = await ul.as_agent(made, scopes=["agents.read"], ttl_seconds=60)
    me = await scoped.self.whoami()
    assert (me.id, me.scopes) == (made.id, ["agents.read"])
    issued = await ul.tokens.create(kind="agent", subject="helper")
    same = ul.with_token(issued.token.get_secret_value())
    assert (await same.self.whoami()).id == made.id
    assert [a.name for a in (await same.agents.list()).items] == ["helper"]


async def test_a_replayed_secret_is_redacted(ul: AsyncUnderlay) -> None:
    first = await ul.tokens.create(kind="human", idempotency_key="t1")
    again = await ul.tokens.create(kind="human", idempotency_key="t1")
    assert first.token.get_secret_value().startswith("ul_")
    assert again.info == first.info
    assert again.token.get_secret_value() == "[redacted]"  # shown once, never stored
