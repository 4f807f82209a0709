"""The syscall table as data.

A ``Syscall`` names one capability of underlay: its input and output models, the
capability an agent needs to call it, its cost, whether it mutates (and so takes an
idempotency key and is always audited), its failure policy and a one-line doc.
Subsystems declare theirs with ``SyscallGroup.syscall`` on a plain async handler::

    group = SyscallGroup("agents")

    @group.syscall("agents.create", capability="agents.create", mutating=True)
    async def create(ctx: CallContext, inp: CreateAgent) -> Agent:
        "Create an agent with its key pair and capabilities."

The handler holds only domain logic: the kernel does tracing, authentication,
authorization, idempotency, budget, failure policy and audit around it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel

from underlay import errors
from underlay.kernel.policy import FailurePolicy
from underlay.types import Money

if TYPE_CHECKING:
    from underlay.kernel.context import CallContext

Handler = Callable[["CallContext", Any], Awaitable[BaseModel]]
CostFn = Callable[[Any], Money]


@dataclass(frozen=True)
class Syscall:
    """One row of the table. ``cost`` is a fixed amount or a function of the input."""

    name: str
    handler: Handler
    input: type[BaseModel]
    output: type[BaseModel]
    capability: str
    doc: str
    mutating: bool = False
    cost: Money | CostFn | None = None
    policy: FailurePolicy = field(default_factory=FailurePolicy)
    operator_only: bool = False
    backend: str = "sql"

    def cost_for(self, inp: BaseModel) -> Money | None:
        if self.cost is None:
            return None
        if isinstance(self.cost, Money):
            return self.cost
        return self.cost(inp)

    def describe(self) -> dict[str, Any]:
        """The row as plain data: what ``underlay syscalls`` and ``/v1/syscalls`` show."""
        cost = self.cost if isinstance(self.cost, Money) else None
        return {
            "name": self.name,
            "capability": self.capability,
            "mutating": self.mutating,
            "idempotent": self.mutating,
            "cost": str(cost) if cost else ("metered" if self.cost else "free"),
            "policy": self.policy.describe(),
            "operator_only": self.operator_only,
            "doc": self.doc,
            "input_schema": self.input.model_json_schema(),
            "output_schema": self.output.model_json_schema(),
        }


class SyscallGroup:
    """The syscalls one subsystem contributes, collected by decorator."""

    def __init__(self, subsystem: str) -> None:
        self.subsystem = subsystem
        self.syscalls: list[Syscall] = []

    def syscall(
        self,
        name: str,
        *,
        capability: str | None = None,
        mutating: bool = False,
        cost: Money | CostFn | None = None,
        policy: FailurePolicy | None = None,
        operator_only: bool = False,
        backend: str = "sql",
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            hints = get_type_hints(handler)
            params = list(inspect.signature(handler).parameters)
            if len(params) != 2:
                raise TypeError(f"{name}: a handler takes (ctx, inp)")
            doc = inspect.getdoc(handler)
            if not doc:
                raise TypeError(f"{name}: a handler needs a one-line docstring")
            self.syscalls.append(
                Syscall(
                    name=name,
                    handler=handler,
                    input=hints[params[1]],
                    output=hints["return"],
                    capability=capability or name,
                    doc=doc.splitlines()[0],
                    mutating=mutating,
                    cost=cost,
                    policy=policy or FailurePolicy(),
                    operator_only=operator_only,
                    backend=backend,
                )
            )
            return handler

        return register


class SyscallTable:
    """All syscalls of a kernel, by name. Built once at start-up, then read-only."""

    def __init__(self, groups: Iterable[SyscallGroup] = ()) -> None:
        self._by_name: dict[str, Syscall] = {}
        for group in groups:
            for sc in group.syscalls:
                self.add(sc)

    def add(self, sc: Syscall) -> None:
        if sc.name in self._by_name:
            raise ValueError(f"syscall {sc.name} registered twice")
        self._by_name[sc.name] = sc

    def get(self, name: str) -> Syscall:
        try:
            return self._by_name[name]
        except KeyError:
            raise errors.NotFound(f"no syscall named {name!r}", field="syscall") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Syscall]:
        return iter(sorted(self._by_name.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._by_name)
