"""Time, injectable: the system clock in production, a fake one in tests."""

from __future__ import annotations

import asyncio
import time


class Clock:
    def now(self) -> float:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
