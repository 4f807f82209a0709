"""``Underlay``: the blocking API, derived from ``AsyncUnderlay``, never hand-copied.

A private event loop runs in a daemon thread (the portal); every attribute of the async
client is wrapped so that calling it runs the coroutine there and waits for the result.
Clients, namespaces and methods come back wrapped, so ``ul.agents.create(...)`` blocks
and returns the same model the async client would.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from underlay.sdk.bound import Bound, BoundMethod
from underlay.sdk.client import AsyncUnderlay, Namespace, Sandboxes, SyscallMethod

T = TypeVar("T")


class Portal:
    """An event loop in a daemon thread that runs coroutines for blocking callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="underlay-portal", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class _Blocking:
    """Wraps one async object; attribute access and calls block on the portal."""

    def __init__(self, target: Any, portal: Portal) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_portal", portal)

    def __getattr__(self, name: str) -> Any:
        return _wrap(getattr(self._target, name), self._portal)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _wrap(self._target(*args, **kwargs), self._portal)

    def __dir__(self) -> list[str]:
        return dir(self._target)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return getattr(self._target, "__doc__", None)


class Underlay(_Blocking):
    """The blocking client: ``Underlay.local()`` or ``Underlay.connect(url, token)``."""

    @classmethod
    def local(cls, home: Any = None, **kwargs: Any) -> Underlay:
        portal = Portal()
        return cls(portal.run(AsyncUnderlay.local(home, **kwargs)), portal)

    @classmethod
    def connect(cls, url: str, token: str, **kwargs: Any) -> Underlay:
        portal = Portal()

        async def make() -> AsyncUnderlay:  # the HTTP client must be born on the portal's loop
            return AsyncUnderlay.connect(url, token, **kwargs)

        return cls(portal.run(make()), portal)

    def close(self) -> None:
        self._portal.run(self._target.close())
        self._portal.stop()

    def __enter__(self) -> Underlay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wrap(value: Any, portal: Portal) -> Any:
    if inspect.isawaitable(value):
        value = portal.run(value)  # type: ignore[arg-type]
    if isinstance(value, AsyncUnderlay):
        return _Child(value, portal)
    if isinstance(value, (Namespace, SyscallMethod, Sandboxes, Bound, BoundMethod)):
        return _Blocking(value, portal)
    if inspect.ismethod(value):
        return _Blocking(value, portal)
    return value


class _Child(Underlay):
    """A client made from another (``as_agent``): shares the portal, so closing is a no-op."""

    def close(self) -> None:
        pass
