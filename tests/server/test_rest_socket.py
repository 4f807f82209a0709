"""``serve`` over a real uvicorn socket on 127.0.0.1: port 0, lifespan, limits, stop."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from underlay import errors
from underlay.config import Config
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.server.app import serve, serving
from underlay.types import Money


async def test_serve_reports_the_bound_port_serves_and_stops_on_cancel(
    kernel: Kernel, admin_token: str
) -> None:
    urls: list[str] = []
    listening = asyncio.Event()

    def ready(url: str) -> None:
        urls.append(url)
        listening.set()

    task = asyncio.create_task(serve(kernel, "127.0.0.1", 0, ready=ready))
    await asyncio.wait_for(listening.wait(), 30)
    [url] = urls
    assert url.startswith("http://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        assert (await c.get("/healthz")).json() == {"ok": True}
        r = await c.post("/v1/self/whoami", headers={"Authorization": f"Bearer {admin_token}"})
        assert r.status_code == 200 and r.json()["kind"] == "human"
        r = await c.post("/v1/self/whoami", content=b"{", headers={"Authorization": "Bearer x"})
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            await c.get("/healthz")


async def test_a_busy_port_is_a_clear_error(kernel: Kernel) -> None:
    async with serving(kernel) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(errors.Unavailable, match="cannot listen"):
            await serve(kernel, "127.0.0.1", port)


async def test_the_lifespan_expires_stale_holds(kernel: Kernel, ul: AsyncUnderlay) -> None:
    agent = await ul.agents.create("spender", budget="1.00 USD")
    org = agent.org_id
    await kernel.ledger.transfer(
        org, "hold:stale", ("agent", agent.id), ("usage", org), Money("0.40"), pending_ttl=0.01
    )
    assert str((await ul.budget.balance(agent=agent.id)).pending) == "0.40 USD"
    await asyncio.sleep(0.05)
    async with serving(kernel):
        for _ in range(100):  # the expiry loop runs once at start, then every few seconds
            if str((await ul.budget.balance(agent=agent.id)).pending) == "0.00 USD":
                break
            await asyncio.sleep(0.05)
    balance = await ul.budget.balance(agent=agent.id)
    assert (str(balance.pending), str(balance.available)) == ("0.00 USD", "1.00 USD")


async def test_body_limit_over_a_real_socket(config: Config) -> None:
    k = await Kernel.open(config.model_copy(update={"max_body_bytes": 2048}))
    try:
        auth = {"Authorization": f"Bearer {k.admin_token()}"}
        async with serving(k) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
            pad = {"name": "fixer", "metadata": {"pad": "x" * 3000}}
            r = await c.post("/v1/agents/create", json=pad, headers=auth)
            assert r.status_code == 413 and r.json()["code"] == "payload_too_large"

            async def chunks():  # type: ignore[no-untyped-def]
                yield b'{"name": "fixer", "metadata": {"pad": "'
                for _ in range(4):
                    yield b"x" * 1000
                yield b'"}}'

            r = await c.post("/v1/agents/create", content=chunks(), headers=auth)
            assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
            ok = await c.post("/v1/agents/create", json={"name": "fixer"}, headers=auth)
            assert ok.status_code == 200
            listed = await c.post("/v1/agents/list", headers=auth)
            assert [a["name"] for a in listed.json()["items"]] == ["fixer"]
    finally:
        await k.close()
