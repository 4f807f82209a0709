"""Fixtures of the orchestration tests: an in-process worker, and waiting for a state."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kernel.helpers import open_kernel
from underlay.kernel.kernel import Kernel
from underlay.orchestration.worker import Worker, dbos_url
from underlay.sdk.client import AsyncUnderlay

__all__ = ["open_kernel", "reconcile_until", "settle", "worker"]

TESTS = str(Path(__file__).resolve().parents[1])  # tests/: orchestration.steps_handler


@pytest.fixture
async def worker(kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Worker]:
    """A worker on the test kernel's database that can import the test handlers (stopped
    with a short deadline: members still running at the end are cancelled)."""
    monkeypatch.syspath_prepend(TESTS)
    monkeypatch.setenv("PYTHONPATH", TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    settings = kernel.config.orchestration.model_copy(
        update={"poll_seconds": 0.01, "heartbeat_seconds": 0.2}
    )
    w = Worker(kernel.tasks(), settings, dbos_url(kernel.config), kernel=kernel)
    await w.start()
    kernel.workers.append(w)  # submits in this process poke it
    yield w
    kernel.workers.remove(w)
    await w.stop(deadline_seconds=0.2)


async def settle(ul: AsyncUnderlay, task_id: str, state: str) -> Any:
    """The task once it is in ``state`` (within ~8 s), else a failure naming where it is."""
    for _ in range(400):
        task = await ul.tasks.get(task_id=task_id)
        if task.state == state:
            return task
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id} is {task.state}, not {state}")


async def reconcile_until(
    reconciler: Any, ul: AsyncUnderlay, check: Any, name: str = "crew"
) -> Any:
    """Reconcile until ``check(fleet)`` holds (within ~15 s); return the fleet."""
    for _ in range(300):
        await reconciler.reconcile_once()
        fleet = await ul.fleets.get(name=name)
        if check(fleet):
            return fleet
        await asyncio.sleep(0.05)
    raise AssertionError(f"fleet {name} never got there: {fleet}")
