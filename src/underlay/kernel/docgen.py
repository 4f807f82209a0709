"""``docs/syscalls.md``, generated from the table (a test fails when the file drifts).

Regenerate with ``underlay syscalls --markdown > docs/syscalls.md``.
"""

from __future__ import annotations

from typing import Any

from underlay.kernel.syscall import SyscallTable

HEADER = """# Syscalls

Generated from the syscall table by `underlay syscalls --markdown`; do not edit by hand.
Every syscall is reachable from the Python SDK (`ul.<name>(...)`), over REST
(`POST /v1/<name with dots as slashes>`), from the CLI (`underlay call <name>`) and as an
MCP tool named `<name>`. Capability `self` means any authenticated agent or human.
Mutating syscalls accept an idempotency key and are always audited.
"""


def _fields(schema: dict[str, Any]) -> str:
    props = schema.get("properties") or {}
    if not props:
        return "—"
    required = set(schema.get("required") or ())
    parts = []
    for name, spec in props.items():
        kind = spec.get("type") or (
            " or ".join(
                str(s.get("type", s.get("$ref", "?"))).split("/")[-1] for s in spec.get("anyOf", [])
            )
            or spec.get("$ref", "object").split("/")[-1]
        )
        parts.append(f"`{name}`{'' if name in required else '?'}: {kind}")
    return ", ".join(parts)


def syscalls_markdown(table: SyscallTable) -> str:
    lines = [
        HEADER,
        "| syscall | capability | mutating | cost | failure policy | input | doc |",
        "|---|---|---|---|---|---|---|",
    ]
    for sc in table:
        row = sc.describe()
        cap = row["capability"] + (" (operator)" if row["operator_only"] else "")
        lines.append(
            f"| `{sc.name}` | `{cap}` | {'yes' if sc.mutating else 'no'} | {row['cost']} "
            f"| {row['policy']} | {_fields(row['input_schema'])} | {sc.doc} |"
        )
    return "\n".join(lines) + "\n"
