"""Who is calling, and what a handler may use while it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from underlay.types import Money

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from underlay.kernel.kernel import Kernel
    from underlay.kernel.syscall import Syscall
    from underlay.storage.engine import Database

PrincipalKind = Literal["human", "agent", "enrollment", "system"]

SELF = "self"
"""The capability of self-service syscalls (whoami, own balance, sign with own key):
every authenticated human, agent or system principal holds it; enrollment tokens do not."""


def pattern_allows(patterns: tuple[str, ...], capability: str) -> bool:
    """True when some glob pattern (``sandbox.*``, ``*``) matches ``capability``."""
    return any(p == capability or fnmatchcase(capability, p) for p in patterns)


_GLOB = frozenset("*?[")


def covered_by(requested: str, patterns: tuple[str, ...]) -> bool:
    """True when the pattern ``requested`` grants nothing beyond ``patterns``.

    A plain capability is covered by any pattern matching it. A requested *pattern* is
    covered only by itself or by a ``prefix*`` pattern it extends: matching it as a string
    is not enough (``tools.?`` matches the text ``tools.*`` but grants far less).
    """
    if not _GLOB.intersection(requested):
        return any(fnmatchcase(requested, p) for p in patterns)
    for p in patterns:
        if p == requested:
            return True
        prefix = p[:-1]
        if p.endswith("*") and not _GLOB.intersection(prefix) and requested.startswith(prefix):
            return True
    return False


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``scopes`` (from its token) further narrow ``capabilities``.

    ``task_id`` and ``attempt`` attribute the caller's spend: set (with
    ``dataclasses.replace``) on the principal a task's attempt calls syscalls as, every
    ledger hold and post the budget step makes for it carries them, so ``tasks.costs``
    can join money with the attempt's outcome. They grant and restrict nothing.
    """

    kind: PrincipalKind
    id: str
    org_id: str
    capabilities: tuple[str, ...]
    scopes: tuple[str, ...] | None = None
    token_id: str | None = None
    is_operator: bool = False
    expires_at: float | None = None
    task_id: str | None = None
    attempt: int | None = None

    def allows(self, capability: str) -> bool:
        if capability == SELF:
            return self.kind != "enrollment"
        if not pattern_allows(self.capabilities, capability):
            return False
        return self.scopes is None or pattern_allows(self.scopes, capability)

    @property
    def effective_capabilities(self) -> tuple[str, ...]:
        """What this caller may delegate: its capabilities narrowed by its token scopes."""
        if self.scopes is None:
            return self.capabilities
        return tuple(s for s in self.scopes if covered_by(s, self.capabilities))

    @property
    def payer(self) -> tuple[str, str]:
        """The (owner_kind, owner_id) whose account pays for this caller's syscalls."""
        if self.kind == "agent":
            return ("agent", self.id)
        return ("org", self.org_id)

    @staticmethod
    def system(org_id: str) -> Principal:
        return Principal(kind="system", id="system", org_id=org_id, capabilities=("*",))


@dataclass(frozen=True)
class Effect:
    """A handler's write left to the audit step (``CallContext.commit_with_audit``)."""

    work: Callable[[Connection], Any]
    then: Callable[[], None] | None = None
    undo: Callable[[], Awaitable[None]] | None = None


class Committer(Protocol):
    """The shape of ``CallContext.commit_with_audit``, for layers that take it."""

    def __call__(
        self,
        work: Callable[[Connection], Any],
        *,
        then: Callable[[], None] | None = None,
        undo: Callable[[], Awaitable[None]] | None = None,
    ) -> None: ...


@dataclass
class CallContext:
    """Given to a handler: the caller, the database, and a way back into the kernel.

    ``actual_cost`` may be set by a metered handler to post less than was held;
    ``audit`` collects result identifiers for the audit event (never secrets);
    ``commit_with_audit`` hands the chain a write to make with the audit event.
    """

    kernel: Kernel
    principal: Principal
    syscall: Syscall
    idempotency_key: str | None
    trace_id: str
    actual_cost: Money | None = None
    audit: dict[str, Any] = field(default_factory=dict)
    with_audit: list[Effect] = field(default_factory=list)

    def commit_with_audit(
        self,
        work: Callable[[Connection], Any],
        *,
        then: Callable[[], None] | None = None,
        undo: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Write ``work(connection)`` in the transaction of this call's audit event, once
        the handler has returned: the call's effect and its audit event become durable
        together, in one commit instead of two, before the caller has the result.

        ``then()`` runs once that transaction committed. If it fails, nothing of it is
        kept: ``undo()`` is awaited, the caller gets the error, and the error is audited
        (and, under an idempotency key, stored like any error: the write happens before
        the result is stored, so a stored result never points at a write that failed).
        ``undo()`` also runs if a later step of the chain fails before the write. A
        handler that raises after calling this has its writes dropped (it undoes its own
        work). Not for syscalls with a cost: the cost is posted before the audit event is
        written, and could not be taken back.
        """
        if self.syscall.cost is not None:
            raise RuntimeError(f"{self.syscall.name} has a cost: commit_with_audit is not for it")
        self.with_audit.append(Effect(work, then, undo))

    @property
    def org_id(self) -> str:
        return self.principal.org_id

    @property
    def db(self) -> Database:
        return self.kernel.db

    def now(self) -> float:
        return self.kernel.clock.now()

    async def invoke(
        self,
        name: str,
        payload: dict[str, Any] | BaseModel,
        *,
        principal: Principal | None = None,
        idempotency_key: str | None = None,
    ) -> BaseModel:
        """Call another syscall through the full chain, as this caller by default."""
        return await self.kernel.invoke(
            name, payload, principal=principal or self.principal, idempotency_key=idempotency_key
        )
