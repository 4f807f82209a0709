"""``repeat``: a failed step is logged and the loop goes on; cancelling ends it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from underlay.kernel.loops import repeat


async def test_a_failed_step_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the database is away")

    log = logging.getLogger("test.loops")
    loop = asyncio.create_task(repeat(step, 0.01, "test round", log))
    for _ in range(200):
        if calls >= 3:
            break
        await asyncio.sleep(0.01)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert calls >= 3
    assert "test round failed; next in 0.01 s" in caplog.text
    assert "the database is away" in caplog.text
