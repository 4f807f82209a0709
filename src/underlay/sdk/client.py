"""``AsyncUnderlay``: the Python API, bound to the syscall table.

Every syscall is a method named by its path: ``agents.create`` is
``await ul.agents.create("fixer", capabilities=["sandbox.*"])``. Positional arguments
fill the input model's fields in order; keywords name them; ``idempotency_key=`` is
passed to the kernel. The methods are not hand-written: they are looked up in the
table, so a new syscall is in the SDK the moment it is in the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from underlay.config import Config
from underlay.kernel.syscall import Syscall, SyscallTable
from underlay.sdk import args as args_
from underlay.sdk.bound import Bound
from underlay.sdk.transports import HttpTransport, LocalTransport, Transport


class AsyncUnderlay:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._children: list[AsyncUnderlay] = []

    @classmethod
    async def local(
        cls, home: str | Path | None = None, *, config: Config | None = None, tracer: Any = None
    ) -> AsyncUnderlay:
        """An embedded kernel (SQLite under ``home``), acting as the local admin."""
        from underlay.kernel.kernel import Kernel

        kernel = await Kernel.open(config or Config.load(home=home), tracer=tracer)
        return cls(LocalTransport(kernel, kernel.admin_token(), owns_kernel=True))

    @classmethod
    def connect(cls, url: str, token: str, *, table: SyscallTable | None = None) -> AsyncUnderlay:
        """A client of a running server; the same API as ``local``."""
        from underlay.kernel.builtin import builtin_table

        return cls(HttpTransport(url, token, table=table or builtin_table()))

    @property
    def table(self) -> SyscallTable:
        return self._transport.table

    async def call(
        self,
        name: str,
        payload: dict[str, Any] | BaseModel | None = None,
        /,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Any:
        """Invoke a syscall by name: ``await ul.call("agents.get", agent="fixer")``."""
        body: dict[str, Any] = (
            payload.model_dump(exclude_unset=True)
            if isinstance(payload, BaseModel)
            else dict(payload or {})
        )
        body.update(fields)
        return await self._transport.invoke(name, body, idempotency_key=idempotency_key)

    async def as_agent(
        self, agent: Any, *, scopes: list[str] | None = None, ttl_seconds: int | None = None
    ) -> AsyncUnderlay:
        """A client acting as ``agent`` (a model with ``id``, an id or a name)."""
        ref = getattr(agent, "id", agent)
        issued = await self.call(
            "tokens.create",
            kind="agent",
            subject=ref,
            name="sdk",
            scopes=scopes,
            ttl_seconds=ttl_seconds,
        )
        child = AsyncUnderlay(self._transport.with_token(issued.token.get_secret_value()))
        self._children.append(child)
        return child

    @property
    def sandboxes(self) -> Sandboxes:
        """E2B-style handles: ``sbx = await ul.sandboxes.create(...)``, then
        ``await sbx.commands.run("ls")`` (see ``sdk/bound.py``)."""
        return Sandboxes(self)

    def with_token(self, token: str) -> AsyncUnderlay:
        """A client using ``token`` over the same connection."""
        return AsyncUnderlay(self._transport.with_token(token))

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncUnderlay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _resolve(self, name)


class Namespace:
    """A dotted prefix of syscall names (``ul.agents``, ``ul.budget``)."""

    def __init__(self, client: AsyncUnderlay, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _resolve(self._client, f"{self._prefix}.{name}")

    def __dir__(self) -> list[str]:
        depth = self._prefix.count(".") + 1
        return sorted(
            {
                s.name.split(".")[depth]
                for s in self._client.table
                if s.name.startswith(self._prefix + ".")
            }
        )


class SyscallMethod:
    """One syscall as an awaitable method; its docstring is the table's doc line."""

    def __init__(self, client: AsyncUnderlay, syscall: Syscall) -> None:
        self._client = client
        self.syscall = syscall
        self.__doc__ = syscall.doc
        self.__name__ = syscall.name

    async def __call__(self, *args: Any, idempotency_key: str | None = None, **fields: Any) -> Any:
        args_.fill(self.syscall.name, list(self.syscall.input.model_fields), args, fields)
        return await self._client.call(self.syscall.name, idempotency_key=idempotency_key, **fields)


class Sandboxes:
    """Create or attach to sandboxes as handles bound to their id."""

    def __init__(self, client: AsyncUnderlay) -> None:
        self._client = client

    async def create(self, *args: Any, **fields: Any) -> Bound:
        """Start a sandbox (``sandbox.create``) and return its handle."""
        sbx = await SyscallMethod(self._client, self._client.table.get("sandbox.create"))(
            *args, **fields
        )
        return Bound(self._client, "sandbox", "sandbox", sbx.id, info=sbx)

    def attach(self, sandbox_id: str) -> Bound:
        """A handle on an existing sandbox."""
        return Bound(self._client, "sandbox", "sandbox", sandbox_id)


def _resolve(client: AsyncUnderlay, dotted: str) -> Any:
    table = client.table
    if dotted.endswith("_") and dotted[:-1] in table:  # ul.memory.import_ (a keyword)
        dotted = dotted[:-1]
    if dotted in table:
        return SyscallMethod(client, table.get(dotted))
    if any(s.name.startswith(dotted + ".") for s in table):
        return Namespace(client, dotted)
    raise AttributeError(f"no syscall or namespace {dotted!r} (see `underlay syscalls`)")
