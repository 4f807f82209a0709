"""How a client reaches a kernel: in the same process, or over HTTP.

Both transports take the same arguments and return the syscall's output model, and
raise the same ``UnderlayError`` subclasses, so code behaves the same either way.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx
from pydantic import BaseModel

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.kernel.syscall import SyscallTable
from underlay.types import to_wire
from underlay.wire import IDEMPOTENCY_HEADER, route_path


class Transport(Protocol):
    table: SyscallTable

    async def invoke(
        self, name: str, payload: dict[str, Any], *, idempotency_key: str | None
    ) -> BaseModel: ...

    def with_token(self, token: str) -> Transport: ...

    async def close(self) -> None: ...


class LocalTransport:
    """Calls ``Kernel.invoke`` directly; closes the kernel only if it owns it."""

    def __init__(self, kernel: Kernel, token: str, *, owns_kernel: bool = False) -> None:
        self.kernel = kernel
        self.table = kernel.table
        self.token = token
        self._owns = owns_kernel

    async def invoke(
        self, name: str, payload: dict[str, Any], *, idempotency_key: str | None
    ) -> BaseModel:
        return await self.kernel.invoke(
            name, payload, token=self.token, idempotency_key=idempotency_key
        )

    def with_token(self, token: str) -> LocalTransport:
        return LocalTransport(self.kernel, token)

    async def close(self) -> None:
        if self._owns:
            await self.kernel.close()


class HttpTransport:
    """POSTs JSON to ``/v1/<syscall path>``; problem+json errors become typed errors."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        table: SyscallTable,
        client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.table = table
        self._owns = client is None
        self.client = client or httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def invoke(
        self, name: str, payload: dict[str, Any], *, idempotency_key: str | None
    ) -> BaseModel:
        sc = self.table.get(name)
        headers = {"Authorization": f"Bearer {self.token}"}
        if idempotency_key:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        body = to_wire(payload) if isinstance(payload, BaseModel) else _jsonable(payload)
        try:
            resp = await self.client.post(route_path(name), json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise errors.Timeout(f"{name}: no answer from {self.url}") from exc
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"{name}: cannot reach {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                problem = resp.json()
            except ValueError:
                raise errors.Unavailable(
                    f"{name}: HTTP {resp.status_code} without a problem document"
                ) from None
            raise errors.UnderlayError.from_dict(problem)
        return sc.output.model_validate(resp.json())

    def with_token(self, token: str) -> HttpTransport:
        return HttpTransport(self.url, token, table=self.table, client=self.client)

    async def close(self) -> None:
        if self._owns:
            await self.client.aclose()


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return to_wire(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # Money, Decimal, paths: their string forms are the wire forms
