"""Every error the REST surface sends is an RFC 9457 ``application/problem+json`` body.

The body of an ``UnderlayError`` is ``err.to_dict()`` with ``err.status``; routing errors
(no such path, wrong method) and unexpected exceptions get the same shape, so a client
never sees a bare framework error page. A 500 never carries exception text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from pydantic_core import to_json
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from underlay import errors
from underlay.wire import PROBLEM_JSON

log = logging.getLogger("underlay.server")

_PROBLEM = PROBLEM_JSON.encode()
_JSON = b"application/json"


def problem_headers(err: errors.UnderlayError) -> list[tuple[bytes, bytes]]:
    """Extra headers an error implies (RFC 6750: a 401 names the Bearer scheme)."""
    if err.status == 401:
        return [(b"www-authenticate", b'Bearer realm="underlay"')]
    return []


async def send_body(
    send: Send, status: int, body: bytes, *, content_type: bytes = _JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send one complete response on a raw ASGI ``send``."""
    raw = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        raw.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_problem(send: Send, err: errors.UnderlayError) -> None:
    """Send ``err`` as problem+json with its own status."""
    await send_body(
        send, err.status, to_json(err.to_dict()), content_type=_PROBLEM,
        headers=problem_headers(err),
    )


def problem_response(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    """A Starlette response for handlers that work on ``Request`` objects."""
    return Response(
        to_json(body), status_code=body["status"], media_type=PROBLEM_JSON, headers=headers
    )


def http_problem(status: int, detail: str) -> dict[str, Any]:
    """The problem body of a routing-level HTTP error (404, 405, ...)."""
    if status == 404:
        return errors.NotFound(detail).to_dict()
    if status == 413:
        return errors.PayloadTooLarge(detail).to_dict()
    if status == 400:
        return errors.InvalidInput(detail).to_dict()
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    return {
        "type": f"https://underlay.dev/errors/{code}",
        "title": phrase.lower(),
        "status": status,
        "detail": detail,
        "code": code,
        "retryable": status in (429, 502, 503, 504),
    }


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's ``HTTPException`` (raised by the router) as problem+json."""
    assert isinstance(exc, HTTPException)
    method, path = request.method, request.url.path
    if exc.status_code == 404:
        detail = f"no route {method} {path} (GET /v1/syscalls lists them)"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{method} is not allowed on {path}; use {allowed}"
    else:
        detail = str(exc.detail)
    return problem_response(http_problem(exc.status_code, detail), headers=exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """Last resort: log the exception, answer 500 ``internal`` without its text."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(errors.InternalError("internal server error").to_dict())
