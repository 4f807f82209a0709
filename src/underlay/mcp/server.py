"""The underlay MCP server: the official SDK's low-level ``Server`` bound to a kernel.

The caller's token comes from a ``TokenSource`` (the HTTP ``Authorization`` header, or
the fixed token of a stdio session). ``tools/list`` shows the tools that token may use
(none for a missing or invalid token); ``tools/call`` is ``Kernel.invoke`` with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import mcp.types as types
from mcp.server import Server, ServerRequestContext

from underlay import __version__, errors
from underlay.mcp import tools
from underlay.mcp.tools import ToolCatalog

if TYPE_CHECKING:
    from underlay.kernel.kernel import Kernel

TokenSource = Callable[[ServerRequestContext[Any, Any]], str | None]

INSTRUCTIONS = (
    "underlay is an operating system for AI agents. Each tool is one syscall; the list "
    "shows only what your token may call. Errors come back as problem JSON with a stable "
    "`code` and the `field` to fix."
)


def bearer_from_request(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The bearer token of the HTTP request that carried this message (``None`` on stdio)."""
    request = ctx.request
    if request is None:
        return None
    scheme, _, credential = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


def build_server(kernel: Kernel, token_of: TokenSource) -> Server[Any]:
    """A low-level MCP server exposing ``kernel``'s table as tools."""
    catalog = ToolCatalog(kernel.table)

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            principal = await kernel.authn.authenticate(token_of(ctx))
        except errors.Unauthenticated:
            return types.ListToolsResult(tools=[])
        return types.ListToolsResult(tools=catalog.visible_to(principal))

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        key = tools.idempotency_key_of(params.meta)
        return await tools.call(
            kernel, token_of(ctx), params.name, params.arguments, idempotency_key=key
        )

    return Server(
        "underlay",
        version=__version__,
        instructions=INSTRUCTIONS,
        get_tool_input_schema=catalog.input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
