"""Bad input through the kernel: ``InvalidInput`` naming the field, and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.helpers import CHAIN, audit_events, count, make_agent
from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.storage import schema

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("agents.create", {"name": "ok", "nickname": "x"}, "nickname"),
    ("agents.create", {}, "name"),
    ("agents.create", {"name": 42}, "name"),
    ("agents.create", {"name": "x" * 201}, "name"),
    ("agents.create", {"name": "bad/name"}, "name"),
    ("agents.create", {"name": "ok", "capabilities": "sandbox.*"}, "capabilities"),
    ("agents.create", {"name": "ok", "capabilities": [1, 2]}, "capabilities.0"),
    ("agents.create", {"name": "ok", "metadata": {"k": 1}}, "metadata.k"),
    ("agents.create", {"name": "ok", "budget": "lots"}, "budget"),
    ("agents.create", {"name": "ok", "budget": "1.0000000001 USD"}, "budget"),
    ("agents.create", {"name": "ok", "budget": 1.5}, "budget"),
    ("tokens.create", {"kind": "root"}, "kind"),
    ("tokens.create", {"kind": "enrollment", "limits": {"max_agents": "x"}}, "limits.max_agents"),
    ("tokens.create", {"kind": "enrollment", "limits": {"max_agents": 0}}, "limits.max_agents"),
    ("tokens.create", {"ttl_seconds": -1}, "ttl_seconds"),
    ("budget.fund", {"to": "a", "amount": "1 USD", "memo": "m" * 501}, "memo"),
    ("budget.fund", {"to": "a", "amount": {"currency": "USD"}}, "amount"),
    ("audit.tail", {"limit": 0}, "limit"),
    ("audit.tail", {"limit": "ten"}, "limit"),
]


async def test_bad_input_is_invalid_input_naming_the_field(kernel: Kernel) -> None:
    """One database for all the cases (each would cost a fresh PostgreSQL database)."""
    tables = (schema.agents, schema.tokens, schema.transfers, schema.idempotency)
    before = {t: await count(kernel, t) for t in tables}
    for i, (syscall, payload, field) in enumerate(CASES):
        case = f"case {i}: {syscall} {payload}"
        trail: list[str] = []
        with pytest.raises(errors.InvalidInput) as caught:
            await kernel.invoke(
                syscall, payload, token=kernel.admin_token(), idempotency_key=f"k{i}", trail=trail
            )
        assert caught.value.code == "invalid_input", case
        assert caught.value.status == 400, case
        assert caught.value.field == field, (case, caught.value.message)
        assert caught.value.message.startswith(f"{field}:"), case
        assert trail == CHAIN[:4], case  # rejected at authorize: no idempotency claim, no hold
    assert {t: await count(kernel, t) for t in tables} == before  # nothing written...
    events = await audit_events(kernel)  # ...but every attempt is audited
    assert [(e["syscall"], e["outcome"], e["error_code"]) for e in events] == [
        (syscall, "error", "invalid_input") for syscall, _, _ in CASES
    ]


async def test_a_non_object_input_is_invalid(kernel: Kernel) -> None:
    payloads: list[Any] = [[1, 2], "text", 42]  # what a JSON surface could pass through
    for payload in payloads:
        with pytest.raises(errors.InvalidInput, match="JSON object"):
            await kernel.invoke("agents.create", payload, token=kernel.admin_token())


async def test_invalid_input_is_judged_only_after_authorization(kernel: Kernel) -> None:
    """An unauthorized caller learns nothing about the input schema."""
    nobody = await make_agent(kernel, "nobody")
    with pytest.raises(errors.PermissionDenied):
        await kernel.invoke("agents.create", {"bogus": True}, token=nobody.token)


async def test_a_valid_money_object_is_accepted(kernel: Kernel) -> None:
    made: Any = await kernel.invoke(
        "agents.create",
        {"name": "rich", "budget": {"amount": "2.5", "currency": "usd"}},
        token=kernel.admin_token(),
    )
    bal: Any = await kernel.invoke("budget.balance", {"agent": made.id}, token=kernel.admin_token())
    assert str(bal.available) == "2.50 USD"
