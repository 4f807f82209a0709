"""Opt-in egress: a per-sandbox proxy with a domain allow-list, every request audited.

The allowed peer is an HTTP server this test runs on the host's loopback; refused
hosts are refused before any name is resolved, so no traffic leaves the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from underlay import errors
from underlay.compute.egress import allowed
from underlay.sdk.client import AsyncUnderlay


@pytest.fixture
async def peer() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A tiny HTTP server on 127.0.0.1 recording each request line it gets."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n")[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port, seen
    server.close()


FETCH = (
    'python3 -c "import sys, urllib.request as u; '
    "print(u.urlopen(sys.argv[1], timeout=5).read().decode(), end='')\" {url}"
)


async def test_no_network_by_default(ul: AsyncUnderlay, peer: tuple[int, list[bytes]]) -> None:
    port, seen = peer
    sbx = await ul.sandbox.create(timeout=60)
    out = await ul.sandbox.commands.run(sbx.id, FETCH.format(url=f"http://localhost:{port}/"))
    assert out.exit_code != 0 and seen == []
    env = (await ul.sandbox.commands.run(sbx.id, "env")).stdout
    assert "PROXY" not in env


async def test_allowed_host_is_reached_and_audited(
    ul: AsyncUnderlay, peer: tuple[int, list[bytes]]
) -> None:
    port, seen = peer
    sbx = await ul.sandbox.create(timeout=60, network={"allow": [f"localhost:{port}"]})
    assert sbx.network.allow == [f"localhost:{port}"]
    out = await ul.sandbox.commands.run(sbx.id, FETCH.format(url=f"http://localhost:{port}/x"))
    assert (out.exit_code, out.stdout) == (0, "hello\n"), out.stderr
    assert seen == [b"GET /x HTTP/1.1"]
    events = [e for e in (await ul.audit.tail(limit=20)).items if e.syscall == "sandbox.egress"]
    assert events and events[0].outcome == "ok"
    assert events[0].detail["host"] == "localhost" and events[0].detail["port"] == port
    assert events[0].detail["bytes_down"] > 0


async def test_other_hosts_are_refused_and_audited(
    ul: AsyncUnderlay, peer: tuple[int, list[bytes]]
) -> None:
    port, seen = peer
    sbx = await ul.sandbox.create(timeout=60, network={"allow": ["*.example.org"]})
    out = await ul.sandbox.commands.run(sbx.id, FETCH.format(url=f"http://localhost:{port}/"))
    assert out.exit_code != 0 and "403" in out.stderr
    https = await ul.sandbox.commands.run(sbx.id, FETCH.format(url="https://not-allowed.invalid/"))
    assert https.exit_code != 0
    assert seen == []
    denied = [
        e
        for e in (await ul.audit.tail(limit=20)).items
        if e.syscall == "sandbox.egress" and e.outcome == "denied"
    ]
    assert {e.detail["host"] for e in denied} == {"localhost", "not-allowed.invalid"}


async def test_direct_connections_bypassing_the_proxy_fail(
    ul: AsyncUnderlay, peer: tuple[int, list[bytes]]
) -> None:
    port, seen = peer
    sbx = await ul.sandbox.create(timeout=60, network={"allow": [f"localhost:{port}"]})
    out = await ul.sandbox.commands.run(
        sbx.id,
        f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\"",
    )
    assert out.exit_code != 0 and seen == []


def test_allow_list_matching() -> None:
    assert allowed("pypi.org", 443, ["pypi.org"])
    assert allowed("files.pythonhosted.org", 443, ["*.pythonhosted.org"])
    assert not allowed("pythonhosted.org", 443, ["*.pythonhosted.org"])
    assert not allowed("evilpypi.org", 443, ["pypi.org"])
    assert allowed("api.github.com", 443, ["api.github.com:443"])
    assert not allowed("api.github.com", 80, ["api.github.com:443"])


async def test_bad_allow_list_is_named(ul: AsyncUnderlay) -> None:
    with pytest.raises(errors.InvalidInput) as info:
        await ul.sandbox.create(network={"allow": ["http://x.com/path"]})
    assert "allow" in str(info.value.field)
    with pytest.raises(errors.InvalidInput):
        await ul.sandbox.create(network={"allow": []})
