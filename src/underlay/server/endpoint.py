"""One ASGI endpoint per syscall: read the body, decode it, ``kernel.invoke``, answer.

Guarantees:

- The body is read at most ``max_body_bytes`` (+ one chunk) deep: a ``Content-Length``
  above the limit is refused before any byte is read, and streamed bytes are counted.
- Malformed JSON, a non-object body and an oversized body are refused with a 4xx
  problem *before* the kernel is invoked, so nothing is written for them.
- Everything else (authentication, validation, authorization, budget, audit...) is the
  kernel's: this endpoint holds no logic beyond translating HTTP to ``invoke``.
- The answer is ``to_wire(output)`` as JSON (200), or the error as problem+json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json
from starlette.types import Receive, Scope, Send

from underlay import errors
from underlay.server.problems import send_body, send_problem
from underlay.types import to_wire

if TYPE_CHECKING:
    from underlay.kernel.kernel import Kernel

log = logging.getLogger("underlay.server")

_TYPE_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


class _ClientGone(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


def bearer_token(value: bytes) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header, else ``None``."""
    scheme, _, credential = value.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The request body, refusing (``PayloadTooLarge``) anything over ``limit`` bytes."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise errors.InvalidInput("Content-Length is not a number") from None
        if declared > limit:
            raise errors.PayloadTooLarge(
                f"request body of {declared} bytes is over the limit of {limit}", limit_bytes=limit
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(
                f"request body is over the limit of {limit} bytes", limit_bytes=limit
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a body; an empty body is ``{}``."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise errors.InvalidInput(f"malformed JSON body: {exc}") from None
    if not isinstance(value, dict):
        kind = _TYPE_NAMES.get(type(value), type(value).__name__)
        raise errors.InvalidInput(f"the request body must be a JSON object, not {kind}")
    return value


class SyscallEndpoint:
    """ASGI app serving one syscall at ``POST route_path(name)``."""

    __slots__ = ("kernel", "limit", "name")

    def __init__(self, kernel: Kernel, name: str) -> None:
        self.kernel = kernel
        self.name = name
        self.limit = kernel.config.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = key = None
        length: bytes | None = None
        for header, value in scope["headers"]:
            if header == b"authorization":
                token = bearer_token(value)
            elif header == b"idempotency-key":
                key = value.decode("latin-1").strip() or None
            elif header == b"content-length":
                length = value
        try:
            payload = decode_body(await read_body(receive, length, self.limit))
            result = await self.kernel.invoke(self.name, payload, token=token, idempotency_key=key)
            body = to_json(to_wire(result))
        except errors.UnderlayError as exc:
            await send_problem(send, exc)
            return
        except _ClientGone:
            return
        except Exception:
            log.exception("unexpected error serving %s", self.name)
            await send_problem(send, errors.InternalError("internal server error"))
            return
        await send_body(send, 200, body)


class JsonEndpoint:
    """ASGI app answering every request with one JSON document, built on first use."""

    __slots__ = ("_body", "_build")

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._body is None:
            self._body = to_json(self._build())
        await send_body(send, 200, self._body)
