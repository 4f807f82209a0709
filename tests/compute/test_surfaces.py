"""Sandboxes over the other surfaces: REST (the HTTP SDK) and MCP, on a real socket."""

from __future__ import annotations

import json

import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client

from mcp import Client
from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay


async def test_rest_sdk_runs_a_sandbox(base: str, kernel: Kernel) -> None:
    async with AsyncUnderlay.connect(base, kernel.admin_token()) as ul:
        sbx = await ul.sandbox.create(timeout=60, env={"GREETING": "hi"})
        out = await ul.sandbox.commands.run(sbx.id, "echo $GREETING; exit 4")
        assert (out.stdout, out.exit_code) == ("hi\n", 4)
        bg = await ul.sandbox.commands.run(sbx.id, "sleep 0.2; echo late", background=True)
        done = await ul.sandbox.commands.output(sbx.id, bg.id, wait=5)
        while done.running:
            done = await ul.sandbox.commands.output(sbx.id, bg.id, wait=5)
        assert done.stdout == "late\n" and done.exit_code == 0
        await ul.sandbox.files.write(sbx.id, "x.txt", "over http")
        assert (await ul.sandbox.files.read(sbx.id, "x.txt")).content == "over http"
        with pytest.raises(errors.InvalidInput) as info:
            await ul.sandbox.files.read(sbx.id, "/etc/passwd")
        assert info.value.field == "path"
        assert (await ul.sandbox.destroy(sbx.id)).state == "destroyed"


async def test_mcp_tools_create_and_run(base: str, kernel: Kernel, ul: AsyncUnderlay) -> None:
    agent = await ul.agents.create("mcp-coder", capabilities=["sandbox.*"], budget="1.00 USD")
    token = (await ul.tokens.create(subject=agent.id)).token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "sandbox.commands.run" in tools and "agents.create" not in tools
            assert "cmd" in tools["sandbox.commands.run"].input_schema["properties"]
            created = await client.call_tool("sandbox.create", {"timeout": 60})
            assert not created.is_error
            sid = created.structured_content["id"]
            ran = await client.call_tool(
                "sandbox.commands.run", {"sandbox": sid, "cmd": "expr 6 \\* 7"}
            )
            assert ran.structured_content["stdout"] == "42\n"
            assert json.loads(ran.content[0].text)["exit_code"] == 0
