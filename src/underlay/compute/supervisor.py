"""Async client of ``ulinit``, the supervisor inside every sandbox.

The wire protocol is documented at the top of ``compute/init/ulinit.c``. One
``Supervisor`` owns one ulinit's stdin/stdout pipes; one background task reads every
frame and dispatches it to the ``Process`` it belongs to. Guarantees:

- Every ``Process`` completes: with its exit code (128+signal when killed), or, if the
  supervisor dies or its output is malformed, with ``exit_code == -1`` and
  ``exec_error == "sandbox supervisor exited"``. Nothing waits forever on a dead
  supervisor; calls that need it raise ``Unavailable``.
- Output arrives in order and complete: ulinit reports the exit only after the
  command's stdout and stderr reached EOF (or 20 ms after the command exited when a
  background process keeps them open).
- Output is not capped here, nor hoarded: a ``Process`` keeps chunks for ``output()``;
  once ``wait()`` was called while no ``output()`` iterator is live, it is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import time
from collections import deque
from collections.abc import AsyncIterator

from underlay.errors import Conflict, InvalidInput, Unavailable

HELLO = b"ulinit 1"
DEAD = "sandbox supervisor exited"
_HEADER = struct.Struct(">cII")  # type, id, payload length
_STDIN_CHUNK = 64 * 1024
_CLOSE_TIMEOUT_S = 5.0
_STREAMS = {b"O": "stdout", b"R": "stderr"}


def _frame(kind: bytes, ident: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, ident, len(payload)) + payload


def _cstr(value: str, what: str) -> bytes:
    raw = os.fsencode(value)
    if b"\0" in raw:
        raise InvalidInput(f"{what} must not contain NUL bytes", field=what)
    return raw + b"\0"


def _strings(items: list[str], what: str) -> bytes:
    return struct.pack(">I", len(items)) + b"".join(_cstr(s, what) for s in items)


def exec_payload(argv: list[str], env: dict[str, str], cwd: str, stdin: bool) -> bytes:
    """The payload of an 'E' frame; raises ``InvalidInput`` for what cannot be encoded."""
    if not argv:
        raise InvalidInput("argv must not be empty", field="argv")
    if any(not key or "=" in key for key in env):
        raise InvalidInput("environment names must be non-empty and contain no '='", field="env")
    envs = [f"{key}={value}" for key, value in env.items()]
    return _cstr(cwd, "cwd") + _strings(argv, "argv") + _strings(envs, "env") + bytes([stdin])


class Process:
    """One command started by a ``Supervisor``.

    ``pid`` is set once ulinit reported the start (it stays ``None`` if exec failed).
    ``exit_code`` and ``exec_error`` are set when the command finished.
    """

    def __init__(self, supervisor: Supervisor, ident: int, stdin: bool) -> None:
        self.id = ident
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.exec_error: str | None = None
        self._sup = supervisor
        self._stdin_open = stdin
        self._chunks: deque[tuple[str, bytes]] = deque()
        self._news = asyncio.Event()
        self._done = asyncio.Event()
        self._streaming = False  # an output() iterator is live
        self._waited = False  # wait() was called

    @property
    def done(self) -> bool:
        """True once the exit code is known (and all output was received)."""
        return self._done.is_set()

    def _push(self, stream: str, data: bytes) -> None:
        if self._waited and not self._streaming:
            return  # nobody will read it
        self._chunks.append((stream, data))
        self._news.set()

    def _finish(self, code: int, error: str | None = None) -> None:
        if self.done:
            return
        self.exit_code = code
        if error is not None:
            self.exec_error = error
        self._done.set()
        self._news.set()

    async def write_stdin(self, data: bytes) -> None:
        """Queues ``data`` for the command's stdin (dropped if it already exited)."""
        if not self._stdin_open:
            raise Conflict("the command's stdin is not open")
        if data and not self.done:
            chunks = range(0, len(data), _STDIN_CHUNK)
            await self._sup._send(
                b"".join(_frame(b"I", self.id, data[i : i + _STDIN_CHUNK]) for i in chunks)
            )

    async def close_stdin(self) -> None:
        """Closes stdin once the data written before has been delivered. Idempotent."""
        if self._stdin_open:
            self._stdin_open = False
            if not self.done:
                await self._sup._send(_frame(b"I", self.id))

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to the command's whole process group; no-op once finished."""
        if not 0 < int(sig) < 65:
            raise InvalidInput(f"not a signal number: {sig}", field="signal")
        if not self.done:
            await self._sup._send(_frame(b"K", self.id, bytes([int(sig)])))

    def output(self) -> AsyncIterator[tuple[str, bytes]]:
        """``("stdout" | "stderr", chunk)`` as they arrive; ends when the command finished.

        One iterator at a time; a new one continues where the previous stopped. Call
        this before ``wait()`` if you want the output.
        """
        if self._streaming:
            raise RuntimeError("output() is already being iterated")
        self._streaming = True
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[str, bytes]]:
        try:
            while True:
                while self._chunks:
                    yield self._chunks.popleft()
                if self.done:
                    return
                self._news.clear()
                await self._news.wait()
        finally:
            self._streaming = False

    async def wait(self) -> int:
        """The exit code (128+signal if signaled, -1 if the supervisor died).

        Unless an ``output()`` iterator is live, output is discarded from now on.
        """
        self._waited = True
        if not self._streaming:
            self._chunks.clear()
        await self._done.wait()
        assert self.exit_code is not None
        return self.exit_code


