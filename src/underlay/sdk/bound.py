"""Handles with one input field bound: E2B-style objects derived from the table.

``sbx = await ul.sandboxes.create(timeout=60)`` returns a ``Bound`` handle whose
syscalls get ``sandbox=sbx.id`` filled in: ``await sbx.commands.run("ls")``,
``await sbx.files.write("a.txt", "hi")``, ``await sbx.pause()``, ``await sbx.destroy()``.
Like the rest of the SDK nothing here is hand-written per syscall: a handle exposes
every syscall under its prefix whose input has the bound field, and positional
arguments fill the remaining fields in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from underlay.sdk.args import fill

if TYPE_CHECKING:
    from underlay.sdk.client import AsyncUnderlay


class Bound:
    """The syscalls under ``prefix`` with ``field=value`` filled in."""

    def __init__(
        self, client: AsyncUnderlay, prefix: str, field: str, value: Any, info: Any = None
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._field = field
        self._value = value
        self.info = info  # what created the handle returned, if it did

    @property
    def id(self) -> Any:
        return self._value

    def _takes_field(self, name: str) -> bool:
        return (
            name in self._client.table
            and self._field in self._client.table.get(name).input.model_fields
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        dotted = f"{self._prefix}.{name}"
        if self._takes_field(dotted):
            return BoundMethod(self._client, dotted, self._field, self._value)
        if any(s.name.startswith(dotted + ".") for s in self._client.table):
            return Bound(self._client, dotted, self._field, self._value, self.info)
        raise AttributeError(f"no {self._field}-bound syscall or namespace {dotted!r}")

    def __dir__(self) -> list[str]:
        depth = self._prefix.count(".") + 1
        return sorted(
            {
                s.name.split(".")[depth]
                for s in self._client.table
                if s.name.startswith(self._prefix + ".") and self._field in s.input.model_fields
            }
        )

    def __repr__(self) -> str:
        return f"<{self._prefix} {self._field}={self._value!r}>"


class BoundMethod:
    """One syscall with its bound field filled in; other fields by position or name."""

    def __init__(self, client: AsyncUnderlay, name: str, field: str, value: Any) -> None:
        self._client = client
        self._name = name
        self._field = field
        self._value = value
        self.__doc__ = client.table.get(name).doc

    async def __call__(self, *args: Any, idempotency_key: str | None = None, **fields: Any) -> Any:
        names = [
            f for f in self._client.table.get(self._name).input.model_fields if f != self._field
        ]
        fill(self._name, names, args, fields)
        fields[self._field] = self._value
        return await self._client.call(self._name, idempotency_key=idempotency_key, **fields)
