"""Every class of bad input gets a 4xx problem with a code (and a field where one is to
blame), never a 500, and writes nothing: no agent, no successful audit event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from server.rest_helpers import agent_names, assert_problem, audit_outcomes
from underlay.sdk.client import AsyncUnderlay

CREATE = "/v1/agents/create"


async def assert_nothing_written(ul: AsyncUnderlay) -> None:
    assert await agent_names(ul) == []
    assert "ok" not in await audit_outcomes(ul, "agents.create")


async def test_malformed_json_is_400_and_never_reaches_the_kernel(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay
) -> None:
    for body in (b'{"name": "a",', b"{'name': 'a'}", b"\xff\xfe", b"NaN]"):
        r = await http.post(CREATE, content=body, headers=auth)
        body_ = assert_problem(r, 400, "invalid_input", field=None)
        assert body_["detail"].startswith("malformed JSON body")
    await assert_nothing_written(ul)
    assert await audit_outcomes(ul, "agents.create") == []  # not even an error event


@pytest.mark.parametrize(
    ("body", "kind"), [(b"[]", "an array"), (b'"fixer"', "a string"), (b"42", "a number"),
                       (b"null", "null"), (b"true", "a boolean")],
)
async def test_a_body_that_is_not_an_object_is_400(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay, body: bytes, kind: str
) -> None:
    r = await http.post(CREATE, content=body, headers=auth)
    problem = assert_problem(r, 400, "invalid_input")
    assert problem["detail"] == f"the request body must be a JSON object, not {kind}"
    await assert_nothing_written(ul)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "fixer", "bogus": 1}, "bogus"),  # unknown field
        ({"name": 5}, "name"),  # wrong type
        ({"name": "fixer", "capabilities": "system.*"}, "capabilities"),
        ({"name": "fixer", "metadata": {"k": 1}}, "metadata.k"),
        ({"name": "no/slash"}, "name"),  # constraint
        ({}, "name"),  # missing required field
    ],
)
async def test_invalid_fields_are_named(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay,
    payload: dict[str, object], field: str,
) -> None:
    r = await http.post(CREATE, json=payload, headers=auth)
    assert_problem(r, 400, "invalid_input", field=field)
    await assert_nothing_written(ul)
    assert await audit_outcomes(ul, "agents.create") == ["error"]


async def test_oversized_body_by_content_length_is_413(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay
) -> None:
    limit = ul._transport.kernel.config.max_body_bytes  # type: ignore[attr-defined]
    big = json.dumps({"name": "fixer", "metadata": {"pad": "x" * limit}}).encode()
    r = await http.post(CREATE, content=big, headers=auth)
    problem = assert_problem(r, 413, "payload_too_large", field=None)
    assert problem["details"] == {"limit_bytes": limit}
    await assert_nothing_written(ul)


async def test_oversized_streamed_body_is_413_without_reading_it_all(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay
) -> None:
    limit = ul._transport.kernel.config.max_body_bytes  # type: ignore[attr-defined]
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        nonlocal sent
        yield b'{"name": "fixer", "metadata": {"pad": "'
        for _ in range(4 * limit // 65536):
            sent += 65536
            yield b"x" * 65536
        yield b'"}}'

    r = await http.post(CREATE, content=chunks(), headers=auth)
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "payload_too_large")
    assert sent <= limit + 65536  # it stopped reading at the limit
    await assert_nothing_written(ul)


async def test_an_exactly_full_body_is_accepted(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay
) -> None:
    limit = ul._transport.kernel.config.max_body_bytes  # type: ignore[attr-defined]
    body = b'{"name": "fixer"}'
    r = await http.post(CREATE, content=body + b" " * (limit - len(body)), headers=auth)
    assert r.status_code == 200 and r.json()["name"] == "fixer"


async def test_bad_content_length_is_400(
    app: object, admin_token: str, ul: AsyncUnderlay
) -> None:
    sent: list[dict[str, object]] = []
    scope = {
        "type": "http", "method": "POST", "path": CREATE, "raw_path": CREATE.encode(),
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "server": ("t", 80), "client": ("127.0.0.1", 1),
        "headers": [(b"authorization", f"Bearer {admin_token}".encode()),
                    (b"content-length", b"lots")],
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[operator]
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["detail"] == "Content-Length is not a number"  # type: ignore[arg-type]
    await assert_nothing_written(ul)


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "missing bearer token"),
        ({"Authorization": "Bearer "}, "missing bearer token"),
        ({"Authorization": "Bearer not-a-token"}, "malformed token"),
        ({"Authorization": "Bearer ul_" + "A" * 43}, "unknown token"),  # forged
    ],
)
async def test_missing_or_forged_tokens_are_401(
    http: httpx.AsyncClient, ul: AsyncUnderlay, headers: dict[str, str], detail: str
) -> None:
    r = await http.post(CREATE, json={"name": "fixer"}, headers=headers)
    problem = assert_problem(r, 401, "unauthenticated", field=None)
    assert problem["detail"] == detail
    assert r.headers["www-authenticate"].startswith("Bearer")
    await assert_nothing_written(ul)


async def test_expired_and_revoked_tokens_are_401(
    http: httpx.AsyncClient, ul: AsyncUnderlay
) -> None:
    me = await ul.self.whoami()
    short = await ul.tokens.create(kind="human", subject=me.id, ttl_seconds=2)
    revoked = await ul.tokens.create(kind="human", subject=me.id)
    for issued in (short, revoked):
        ok = await http.post("/v1/self/whoami", headers=_bearer(issued.token.get_secret_value()))
        assert ok.status_code == 200
    await ul.tokens.revoke(revoked.info.id)
    await asyncio.sleep(2.05)
    for issued, detail in ((short, "token expired"), (revoked, "token revoked")):
        r = await http.post(CREATE, json={"name": "fixer"},
                            headers=_bearer(issued.token.get_secret_value()))
        assert assert_problem(r, 401, "unauthenticated")["detail"] == detail
    await assert_nothing_written(ul)


async def test_ids_from_another_org_are_404(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay
) -> None:
    other = await ul.orgs.create("elsewhere")
    theirs = AsyncUnderlay(ul._transport.with_token(other.admin_token.get_secret_value()))
    stranger = await theirs.agents.create("stranger")
    for path in ("/v1/agents/get", "/v1/agents/disable"):
        r = await http.post(path, json={"agent": stranger.id}, headers=auth)
        assert_problem(r, 404, "not_found", field="agent")
    r = await http.post("/v1/tokens/revoke", json={"token_id": "tok_" + stranger.id}, headers=auth)
    assert_problem(r, 404, "not_found", field="token_id")
    assert (await theirs.agents.get(stranger.id)).status == "active"
    assert "ok" not in await audit_outcomes(ul, "agents.disable")


async def test_denied_capability_is_403_and_audited_as_denied(
    http: httpx.AsyncClient, ul: AsyncUnderlay
) -> None:
    worker = await ul.agents.create("worker", capabilities=["system.*"])
    token = (await ul.tokens.create(subject=worker.id)).token.get_secret_value()
    r = await http.post(CREATE, json={"name": "spawn"}, headers=_bearer(token))
    problem = assert_problem(r, 403, "permission_denied")
    assert problem["details"] == {"capability": "agents.create"}
    assert await agent_names(ul) == ["worker"]
    # newest first: the denial is audited; the only success is the admin's own create
    assert await audit_outcomes(ul, "agents.create") == ["denied", "ok"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
