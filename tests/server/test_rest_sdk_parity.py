"""The SDK behaves the same in process and over HTTP: one scenario, two transports."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Any

import httpx
from fastapi import FastAPI

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.sync import Underlay
from underlay.sdk.transports import HttpTransport, LocalTransport
from underlay.server.app import serving

Outcome = tuple[Any, ...]


async def scenario(ul: AsyncUnderlay) -> list[Outcome]:
    """A tour of the API as an admin and as an agent; returns what happened, id-free."""
    tag = secrets.token_hex(3)
    out: list[Outcome] = []

    async def attempt(label: str, call: Awaitable[Any]) -> Any:
        try:
            result = await call
        except errors.UnderlayError as exc:
            out.append((label, type(exc).__name__, exc.code, exc.field))
            return None
        out.append((label, "ok"))
        return result

    worker = await attempt("create worker", ul.agents.create(
        f"worker-{tag}", capabilities=["system.*", "budget.grant"], budget="1.00 USD"))
    peer = await attempt("create peer", ul.agents.create(f"peer-{tag}"))
    await attempt("duplicate name", ul.agents.create(f"worker-{tag}"))
    await attempt("bad name", ul.agents.create("no/slash"))
    await attempt("unknown field", ul.call("agents.create", name=f"x-{tag}", bogus=1))
    await attempt("wrong type", ul.call("agents.list", limit="many"))
    await attempt("missing agent", ul.agents.get(f"nobody-{tag}"))
    await attempt("noop", ul.system.noop())

    issued = await attempt("mint token", ul.tokens.create(subject=worker.id))
    agent = ul.with_token(issued.token.get_secret_value())
    me = await attempt("whoami", agent.self.whoami())
    out.append(("whoami is the worker", me.id == worker.id, me.kind))
    await attempt("agent creates agent", agent.agents.create(f"spawn-{tag}"))
    await attempt("agent reads agents", agent.agents.list())
    await attempt("overspend", agent.budget.grant(to=peer.id, amount="5.00 USD"))
    await attempt("grant", agent.budget.grant(to=peer.id, amount="0.25 USD"))
    balance = await attempt("balance", agent.budget.balance())
    out.append(("left", str(balance.available), str(balance.pending)))

    key = f"idem-{tag}"
    first = await attempt("idempotent 1", ul.agents.create(f"idem-{tag}", idempotency_key=key))
    again = await attempt("idempotent 2", ul.agents.create(f"idem-{tag}", idempotency_key=key))
    out.append(("same agent", first.id == again.id))
    await attempt("key reused", ul.agents.create(f"other-{tag}", idempotency_key=key))

    await attempt("revoke", ul.tokens.revoke(issued.info.id))
    await attempt("revoked token", agent.self.whoami())
    await attempt("forged token", ul.with_token("ul_" + "A" * 43).self.whoami())
    return out


EXPECTED: list[Outcome] = [
    ("create worker", "ok"),
    ("create peer", "ok"),
    ("duplicate name", "Conflict", "conflict", "name"),
    ("bad name", "InvalidInput", "invalid_input", "name"),
    ("unknown field", "InvalidInput", "invalid_input", "bogus"),
    ("wrong type", "InvalidInput", "invalid_input", "limit"),
    ("missing agent", "NotFound", "not_found", "agent"),
    ("noop", "ok"),
    ("mint token", "ok"),
    ("whoami", "ok"),
    ("whoami is the worker", True, "agent"),
    ("agent creates agent", "PermissionDenied", "permission_denied", None),
    ("agent reads agents", "PermissionDenied", "permission_denied", None),
    ("overspend", "BudgetExceeded", "budget_exceeded", None),
    ("grant", "ok"),
    ("balance", "ok"),
    ("left", "0.75 USD", "0.00 USD"),
    ("idempotent 1", "ok"),
    ("idempotent 2", "ok"),
    ("same agent", True),
    ("key reused", "IdempotencyKeyReused", "idempotency_key_reused", "idempotency_key"),
    ("revoke", "ok"),
    ("revoked token", "Unauthenticated", "unauthenticated", None),
    ("forged token", "Unauthenticated", "unauthenticated", None),
]


async def test_the_same_scenario_in_process_and_over_http(
    kernel: Kernel, admin_token: str, app: FastAPI
) -> None:
    local = AsyncUnderlay(LocalTransport(kernel, admin_token))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t")
    remote = AsyncUnderlay(
        HttpTransport("http://t", admin_token, table=kernel.table, client=client)
    )
    try:
        in_process = await scenario(local)
        over_http = await scenario(remote)
    finally:
        await client.aclose()
    assert in_process == EXPECTED
    assert over_http == in_process


def _blocking_tour(url: str, token: str) -> list[Any]:
    with Underlay.connect(url, token) as ul:
        fixer = ul.agents.create("fixer", capabilities=["system.*"], budget="2.00 USD")
        agent = ul.as_agent(fixer)
        balance = agent.budget.balance()
        seen: list[Any] = [agent.self.whoami().id == fixer.id, str(balance.available)]
        for call in (lambda: agent.agents.create("spawn"), lambda: ul.agents.create("no/slash")):
            try:
                call()
            except errors.UnderlayError as exc:
                seen.append((type(exc).__name__, exc.field))
        seen.append([a.name for a in ul.agents.list().items])
        return seen


async def test_blocking_client_against_a_real_socket(kernel: Kernel, admin_token: str) -> None:
    async with serving(kernel, "127.0.0.1", 0) as url:
        assert url.startswith("http://127.0.0.1:")
        seen = await asyncio.to_thread(_blocking_tour, url, admin_token)
    assert seen == [
        True, "2.00 USD", ("PermissionDenied", None), ("InvalidInput", "name"), ["fixer"]
    ]
