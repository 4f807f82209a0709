"""Opt-in network egress: a per-sandbox HTTP proxy with a domain allow-list.

A sandbox never has a network interface besides loopback. When it is created with
``network.allow``, the host runs this proxy on a unix socket bound into the sandbox,
``ulfwd`` relays ``127.0.0.1:3128`` inside the sandbox to it, and every command gets
``HTTP_PROXY``/``HTTPS_PROXY`` pointing there. The proxy speaks ``CONNECT`` (HTTPS and
any TCP) and absolute-form plain HTTP, one request per connection.

Guarantees: a host that matches no allow-list entry is refused (403) before any name
is resolved or any packet sent; every request, allowed or refused, is reported to
``on_request`` (the compute manager writes it to the audit trail) with host, port,
method and the bytes moved each way. Allow-list entries: ``example.com`` (that host),
``*.example.com`` (its subdomains), either optionally with ``:port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PROXY_PORT = 3128
HEAD_LIMIT = 16384
CONNECT_TIMEOUT_S = 10.0
Reporter = Callable[[dict[str, Any]], Awaitable[None]]


def allowed(host: str, port: int, allow: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allow:
        pattern, _, want_port = entry.lower().partition(":")
        if want_port and want_port != str(port):
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def _split_host(hostport: str, default: int) -> tuple[str, int]:
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return hostport, default


class EgressProxy:
    def __init__(self, socket_path: Path, allow: list[str], report: Reporter, uid: int) -> None:
        self.path = socket_path
        self.allow = allow
        self.report = report
        self.uid = uid
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chown(self.path, self.uid, self.uid)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        event: dict[str, Any] = {"allowed": False}
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT_S)
            method, host, port, forward = _parse(head)
            event.update(method=method, host=host, port=port)
            if not allowed(host, port, self.allow):
                event["reason"] = "not in the allow-list"
                await _reply(writer, 403, f"underlay: egress to {host}:{port} is not allowed")
                return
            try:
                up_r, up_w = await asyncio.wait_for(
                    asyncio.open_connection(host, port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                event["reason"] = f"connect failed: {exc}"
                await _reply(writer, 502, f"underlay: cannot reach {host}:{port}")
                return
            event["allowed"] = True
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_w.write(forward)
            up, down = await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            event.update(bytes_up=up, bytes_down=down)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            event.setdefault("reason", "malformed request")
            with contextlib.suppress(Exception):
                await _reply(writer, 400, "underlay: malformed proxy request")
        finally:
            writer.close()
            if "host" in event or "reason" in event:
                await self.report(event)


def _parse(head: bytes) -> tuple[str, str, int, bytes]:
    """(method, host, port, bytes to send upstream) of a proxy request head."""
    if len(head) > HEAD_LIMIT:
        raise ValueError("head too large")
    first, _, rest = head.partition(b"\r\n")
    method, target, version = first.decode("latin-1").split(" ")
    if method == "CONNECT":
        host, port = _split_host(target, 443)
        return method, host, port, b""
    if not target.startswith("http://"):
        raise ValueError("a plain HTTP request through the proxy needs an absolute URL")
    hostport, _, path = target[len("http://") :].partition("/")
    host, port = _split_host(hostport, 80)
    headers = [
        h
        for h in rest.split(b"\r\n")
        if h and not h.lower().startswith((b"proxy-", b"connection:"))
    ]
    lines = [f"{method} /{path} {version}".encode(), *headers, b"Connection: close", b"", b""]
    return method, host, port, b"\r\n".join(lines)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> int:
    moved = 0
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
            moved += len(chunk)
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()
    return moved


async def _reply(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = (text + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(Exception):
        await writer.drain()
