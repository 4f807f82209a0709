"""``underlay up``'s worker: a child process, restarted whenever it dies.

The child is ``underlay worker`` on the same home. If it exits without being asked to
(a crash, an OOM kill, kill -9), it is started again after 1 s, doubling to 30 s while
it keeps dying young; its leases are adopted by the new one once the old one is declared
dead. ``stop()`` sends SIGTERM (the worker hands its leases back), then SIGKILL after
15 s.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("underlay.worker")
MAX_DELAY = 30.0
HEALTHY_AFTER = 60.0  # a child that lived this long resets the delay


class WorkerChild:
    def __init__(self, home: Path) -> None:
        self.argv = [sys.executable, "-m", "underlay.cli.main", "--home", str(home), "worker"]
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_running(), name="underlay-worker-child")

    async def _keep_running(self) -> None:
        delay = 1.0
        while not self._stopping:
            self.proc = await asyncio.create_subprocess_exec(*self.argv)
            self.starts += 1
            born = time.monotonic()
            code = await self.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - born > HEALTHY_AFTER:
                delay = 1.0
            log.warning("the worker exited (%s); starting another in %.0f s", code, delay)
            await asyncio.sleep(delay)
            delay = min(MAX_DELAY, delay * 2)

    async def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
