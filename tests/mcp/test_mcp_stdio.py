"""The official MCP client spawns ``python -m underlay.mcp`` and talks to it over stdio."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mcp_helpers import problem_of

from mcp import Client, StdioServerParameters
from underlay.config import Config
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay


def _env(config: Config, token: str | None) -> dict[str, str]:
    """The stdio client passes only a few safe variables on: name the installation."""
    env = {"UNDERLAY_HOME": str(config.home), "UNDERLAY_DATABASE_URL": config.resolved_database_url}
    if token is not None:
        env["UNDERLAY_TOKEN"] = token
    if "VIRTUAL_ENV" in os.environ:
        env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
    return env


def _server(config: Config, token: str | None) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "underlay.mcp"], env=_env(config, token)
    )


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_lists_and_calls_the_tools_of_the_token(
    kernel: Kernel, config: Config, agent_token: str, ul: AsyncUnderlay, mode: str
) -> None:
    async with Client(_server(config, agent_token), mode=mode, read_timeout_seconds=60) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "system.noop" in names and "agents.create" not in names
        ok = await client.call_tool("system.noop", {})
        assert not ok.is_error and ok.structured_content == {}
        me = await client.call_tool("self.whoami", {})
        assert me.structured_content["id"] == (await ul.agents.get("narrow")).id
        denied = problem_of(await client.call_tool("agents.create", {"name": "spawn"}))
        assert denied["code"] == "permission_denied"
    assert [a.name for a in (await ul.agents.list()).items] == ["narrow"]


async def test_stdio_defaults_to_the_local_admin(
    kernel: Kernel, config: Config, ul: AsyncUnderlay
) -> None:
    async with Client(_server(config, None), read_timeout_seconds=60) as client:
        assert len((await client.list_tools()).tools) == len(kernel.table)
        made = await client.call_tool("agents.create", {"name": "from-stdio"})
        assert not made.is_error
    assert (await ul.agents.get("from-stdio")).id == made.structured_content["id"]


def test_stdio_refuses_a_bad_token_at_once(kernel: Kernel, config: Config) -> None:
    env = {**os.environ, **_env(config, "ul_" + "A" * 43)}
    done = subprocess.run(
        [sys.executable, "-m", "underlay.mcp"], env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "unauthenticated: unknown token" in done.stderr
