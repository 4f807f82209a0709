"""The REST routes: one per syscall, the table, OpenAPI, routing errors, 500s."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from pydantic import PlainSerializer

from server.rest_helpers import agent_names, assert_problem, audit_outcomes
from underlay.billing.syscalls import group as billing_group
from underlay.config import Config
from underlay.identity.syscalls import group as identity_group
from underlay.kernel.context import CallContext
from underlay.kernel.kernel import Kernel
from underlay.kernel.syscall import SyscallGroup, SyscallTable
from underlay.kernel.syscalls import group as kernel_group
from underlay.sdk.client import AsyncUnderlay
from underlay.server.app import create_app
from underlay.types import Empty, StrictModel
from underlay.wire import route_path


async def test_a_syscall_answers_with_its_wire_output(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay
) -> None:
    r = await http.post("/v1/agents/create", headers=auth,
                        json={"name": "fixer", "capabilities": ["system.*"], "budget": "2.50 USD"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    agent = r.json()
    assert agent["name"] == "fixer" and agent["did"].startswith("did:key:")
    assert (await ul.agents.get("fixer")).id == agent["id"]
    empty = await http.post("/v1/budget/balance", headers=auth, content=b"")  # empty body = {}
    assert empty.status_code == 200 and empty.json()["owner"].startswith("org:")


async def test_a_minted_token_is_revealed_to_its_owner_and_works(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay
) -> None:
    await ul.agents.create("fixer", capabilities=["system.*"])
    r = await http.post("/v1/tokens/create", json={"subject": "fixer"}, headers=auth)
    token = r.json()["token"]
    assert token.startswith("ul_") and r.json()["info"]["subject_id"]
    me = await http.post("/v1/self/whoami", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["kind"] == "agent" and me.json()["id"] == r.json()["info"]["subject_id"]
    # the audit trail never holds the secret
    events = (await ul.audit.tail(syscall="tokens.create")).items
    assert token not in str([e.detail for e in events])


async def test_idempotency_key_header_replays_the_first_result(
    http: httpx.AsyncClient, auth: dict[str, str], ul: AsyncUnderlay
) -> None:
    headers = {**auth, "Idempotency-Key": "create-fixer-1"}
    first = await http.post("/v1/agents/create", json={"name": "fixer"}, headers=headers)
    again = await http.post("/v1/agents/create", json={"name": "fixer"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert await agent_names(ul) == ["fixer"]
    assert await audit_outcomes(ul, "agents.create") == ["replayed", "ok"]
    other = await http.post("/v1/agents/create", json={"name": "other"}, headers=headers)
    assert_problem(other, 409, "idempotency_key_reused")
    assert await agent_names(ul) == ["fixer"]


async def test_syscalls_lists_the_table_publicly(http: httpx.AsyncClient, kernel: Kernel) -> None:
    r = await http.get("/v1/syscalls")
    assert r.status_code == 200
    rows = r.json()["items"]
    assert [row["name"] for row in rows] == [sc.name for sc in kernel.table]
    by_name = {row["name"]: row for row in rows}
    assert by_name["agents.create"]["capability"] == "agents.create"
    assert by_name["agents.create"]["mutating"] is True
    assert "name" in by_name["agents.create"]["input_schema"]["properties"]
    assert by_name["orgs.create"]["operator_only"] is True


async def test_healthz_and_docs(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"ok": True}
    docs = await http.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_openapi_documents_every_syscall(http: httpx.AsyncClient, kernel: Kernel) -> None:
    doc = (await http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    for sc in kernel.table:
        op = doc["paths"][route_path(sc.name)]["post"]
        assert op["operationId"] == sc.name and op["summary"] == sc.doc
        assert op["tags"] == [sc.name.split(".")[0]]
        assert f"`{sc.capability}`" in op["description"]
        request = _resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
        assert set(request.get("properties", {})) == set(sc.input.model_fields), sc.name
        response = _resolve(doc, op["responses"]["200"]["content"]["application/json"]["schema"])
        assert set(response.get("properties", {})) == set(sc.output.model_fields), sc.name
        assert "application/problem+json" in op["responses"]["4XX"]["content"]
        idempotency = [p for p in op.get("parameters", []) if p["name"] == "Idempotency-Key"]
        assert bool(idempotency) == sc.mutating, sc.name
    missing = {r for r in _refs(doc) if r.rsplit("/", 1)[1] not in doc["components"]["schemas"]}
    assert not missing
    create = _resolve(doc, doc["paths"]["/v1/agents/create"]["post"]["requestBody"]["content"]
                      ["application/json"]["schema"])
    assert create["required"] == ["name"] and create["additionalProperties"] is False


async def test_unknown_route_and_wrong_method_are_problems(
    http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for path in ("/v1/agents/explode", "/v1/agents/create/", "/nowhere"):
        r = await http.post(path, json={}, headers=auth)
        assert "no route POST" in assert_problem(r, 404, "not_found")["detail"]
    r = await http.get("/v1/agents/create", headers=auth)
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    r = await http.post("/healthz")
    assert_problem(r, 405, "method_not_allowed")


# -- unexpected failures: a test-only table with syscalls that break ------------------

broken = SyscallGroup("broken")


def _explode(value: str) -> str:
    raise RuntimeError("secret serializer detail")


class Unserializable(StrictModel):
    value: Annotated[str, PlainSerializer(_explode)]


@broken.syscall("broken.crash", capability="system.noop")
async def crash(ctx: CallContext, inp: Empty) -> Empty:
    """Raise an exception the handler did not expect."""
    raise RuntimeError("secret handler detail")


@broken.syscall("broken.output", capability="system.noop")
async def bad_output(ctx: CallContext, inp: Empty) -> Unserializable:
    """Return an output that cannot be put on the wire."""
    return Unserializable(value="x")


@pytest.fixture
async def broken_http(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    table = SyscallTable([kernel_group, identity_group, billing_group, broken])
    k = await Kernel.open(config, table=table)
    try:
        transport = httpx.ASGITransport(create_app(k))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t",
            headers={"Authorization": f"Bearer {k.admin_token()}"},
        ) as c:
            yield c
    finally:
        await k.close()


async def test_unexpected_errors_are_500_without_their_text(
    broken_http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        for path in ("/v1/broken/crash", "/v1/broken/output"):
            r = await broken_http.post(path)
            problem = assert_problem(r, 500, "internal")
            assert "secret" not in r.text and problem["retryable"] is False
    assert "secret serializer detail" in caplog.text  # logged for the operator
    assert (await broken_http.post("/v1/system/noop")).status_code == 200  # still serving
