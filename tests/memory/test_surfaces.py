"""Memory over REST (the HTTP SDK) and MCP, on a real socket."""

from __future__ import annotations

import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client

from mcp import Client
from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay


async def test_rest_add_search_history(base: str, kernel: Kernel) -> None:
    async with AsyncUnderlay.connect(base, kernel.admin_token()) as ul:
        first = await ul.memory.add(
            "I prefer tea.", user_id="kim", timestamp="2026-01-01T00:00:00Z"
        )
        second = await ul.memory.add(
            "I prefer coffee now.", user_id="kim", timestamp="2026-02-01T00:00:00Z"
        )
        assert second.results[0].event == "UPDATE"
        assert second.results[0].id == first.results[0].id
        now = await ul.memory.search("what does kim prefer to drink", user_id="kim")
        assert now.results[0].memory == "I prefer coffee now."
        then = await ul.memory.search(
            "what does kim prefer to drink", user_id="kim", as_of="2026-01-15T00:00:00Z"
        )
        assert then.results[0].memory == "I prefer tea."
        with pytest.raises(errors.InvalidInput) as info:
            await ul.memory.search("", user_id="kim")
        assert info.value.field == "query"


async def test_mcp_memory_tools(base: str, ul: AsyncUnderlay) -> None:
    agent = await ul.agents.create("rememberer", capabilities=["memory.*"], budget="1.00 USD")
    token = (await ul.tokens.create(subject=agent.id)).token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"memory.add", "memory.search", "memory.history"} <= tools
            added = await client.call_tool(
                "memory.add", {"messages": "The staging database is db-7.", "user_id": "ops"}
            )
            assert not added.is_error
            assert added.structured_content["results"][0]["event"] == "ADD"
            found = await client.call_tool(
                "memory.search", {"query": "which staging database", "user_id": "ops"}
            )
            assert found.structured_content["results"][0]["memory"] == (
                "The staging database is db-7."
            )
