"""The audit trail: hash-chained per org, tamper-evident, secrets never written."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from pydantic import Field
from sqlalchemy import delete, update

from kernel.helpers import OpenKernel, audit_events, default_org, make_agent, make_org, rows
from underlay.kernel.context import CallContext
from underlay.kernel.kernel import Kernel
from underlay.kernel.syscall import SyscallGroup
from underlay.storage import schema
from underlay.types import StrictModel

E = schema.audit_events


async def verify(k: Kernel, token: str | None = None) -> Any:
    return await k.invoke("audit.verify", {}, token=token or k.admin_token())


async def five_events(k: Kernel) -> list[dict[str, Any]]:
    for i in range(5):
        await k.invoke("agents.create", {"name": f"a{i}"}, token=k.admin_token())
    events = await audit_events(k)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    return events


async def tamper(k: Kernel, stmt: Any) -> None:
    async with k.db.write() as conn:
        await conn.execute(stmt)


def problems(report: Any) -> list[tuple[int, str]]:
    return [(p["seq"], p["problem"].split(" ")[0]) for p in report.problems]


async def test_an_intact_chain_verifies(kernel: Kernel) -> None:
    empty = await verify(kernel)
    assert (empty.ok, empty.events, empty.problems) == (True, 0, [])
    events = await five_events(kernel)
    report = await verify(kernel)
    assert (report.ok, report.events) == (True, 5)
    assert events[0]["prev_hash"] == "0" * 64
    for before, after in itertools.pairwise(events):
        assert after["prev_hash"] == before["hash"]


async def test_an_edited_detail_is_detected(kernel: Kernel) -> None:
    await five_events(kernel)
    org = default_org(kernel)
    await tamper(
        kernel,
        update(E).where(E.c.org_id == org, E.c.seq == 3).values(detail={"input": {"name": "x"}}),
    )
    report = await verify(kernel)
    assert not report.ok
    assert problems(report) == [(3, "content")]


async def test_an_edited_outcome_is_detected(kernel: Kernel) -> None:
    await five_events(kernel)
    await tamper(kernel, update(E).where(E.c.seq == 2).values(outcome="denied"))
    assert problems(await verify(kernel)) == [(2, "content")]


async def test_a_deleted_middle_event_is_detected(kernel: Kernel) -> None:
    await five_events(kernel)
    await tamper(kernel, delete(E).where(E.c.org_id == default_org(kernel), E.c.seq == 3))
    report = await verify(kernel)
    assert not report.ok and report.events == 4
    assert problems(report) == [(3, "missing"), (4, "link")]


async def test_a_deleted_last_event_is_detected(kernel: Kernel) -> None:
    await five_events(kernel)
    await tamper(kernel, delete(E).where(E.c.org_id == default_org(kernel), E.c.seq == 5))
    report = await verify(kernel)
    assert not report.ok and report.events == 4
    assert problems(report) == [(5, "chain")]


async def test_reordered_events_are_detected(kernel: Kernel) -> None:
    await five_events(kernel)
    org = default_org(kernel)
    where = (E.c.org_id == org,)
    await tamper(kernel, update(E).where(*where, E.c.seq == 2).values(seq=-2))
    await tamper(kernel, update(E).where(*where, E.c.seq == 3).values(seq=2))
    await tamper(kernel, update(E).where(*where, E.c.seq == -2).values(seq=3))
    report = await verify(kernel)
    assert not report.ok
    found = problems(report)
    assert found[0][0] == 2
    assert {seq for seq, _ in found} == {2, 3, 4}
    assert (2, "link") in found and (4, "link") in found


async def test_rehashing_a_forged_event_still_breaks_the_link(kernel: Kernel) -> None:
    """A forger who recomputes the edited event's own hash breaks the next link."""
    from underlay.kernel.audit import event_hash

    events = await five_events(kernel)
    forged = dict(events[2], detail={"forged": True})
    forged_hash = event_hash(forged, forged["prev_hash"])
    await tamper(
        kernel,
        update(E).where(E.c.id == forged["id"]).values(detail={"forged": True}, hash=forged_hash),
    )
    assert problems(await verify(kernel)) == [(4, "link")]


async def test_each_org_has_its_own_chain(kernel: Kernel) -> None:
    await five_events(kernel)
    other = await make_org(kernel, "other")
    await kernel.invoke("agents.create", {"name": "theirs"}, token=other.token)
    await tamper(kernel, delete(E).where(E.c.org_id == default_org(kernel), E.c.seq == 2))
    assert not (await verify(kernel)).ok
    theirs = await verify(kernel, other.token)
    assert (theirs.ok, theirs.events) == (True, 1)
    tail: Any = await kernel.invoke("audit.tail", {}, token=other.token)
    assert [e.syscall for e in tail.items] == ["agents.create"]
    assert all(e.actor_id == other.id for e in tail.items)


async def test_concurrent_first_events_of_a_new_org_form_one_chain(kernel: Kernel) -> None:
    other = await make_org(kernel, "fresh")
    await asyncio.gather(
        *(
            kernel.invoke("agents.create", {"name": f"n{i}"}, token=other.token)
            for i in range(10)
        )
    )
    report = await verify(kernel, other.token)
    assert (report.ok, report.events) == (True, 10)


