"""The REST surface (FastAPI) with MCP mounted at ``/mcp``.

    app = create_app(kernel)                       # an ASGI app
    await serve(kernel, "127.0.0.1", 7700, ready=print)   # run it with uvicorn
    async with serving(kernel) as url: ...         # in the background, port 0
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve", "serving"]


def __getattr__(name: str) -> Any:  # lazy: underlay.mcp imports server.problems
    if name == "create_app":
        from underlay.server.app import create_app

        return create_app
    if name in ("serve", "serving"):
        from underlay.server import runner

        return getattr(runner, name)
    raise AttributeError(name)
