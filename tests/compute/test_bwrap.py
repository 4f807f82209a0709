"""Parts of the bwrap driver that the lifecycle tests do not single out."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from underlay.compute.drivers.bwrap import _finished
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay


async def test_a_cancelled_caller_waits_for_the_threaded_work_to_finish() -> None:
    """What a create makes off the event loop (a cgroup) is cleaned up after it was
    made, never while: so a cancelled create waits for the thread's work first."""
    started, finished = threading.Event(), threading.Event()

    def make() -> str:
        started.set()
        time.sleep(0.3)
        finished.set()
        return "made"

    call = asyncio.create_task(_finished(make))
    while not started.is_set():
        await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert finished.is_set()
    assert await _finished(lambda: "again") == "again"


async def test_metering_reads_the_same_cpu_time_as_usage(ul: AsyncUnderlay, kernel: Kernel) -> None:
    sbx = await ul.sandbox.create(timeout=60)
    busy = "python3 -c 'import time; t=time.process_time()\nwhile time.process_time()-t<0.3: pass'"
    assert (await ul.sandbox.commands.run(sbx.id, busy)).exit_code == 0
    m = await kernel.compute()
    inst = m.instances[sbx.id]
    cheap, full = m.driver.cpu_seconds(inst), m.driver.usage(inst).cpu_seconds
    assert 0.3 <= cheap <= full < cheap + 0.05
