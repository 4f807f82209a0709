"""The official MCP client against ``/mcp`` on a real uvicorn socket, with bearer tokens."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp_helpers import problem_of

from mcp import Client
from underlay.kernel.kernel import Kernel
from underlay.mcp.tools import IDEMPOTENCY_META_KEY
from underlay.sdk.client import AsyncUnderlay
from underlay.server.app import serving

MODES = ["auto", "legacy"]  # 2026-07-28 per-request envelopes, and 2025-11-25 sessions


@pytest.fixture
async def url(kernel: Kernel) -> AsyncIterator[str]:
    async with serving(kernel, "127.0.0.1", 0) as base:
        yield f"{base}/mcp"


@asynccontextmanager
async def connect(url: str, token: str | None, mode: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


@pytest.mark.parametrize("mode", MODES)
async def test_admin_sees_every_syscall_as_a_tool(
    url: str, admin_token: str, kernel: Kernel, mode: str
) -> None:
    async with connect(url, admin_token, mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(tools) == [sc.name for sc in kernel.table]
    for sc in kernel.table:
        tool = tools[sc.name]
        assert tool.description == sc.doc
        assert tool.input_schema == sc.input.model_json_schema()
        assert tool.output_schema == sc.output.model_json_schema(mode="serialization")
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (not sc.mutating)


@pytest.mark.parametrize("mode", MODES)
async def test_an_agent_sees_and_calls_only_what_it_may(
    url: str, agent_token: str, kernel: Kernel, ul: AsyncUnderlay, mode: str
) -> None:
    async with connect(url, agent_token, mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "system.noop" in names and "self.whoami" in names
        assert not names & {"agents.create", "agents.list", "orgs.create", "audit.tail"}
        ok = await client.call_tool("system.noop", {})
        assert not ok.is_error and ok.structured_content == {}
        assert json.loads(ok.content[0].text) == {}
        me = await client.call_tool("self.whoami", {})
        assert me.structured_content["kind"] == "agent"
        assert me.structured_content["capabilities"] == ["system.*"]
        denied = await client.call_tool("agents.create", {"name": "spawn"})
        problem = problem_of(denied)
        assert problem["code"] == "permission_denied" and problem["status"] == 403
    assert [a.name for a in (await ul.agents.list()).items] == ["narrow"]
    events = (await ul.audit.tail(syscall="agents.create")).items
    assert [e.outcome for e in events] == ["denied", "ok"]  # the denial is in the audit trail


@pytest.mark.parametrize("mode", MODES)
async def test_bad_input_comes_back_as_an_error_result_naming_the_field(
    url: str, admin_token: str, ul: AsyncUnderlay, mode: str
) -> None:
    async with connect(url, admin_token, mode) as client:
        for arguments, field in (({"name": "no/slash"}, "name"), ({"name": "a", "x": 1}, "x")):
            problem = problem_of(await client.call_tool("agents.create", arguments))
            assert (problem["code"], problem["field"]) == ("invalid_input", field)
        unknown = problem_of(await client.call_tool("agents.explode", {}))
        assert unknown["code"] == "not_found"
    assert (await ul.agents.list()).items == []


@pytest.mark.parametrize("mode", MODES)
async def test_no_or_bad_token_lists_nothing_and_calls_fail(
    url: str, kernel: Kernel, mode: str
) -> None:
    for token in (None, "ul_" + "A" * 43):
        async with connect(url, token, mode) as client:
            assert (await client.list_tools()).tools == []
            problem = problem_of(await client.call_tool("system.noop", {}))
            assert problem["code"] == "unauthenticated"


@pytest.mark.parametrize("mode", MODES)
async def test_calls_write_through_the_kernel_and_replay_with_an_idempotency_key(
    url: str, admin_token: str, ul: AsyncUnderlay, mode: str
) -> None:
    meta = {IDEMPOTENCY_META_KEY: "mcp-create-1"}
    async with connect(url, admin_token, mode) as client:
        first = await client.call_tool("agents.create", {"name": "viamcp"}, meta=meta)
        again = await client.call_tool("agents.create", {"name": "viamcp"}, meta=meta)
        assert not first.is_error and first.structured_content == again.structured_content
        minted = await client.call_tool("tokens.create", {"subject": "viamcp"})
        token = minted.structured_content["token"]
    assert (await ul.agents.get("viamcp")).id == first.structured_content["id"]
    assert [e.outcome for e in (await ul.audit.tail(syscall="agents.create")).items] == [
        "replayed", "ok"
    ]
    me = await ul.with_token(token).self.whoami()  # the minted secret was revealed, and works
    assert me.id == first.structured_content["id"]


async def test_a_revoked_token_stops_working_mid_session(
    url: str, agent_token: str, ul: AsyncUnderlay
) -> None:
    async with connect(url, agent_token, "legacy") as client:
        assert not (await client.call_tool("system.noop", {})).is_error
        for token in (await ul.tokens.list(subject="narrow")).items:
            await ul.tokens.revoke(token.id)
        assert problem_of(await client.call_tool("system.noop", {}))["code"] == "unauthenticated"
        assert (await client.list_tools(cache_mode="refresh")).tools == []
