"""Running the app under uvicorn: ``serve`` (foreground) and ``serving`` (background).

``serve`` binds the socket itself, so port 0 works and ``ready(url)`` reports the port
actually bound, once the app's lifespan has started and the socket accepts connections.
Cancelling ``serve`` stops the server gracefully (connections closed, lifespan shut
down) before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp

from underlay import errors

if TYPE_CHECKING:
    from underlay.kernel.kernel import Kernel


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, created with ``IPPROTO_TCP`` so that asyncio
    sets ``TCP_NODELAY`` on accepted connections (without it, small responses wait
    ~40 ms for delayed ACKs)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise errors.Unavailable(f"cannot listen on {_url(host, port)}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise errors.Unavailable(f"cannot listen on {_url(host, port)}: {exc}") from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, reporting once it has started."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


async def serve(
    kernel: Kernel, host: str = "127.0.0.1", port: int = 7700, *,
    ready: Callable[[str], None] | None = None, app: ASGIApp | None = None,
) -> None:
    """Serve ``create_app(kernel)`` (or ``app``) on ``host:port`` until cancelled or signalled.

    Runs on the caller's event loop (start it with ``uvloop.run`` for uvloop). A port
    that cannot be bound, or an app whose lifespan fails, raises ``Unavailable``.
    """
    if app is None:
        from underlay.server.app import create_app

        app = create_app(kernel)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=10,
        http="httptools" if _has("httptools") else "h11",
        loop="uvloop" if _has("uvloop") else "asyncio",
    )
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])
    server = _Server(config, lambda: ready(url) if ready else None)
    try:
        await server.serve(sockets=[sock])
    except asyncio.CancelledError:
        if server.started:
            server.should_exit = True
            await server.shutdown(sockets=[sock])
        raise
    except SystemExit:  # uvicorn exits when the app's lifespan fails to start
        raise errors.Unavailable("the server failed to start (see the log)") from None
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def serving(
    kernel: Kernel, host: str = "127.0.0.1", port: int = 0, *, app: ASGIApp | None = None,
) -> AsyncIterator[str]:
    """Serve in a background task of the current loop; yields the URL, stops on exit."""
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def ready(url: str) -> None:
        if not started.done():
            started.set_result(url)

    task = asyncio.create_task(serve(kernel, host, port, ready=ready, app=app))
    try:
        either: list[asyncio.Future[Any]] = [task, started]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():  # serve() ended before it was ready: raise its error
            await task
            raise errors.Unavailable("the server stopped before it started")
        yield started.result()
    finally:
        task.cancel()
        await asyncio.wait([task])
