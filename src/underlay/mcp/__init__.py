"""underlay as an MCP server: every syscall the caller may use is one MCP tool.

``mcp_http_app(kernel)`` is the streamable-HTTP endpoint (mounted at ``/mcp`` by the
REST app); ``run_stdio(kernel, token)`` serves stdio; ``python -m underlay.mcp`` is the
spawnable stdio entry. Built on the official SDK's low-level ``Server``.
"""

from __future__ import annotations

from underlay.mcp.http import McpHttpApp, mcp_http_app
from underlay.mcp.server import build_server
from underlay.mcp.stdio import run_stdio

__all__ = ["McpHttpApp", "build_server", "mcp_http_app", "run_stdio"]