async def test_concurrent_appends_never_fork_the_chain(kernel: Kernel) -> None:
    await kernel.invoke("agents.create", {"name": "first"}, token=kernel.admin_token())
    await asyncio.gather(
        *(
            kernel.invoke("agents.create", {"name": f"c{i}"}, token=kernel.admin_token())
            for i in range(15)
        )
    )
    report = await verify(kernel)
    assert (report.ok, report.events) == (True, 16)


async def test_tail_pages_back_and_filters(kernel: Kernel) -> None:
    await five_events(kernel)
    await kernel.invoke("tokens.create", {"kind": "human"}, token=kernel.admin_token())
    page: Any = await kernel.invoke("audit.tail", {"limit": 4}, token=kernel.admin_token())
    assert [e.seq for e in page.items] == [6, 5, 4, 3]
    rest: Any = await kernel.invoke(
        "audit.tail", {"limit": 4, "before": page.next_cursor}, token=kernel.admin_token()
    )
    assert [e.seq for e in rest.items] == [2, 1] and rest.next_cursor is None
    only: Any = await kernel.invoke(
        "audit.tail", {"syscall": "tokens.create"}, token=kernel.admin_token()
    )
    assert [e.seq for e in only.items] == [6]


# --- secrets ----------------------------------------------------------------------------


class Login(StrictModel):
    user: str
    password: str
    api_key: str = ""
    token: str = ""
    nested: dict[str, str] = Field(default_factory=dict)
    note: str = ""


class LoggedIn(StrictModel):
    ok: bool


secrets_group = SyscallGroup("test")


@secrets_group.syscall("test.login", mutating=True)
async def login(ctx: CallContext, inp: Login) -> LoggedIn:
    """A test-only syscall whose input carries secrets."""
    return LoggedIn(ok=True)


async def raw_audit_text(k: Kernel) -> str:
    return str(await rows(k, E)) + str(await rows(k, schema.audit_heads))


async def test_secret_named_fields_and_token_shaped_values_are_redacted(
    open_kernel: OpenKernel,
) -> None:
    k = await open_kernel(secrets_group)
    token_like = "ul_" + "T" * 43
    await k.invoke(
        "test.login",
        {
            "user": "ann",
            "password": "hunter2-pw-value",
            "api_key": "sk-live-api-value",
            "token": "bearer-value-xyz",
            "nested": {"client_secret": "nested-secret-value", "region": "eu"},
            "note": token_like,
        },
        token=k.admin_token(),
    )
    text = await raw_audit_text(k)
    for leaked in ("hunter2-pw-value", "sk-live-api-value", "bearer-value-xyz",
                   "nested-secret-value", token_like):
        assert leaked not in text
    [event] = await audit_events(k, syscall="test.login")
    assert event["detail"]["input"]["user"] == "ann"
    assert event["detail"]["input"]["nested"] == {"client_secret": "[redacted]", "region": "eu"}
    assert (await verify(k)).ok  # the redacted form is what was hashed


async def test_minted_tokens_never_reach_the_audit_trail(kernel: Kernel) -> None:
    admin = kernel.admin_token()
    agent = await make_agent(kernel, "holder")  # mints an agent token
    human: Any = await kernel.invoke("tokens.create", {"kind": "human"}, token=admin)
    enroll: Any = await kernel.invoke(
        "tokens.create", {"kind": "enrollment", "limits": {"max_agents": 2}}, token=admin
    )
    enrolled: Any = await kernel.invoke(
        "agents.enroll", {"name": "self-made"}, token=enroll.token.get_secret_value()
    )
    org = await make_org(kernel, "neworg")
    await kernel.invoke(
        "agents.create", {"name": "m", "metadata": {"password": "meta-pw-value"}}, token=admin
    )
    secrets = [
        agent.token, human.token.get_secret_value(), enroll.token.get_secret_value(),
        enrolled.token.get_secret_value(), org.token, admin, "meta-pw-value",
    ]
    text = await raw_audit_text(kernel)
    assert len(await rows(kernel, E)) >= 6
    for secret in secrets:
        assert secret not in text
    # and the tokens table holds hashes only
    tokens_text = str(await rows(kernel, schema.tokens))
    for secret in secrets[:-1]:
        assert secret not in tokens_text


@pytest.mark.parametrize(
    "value",
    [
        {"password": "p"},
        {"PRIVATE_KEY": "p", "db_password": "q", "Authorization": "r", "credentials": "s"},
        {"list": [{"token": "t"}, "ul_" + "a" * 30]},
    ],
)
def test_redact_replaces_every_secret(value: dict[str, Any]) -> None:
    from underlay.kernel.audit import redact

    text = str(redact(value))
    assert all(s not in text for s in ("'p'", "'q'", "'r'", "'s'", "'t'", "ul_aaa"))


def test_redact_keeps_ordinary_fields() -> None:
    from underlay.kernel.audit import redact

    value = {"name": "x", "tokens_used": 3, "token_id": "tok_1", "ul_short": "ul_x", "n": [1]}
    assert redact(value) == value