class Supervisor:
    """Talks to one ulinit over its stdin/stdout pipes (asyncio streams).

    Create it inside a running event loop: it starts its reader task at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._procs: dict[int, Process] = {}
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._next_id = 0
        self._hello: bytes | None = None
        self._ready = asyncio.Event()  # set on hello and on death
        self._dead = asyncio.Event()
        self._task = asyncio.create_task(self._read_loop())

    @property
    def alive(self) -> bool:
        return not self._dead.is_set()

    async def wait_ready(self, timeout: float) -> None:
        """Returns once ulinit said hello; raises ``Unavailable`` otherwise."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise Unavailable(f"sandbox supervisor not ready after {timeout} s") from None
        if self._hello is None or self._dead.is_set():
            raise Unavailable(DEAD)
        if self._hello != HELLO:
            raise Unavailable(f"unexpected sandbox supervisor greeting {self._hello!r}")

    async def start(
        self, argv: list[str], *, env: dict[str, str], cwd: str, stdin: bool = False
    ) -> Process:
        """Asks ulinit to run ``argv`` with exactly ``env`` in ``cwd``.

        Returns at once; exec errors show up as ``exec_error`` and exit code 127/126.
        """
        payload = exec_payload(argv, env, cwd, stdin)
        proc = Process(self, self._allocate(), stdin)
        self._procs[proc.id] = proc
        try:
            await self._send(_frame(b"E", proc.id, payload))
        except asyncio.CancelledError:  # the request may be out: do not leave it running
            with contextlib.suppress(Unavailable):
                self._write(_frame(b"K", proc.id, bytes([signal.SIGKILL])))
            raise
        except Unavailable:
            del self._procs[proc.id]
            raise
        return proc

    async def ping(self) -> float:
        """Round-trip time to ulinit in seconds."""
        ident = self._allocate()
        reply: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[ident] = reply
        try:
            sent = time.perf_counter()
            await self._send(_frame(b"P", ident, b"ping"))
            return await reply - sent
        finally:
            self._pings.pop(ident, None)

    async def close(self) -> None:
        """Closes ulinit's stdin: it SIGKILLs every process group it started and exits.

        Waits (up to 5 s) for its stdout to end; unfinished processes complete with -1.
        """
        self._writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    def _allocate(self) -> int:
        self._next_id = self._next_id % 0xFFFFFFFF + 1  # u32, never 0 (the hello's id)
        return self._next_id

    def _write(self, data: bytes) -> None:
        if self._dead.is_set() or self._writer.is_closing():
            raise Unavailable(DEAD)
        self._writer.write(data)

    async def _send(self, data: bytes) -> None:
        try:
            self._write(data)
            await self._writer.drain()
        except OSError as exc:  # BrokenPipeError, ConnectionResetError
            raise Unavailable(DEAD) from exc

    async def _read_loop(self) -> None:
        try:
            while True:
                kind, ident, size = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
                self._dispatch(kind, ident, await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, OSError, ValueError, struct.error):
            pass  # EOF, broken pipe or a malformed frame: the supervisor is gone to us
        finally:
            self._die()

    def _dispatch(self, kind: bytes, ident: int, payload: bytes) -> None:
        if kind == b"H":
            self._hello = payload
            self._ready.set()
        elif kind == b"P":
            reply = self._pings.get(ident)
            if reply is not None and not reply.done():
                reply.set_result(time.perf_counter())
        elif (proc := self._procs.get(ident)) is None:
            return
        elif kind in _STREAMS:
            proc._push(_STREAMS[kind], payload)
        elif kind == b"S":
            (proc.pid,) = struct.unpack(">I", payload)
        elif kind == b"F":
            proc.exec_error = payload.decode("utf-8", errors="replace")
        elif kind == b"X":
            (code,) = struct.unpack(">i", payload[:4])
            del self._procs[ident]
            proc._finish(code)

    def _die(self) -> None:
        self._dead.set()
        self._ready.set()
        procs, self._procs = self._procs, {}
        for proc in procs.values():
            proc._finish(-1, DEAD)
        for reply in self._pings.values():
            if not reply.done():
                reply.set_exception(Unavailable(DEAD))
        self._writer.close()
