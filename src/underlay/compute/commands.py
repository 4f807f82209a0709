"""One command running in a sandbox: its output (capped), its timeout, its outcome.

``CommandRun`` pumps the supervisor's output into two byte buffers. Each keeps at most
``max_output_bytes``; what comes after is counted but dropped, and the result carries
``stdout_truncated``/``stderr_truncated`` and a marker line, so a flood cannot exhaust
the host's memory. At ``timeout`` the command's whole process group is killed and the
result says ``timed_out``. Readers may take output incrementally from byte offsets
while the command runs (``read``), which is how streaming works on every surface.
"""

from __future__ import annotations

import asyncio
import signal
import time

from underlay.compute.models import CommandResult
from underlay.compute.supervisor import Process
from underlay.types import new_id

TRUNCATED_MARKER = "\n[underlay: output truncated at {n} bytes]\n"


class _Stream:
    def __init__(self, cap: int) -> None:
        self.data = bytearray()
        self.cap = cap
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self, offset: int = 0, *, final: bool = True) -> str:
        """The kept bytes from ``offset``; once final, with the truncation marker."""
        out = bytes(self.data[offset:]).decode("utf-8", errors="replace")
        if final and self.dropped:
            out += TRUNCATED_MARKER.format(n=self.cap)
        return out


class CommandRun:
    """A started command; ``done`` is set once it exited and its output is complete."""

    def __init__(self, sandbox: str, process: Process, *, timeout: float, max_output: int):
        self.id = new_id("cmd")
        self.sandbox = sandbox
        self.process = process
        self.started = time.monotonic()
        self.stdout = _Stream(max_output)
        self.stderr = _Stream(max_output)
        self.timed_out = False
        self.exit_code: int | None = None
        self.duration_ms: float | None = None
        self.done = asyncio.Event()
        self.news = asyncio.Event()
        self._task = asyncio.create_task(self._pump(timeout))

    async def _pump(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                async for name, chunk in self.process.output():
                    (self.stdout if name == "stdout" else self.stderr).add(chunk)
                    self.news.set()
        except TimeoutError:
            self.timed_out = True
            await self.process.kill(signal.SIGKILL)
        self.exit_code = await self.process.wait()
        self.duration_ms = (time.monotonic() - self.started) * 1000
        self.done.set()
        self.news.set()

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    async def wait(self) -> CommandResult:
        await self.done.wait()
        return self.result()

    async def read(self, stdout_offset: int, stderr_offset: int, wait: float) -> CommandResult:
        """What was printed past the offsets; waits up to ``wait`` s for news if none."""
        if (
            wait
            and self.running
            and (len(self.stdout.data) <= stdout_offset and len(self.stderr.data) <= stderr_offset)
        ):
            self.news.clear()
            try:
                await asyncio.wait_for(self.news.wait(), wait)
            except TimeoutError:
                pass
        return self.result(stdout_offset, stderr_offset)

    def result(self, stdout_offset: int = 0, stderr_offset: int = 0) -> CommandResult:
        return CommandResult(
            id=self.id,
            sandbox=self.sandbox,
            running=self.running,
            exit_code=self.exit_code,
            stdout=self.stdout.text(stdout_offset, final=not self.running),
            stderr=self.stderr.text(stderr_offset, final=not self.running),
            stdout_truncated=bool(self.stdout.dropped),
            stderr_truncated=bool(self.stderr.dropped),
            timed_out=self.timed_out,
            error=self.process.exec_error,
            duration_ms=self.duration_ms,
            pid=self.process.pid,
        )

    async def cancel(self) -> None:
        if self.running:
            await self.process.kill(signal.SIGKILL)
        self._task.cancel()
