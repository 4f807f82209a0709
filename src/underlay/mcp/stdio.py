"""MCP over stdio: the same tools, for one fixed token (``underlay mcp``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp.server.stdio import stdio_server

from underlay.mcp.server import build_server

if TYPE_CHECKING:
    from underlay.kernel.kernel import Kernel


async def run_stdio(kernel: Kernel, token: str) -> None:
    """Serve MCP on stdin/stdout as the holder of ``token`` until the client hangs up.

    The token is checked first, so a bad one fails at once (``Unauthenticated``) instead
    of serving an empty tool list. Every call is still authenticated by the kernel, so a
    token revoked or expired mid-session stops working.
    """
    await kernel.authn.authenticate(token)
    server = build_server(kernel, lambda ctx: token)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
