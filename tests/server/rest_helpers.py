"""Assertions shared by the REST tests."""

from __future__ import annotations

from typing import Any

import httpx

from underlay.sdk.client import AsyncUnderlay

ANY = object()


def assert_problem(
    resp: httpx.Response, status: int, code: str, field: Any = ANY
) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem with ``status``, ``code`` and (if given) ``field``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["type"].endswith(f"/errors/{code}") and body["detail"]
    if field is not ANY:
        assert body.get("field") == field, body
    return body


async def agent_names(ul: AsyncUnderlay) -> list[str]:
    return [a.name for a in (await ul.agents.list(limit=500)).items]


async def audit_outcomes(ul: AsyncUnderlay, syscall: str) -> list[str]:
    return [e.outcome for e in (await ul.audit.tail(limit=1000, syscall=syscall)).items]
