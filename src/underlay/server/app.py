"""The REST surface: a FastAPI app whose routes are the syscall table.

``create_app(kernel)`` serves:

- ``POST /v1/<syscall path>`` for every syscall (``underlay.wire.route_path``): the JSON
  body (empty = ``{}``) goes to ``kernel.invoke`` with the ``Authorization: Bearer``
  token and the ``Idempotency-Key`` header; the answer is ``to_wire(output)``.
- ``GET /v1/syscalls`` (the table, public), ``GET /healthz``, ``/openapi.json``, ``/docs``.
- ``/mcp``: MCP streamable HTTP over the same kernel.

Every error is problem+json (see ``problems``). The app holds no auth, audit, budget or
retry logic: ``kernel.invoke`` does all of it. Its lifespan runs the MCP session manager
and the kernel's hold-expiry loop, and stops both on shutdown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.routing import Route

from underlay import __version__
from underlay.mcp.http import mcp_http_app
from underlay.server.endpoint import JsonEndpoint, SyscallEndpoint
from underlay.server.openapi import openapi_document
from underlay.server.problems import on_http_exception, on_unexpected
from underlay.server.runner import serve, serving
from underlay.wire import API_PREFIX, route_path

if TYPE_CHECKING:
    from underlay.kernel.kernel import Kernel

__all__ = ["create_app", "serve", "serving"]

log = logging.getLogger("underlay.server")

MCP_PATH = "/mcp"
SYSCALLS_PATH = f"{API_PREFIX}/syscalls"


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s stopped", task.get_name(), exc_info=task.exception())


def create_app(kernel: Kernel) -> FastAPI:
    """The ASGI app of ``kernel``. Cheap to build; schemas are computed on first use."""
    mcp = mcp_http_app(kernel)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        expiry = asyncio.create_task(kernel.expire_holds_forever(), name="underlay-expire-holds")
        expiry.add_done_callback(_report_crash)
        try:
            async with mcp.running():
                yield
        finally:
            expiry.cancel()
            await asyncio.wait([expiry])

    app = FastAPI(
        title="underlay", version=__version__, lifespan=lifespan, redirect_slashes=False,
        docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
        exception_handlers={HTTPException: on_http_exception, Exception: on_unexpected},
    )
    app.state.kernel = kernel
    app.openapi = functools.cache(lambda: openapi_document(kernel.table))  # type: ignore[method-assign]
    routes = app.router.routes
    for sc in kernel.table:
        routes.append(Route(
            route_path(sc.name), SyscallEndpoint(kernel, sc.name), methods=["POST"],
            name=sc.name, include_in_schema=False,
        ))
    routes.append(Route(
        SYSCALLS_PATH, JsonEndpoint(lambda: {"items": [sc.describe() for sc in kernel.table]}),
        methods=["GET"], name="syscalls", include_in_schema=False,
    ))
    routes.append(Route(
        "/healthz", JsonEndpoint(lambda: {"ok": True}), methods=["GET"], name="healthz",
        include_in_schema=False,
    ))
    routes.append(Route(MCP_PATH, mcp, name="mcp", include_in_schema=False))
    return app
