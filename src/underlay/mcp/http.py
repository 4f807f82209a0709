"""MCP over streamable HTTP: an ASGI app to mount (at ``/mcp``) plus its lifespan.

The SDK's session manager can run once per instance, so ``McpHttpApp.running()`` makes a
fresh one each time the hosting app starts; requests that arrive while it is not running
get a 503 problem. The caller's bearer token is read from every HTTP request, so a token
revoked mid-session stops working at once. Sessions are stateless (no server-side state
per client) and bodies are capped at the kernel's ``max_body_bytes``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import Receive, Scope, Send

from underlay import errors
from underlay.mcp.server import bearer_from_request, build_server
from underlay.server.problems import send_problem

if TYPE_CHECKING:
    from underlay.kernel.kernel import Kernel


class McpHttpApp:
    """ASGI app serving MCP streamable HTTP for ``kernel``; run it inside ``running()``."""

    def __init__(
        self, kernel: Kernel, *, json_response: bool = True, stateless: bool = True
    ) -> None:
        self.server = build_server(kernel, bearer_from_request)
        self._json_response = json_response
        self._stateless = stateless
        self._max_body = kernel.config.max_body_bytes
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run a session manager until the block exits (use in the app's lifespan)."""
        manager = StreamableHTTPSessionManager(
            app=self.server, json_response=self._json_response, stateless=self._stateless,
            max_request_body_size=self._max_body,
        )
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self._manager
        if manager is None:
            await send_problem(send, errors.Unavailable("the MCP endpoint is not running"))
            return
        await manager.handle_request(scope, receive, send)


def mcp_http_app(
    kernel: Kernel, *, json_response: bool = True, stateless: bool = True
) -> McpHttpApp:
    """The MCP endpoint of ``kernel``: mount the result, enter ``result.running()``."""
    return McpHttpApp(kernel, json_response=json_response, stateless=stateless)
