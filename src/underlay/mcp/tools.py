"""The syscall table as MCP tools, and tool calls as ``Kernel.invoke``.

Guarantees:

- One tool per syscall: name = syscall name, description = doc line, ``inputSchema`` =
  the input model's JSON schema, ``outputSchema`` = the output model's (serialization)
  schema, ``readOnlyHint`` = not mutating.
- ``visible_to(principal)`` lists exactly the syscalls the principal may call (its
  capabilities and token scopes, and operator-only rows for operators only). Hiding a
  tool is a courtesy: every call still goes through the kernel, which authorizes it.
- ``call`` never raises for a failed syscall: an ``UnderlayError`` becomes a result with
  ``isError`` and the problem JSON (code, detail, field) as text; an unexpected
  exception becomes an ``internal`` problem without its text (it is logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import mcp.types as types

from underlay import errors
from underlay.kernel.context import Principal
from underlay.kernel.syscall import Syscall, SyscallTable
from underlay.types import to_wire

if TYPE_CHECKING:
    from underlay.kernel.kernel import Kernel

log = logging.getLogger("underlay.mcp")

IDEMPOTENCY_META_KEY = "underlay/idempotency_key"
"""``_meta`` key of a ``tools/call`` that carries an idempotency key for a mutating syscall."""


def tool_of(sc: Syscall) -> types.Tool:
    """The MCP tool of one syscall."""
    return types.Tool(
        name=sc.name,
        description=sc.doc,
        input_schema=sc.input.model_json_schema(),
        output_schema=sc.output.model_json_schema(mode="serialization"),
        annotations=types.ToolAnnotations(read_only_hint=not sc.mutating),
    )


def may_call(principal: Principal, sc: Syscall) -> bool:
    """The same test the kernel's ``authorize`` step applies."""
    if sc.operator_only and not principal.is_operator:
        return False
    return principal.allows(sc.capability)


class ToolCatalog:
    """The tools of one table, built once (schemas are computed at construction)."""

    def __init__(self, table: SyscallTable) -> None:
        self._rows = [(sc, tool_of(sc)) for sc in table]
        self._schemas = {tool.name: tool.input_schema for _, tool in self._rows}

    def visible_to(self, principal: Principal) -> list[types.Tool]:
        return [tool for sc, tool in self._rows if may_call(principal, sc)]

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """Public schema lookup (the SDK uses it to validate ``Mcp-Param-*`` headers)."""
        return self._schemas.get(name)


def error_result(err: errors.UnderlayError) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(err.to_dict()))], is_error=True
    )


def idempotency_key_of(meta: Mapping[str, Any] | None) -> str | None:
    value = (meta or {}).get(IDEMPOTENCY_META_KEY)
    return value if isinstance(value, str) and value else None


async def call(
    kernel: Kernel, token: str | None, name: str, arguments: dict[str, Any] | None, *,
    idempotency_key: str | None = None,
) -> types.CallToolResult:
    """Run tool ``name`` as the holder of ``token``; the kernel does all checks."""
    try:
        output = await kernel.invoke(
            name, arguments or {}, token=token, idempotency_key=idempotency_key
        )
        data = to_wire(output)
    except errors.UnderlayError as exc:
        return error_result(exc)
    except Exception:
        log.exception("unexpected error in MCP tool %s", name)
        return error_result(errors.InternalError("internal server error"))
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(data))], structured_content=data
    )
