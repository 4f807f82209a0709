"""The OpenAPI 3.1 document of the REST surface, generated from the syscall table.

Each syscall is ``POST route_path(name)`` with its input model as the request body, its
output model as the 200 response, its doc line as summary, its capability, cost and
idempotency in the description, and the first segment of its name as tag. Schemas come
from one ``pydantic.json_schema.models_json_schema`` pass over every input (validation
mode) and output (serialization mode), so shared models are defined once and models
whose two modes differ get distinct names. FastAPI never validates these bodies: the
kernel does, once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from underlay import __version__
from underlay.kernel.syscall import Syscall, SyscallTable
from underlay.wire import IDEMPOTENCY_HEADER, PROBLEM_JSON, route_path

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details plus underlay's stable error code.",
    "required": ["type", "title", "status", "detail", "code", "retryable"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "examples": ["invalid_input", "permission_denied"]},
        "retryable": {"type": "boolean"},
        "field": {"type": "string", "description": "the input field to blame, if one is"},
        "details": {"type": "object"},
    },
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}}


def _description(sc: Syscall) -> str:
    lines = [f"Capability: `{sc.capability}`" + (" (operators only)" if sc.operator_only else "")]
    lines.append(f"Cost: {sc.describe()['cost']}")
    if sc.mutating:
        lines.append(f"Mutating: send an `{IDEMPOTENCY_HEADER}` header to make retries safe.")
    return "\n\n".join(lines)


def _operation(sc: Syscall, request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": sc.name,
        "summary": sc.doc,
        "description": _description(sc),
        "tags": [sc.name.split(".")[0]],
        "requestBody": {"required": False, "content": _json(request)},
        "responses": {
            "200": {"description": sc.output.__name__, "content": _json(response)},
            "4XX": _problem("The request was refused; `code` says why, `field` where."),
            "5XX": _problem("underlay or a backend failed; see `retryable`."),
        },
        "security": [{"bearer": []}],
    }
    if sc.mutating:
        op["parameters"] = [{
            "name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
            "description": "A repeated key replays the first result instead of running again.",
            "schema": {"type": "string", "maxLength": 200},
        }]
    return op


def _public_get(summary: str, tag: str) -> dict[str, Any]:
    return {"get": {
        "operationId": summary, "summary": summary, "tags": [tag], "security": [],
        "responses": {"200": {"description": "OK", "content": _json({"type": "object"})}},
    }}


def openapi_document(table: SyscallTable, *, title: str = "underlay") -> dict[str, Any]:
    """The whole document for ``table``; cheap enough to build once per app."""
    syscalls = list(table)
    keys: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for sc in syscalls:
        keys.extend([(sc.input, "validation"), (sc.output, "serialization")])
    refs, top = models_json_schema(
        list(dict.fromkeys(keys)), ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, Any] = {
        route_path(sc.name): {
            "post": _operation(
                sc, dict(refs[(sc.input, "validation")]), dict(refs[(sc.output, "serialization")])
            )
        }
        for sc in syscalls
    }
    paths["/v1/syscalls"] = _public_get("List the syscall table", "system")
    paths["/healthz"] = _public_get("Liveness check", "system")
    schemas = dict(top.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title, "version": __version__,
            "description": "Each route is one syscall of the table, run by `Kernel.invoke`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
