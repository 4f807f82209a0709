"""Helpers shared by the spine's tests (kernel, identity, billing, storage, sdk).

Import as ``from kernel.helpers import ...`` (``tests/`` is on ``sys.path``).

``Probe`` is the one fake the suite allows itself: a test-only syscall with a fixed cost
whose handler counts its runs and can be told to fail, so that the chain around it
(budget, idempotency, failure policy, audit) can be observed from the outside.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from sqlalchemy import Table, func, select

from underlay import errors
from underlay.billing.ledger import Balance
from underlay.billing.syscalls import group as billing_group
from underlay.config import Config
from underlay.identity.syscalls import group as identity_group
from underlay.kernel.clock import Clock
from underlay.kernel.context import CallContext
from underlay.kernel.kernel import Kernel
from underlay.kernel.policy import FailurePolicy
from underlay.kernel.syscall import SyscallGroup, SyscallTable
from underlay.kernel.syscalls import group as kernel_group
from underlay.storage import schema
from underlay.types import Money, StrictModel

CHAIN = [
    "trace", "authenticate", "audit", "authorize", "idempotency", "budget", "policy", "handler",
]


def table_with(*groups: SyscallGroup) -> SyscallTable:
    """The builtin syscalls plus test-only groups."""
    return SyscallTable([kernel_group, identity_group, billing_group, *groups])


OpenKernel = Callable[..., Awaitable[Kernel]]


@pytest.fixture
async def open_kernel(config: Config) -> AsyncIterator[OpenKernel]:
    """``await open_kernel(*groups, clock=, tracer=, config=)``: a kernel on the test's
    database with the builtin syscalls plus ``groups``; closed after the test."""
    opened: list[Kernel] = []

    async def open_(
        *groups: SyscallGroup, clock: Clock | None = None, tracer: Any = None,
        config: Config = config,
    ) -> Kernel:
        k = await Kernel.open(config, table=table_with(*groups), clock=clock, tracer=tracer)
        opened.append(k)
        return k

    yield open_
    for k in reversed(opened):
        await k.close()


@dataclass(frozen=True)
class Actor:
    """An agent (or an org admin) and a bearer token for it."""

    id: str
    name: str
    token: str
    org_id: str
    did: str | None = None


async def make_agent(
    k: Kernel,
    name: str,
    capabilities: Iterable[str] = (),
    budget: str | None = None,
    *,
    token: str | None = None,
    scopes: list[str] | None = None,
) -> Actor:
    """Create an agent as ``token`` (default: the local admin) and mint it a token."""
    admin = token or k.admin_token()
    payload: dict[str, Any] = {"name": name, "capabilities": list(capabilities)}
    if budget is not None:
        payload["budget"] = budget
    agent: Any = await k.invoke("agents.create", payload, token=admin)
    issued: Any = await k.invoke(
        "tokens.create", {"kind": "agent", "subject": agent.id, "scopes": scopes}, token=admin
    )
    return Actor(agent.id, agent.name, issued.token.get_secret_value(), agent.org_id, agent.did)


async def make_org(k: Kernel, name: str) -> Actor:
    """A second org, created by the operator; returns its (non-operator) admin."""
    made: Any = await k.invoke("orgs.create", {"name": name}, token=k.admin_token())
    return Actor(made.admin_id, "admin", made.admin_token.get_secret_value(), made.org_id)


async def rows(k: Kernel, table: Table, **where: Any) -> list[dict[str, Any]]:
    q = select(table)
    for col, value in where.items():
        q = q.where(table.c[col] == value)
    async with k.db.read() as conn:
        return [dict(r._mapping) for r in (await conn.execute(q)).all()]


async def count(k: Kernel, table: Table, **where: Any) -> int:
    q = select(func.count()).select_from(table)
    for col, value in where.items():
        q = q.where(table.c[col] == value)
    async with k.db.read() as conn:
        return int((await conn.execute(q)).scalar_one())


async def audit_events(k: Kernel, org_id: str | None = None, **where: Any) -> list[dict[str, Any]]:
    org = org_id or default_org(k)
    found = await rows(k, schema.audit_events, org_id=org, **where)
    return sorted(found, key=lambda e: e["seq"])


def default_org(k: Kernel) -> str:
    assert k.bootstrap_info is not None
    return k.bootstrap_info.org_id


async def balance(k: Kernel, agent_id: str, org_id: str | None = None) -> Balance:
    return await k.ledger.balance(org_id or default_org(k), ("agent", agent_id), "USD")


def usd(text: str) -> Money:
    return Money.parse(f"{text} USD")


class Work(StrictModel):
    text: str = ""
    fail: Literal["fatal", "retryable", "crash"] | None = None
    actual_cost: str | None = None
    sleep: float = 0.0


class Done(StrictModel):
    text: str
    run: int


class Probe:
    """A test-only mutating syscall ``name`` with a fixed ``cost``.

    ``runs`` counts handler executions (across threads and kernels); ``script`` is a
    list of errors (or None for "succeed") consumed one per run before the input's own
    instructions; ``gate``, when set, makes every run wait for it.
    """

    def __init__(
        self,
        name: str = "test.work",
        *,
        cost: str | None = "0.10 USD",
        policy: FailurePolicy | None = None,
        capability: str | None = None,
    ) -> None:
        self.name = name
        self.runs = 0
        self.script: list[errors.UnderlayError | None] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()  # set once the handler has run
        self._lock = threading.Lock()
        self.group = SyscallGroup("test")
        self.group.syscall(
            name,
            capability=capability,
            mutating=True,
            cost=Money.parse(cost) if cost else None,
            policy=policy,
        )(self._handler())

    def _handler(self) -> Any:
        probe = self

        async def work(ctx: CallContext, inp: Work) -> Done:
            """A test-only syscall that counts its runs and fails on request."""
            with probe._lock:
                probe.runs += 1
                run = probe.runs
                scripted = probe.script.pop(0) if probe.script else None
            probe.started.set()
            if probe.gate is not None:
                await probe.gate.wait()
            if scripted is not None:
                raise scripted
            if inp.sleep:
                await asyncio.sleep(inp.sleep)
            if inp.fail == "fatal":
                raise errors.Conflict("the probe was told to fail")
            if inp.fail == "retryable":
                raise errors.Unavailable("the probe's backend is down")
            if inp.fail == "crash":
                raise RuntimeError("probe internals: s3cr3t-detail")
            if inp.actual_cost:
                ctx.actual_cost = Money.parse(inp.actual_cost)
            ctx.audit["run"] = run
            return Done(text=inp.text, run=run)

        return work
