"""A clock that tests move by hand: token expiry, hold expiry, breaker resets, backoff.

``FakeClock`` stands still until ``advance`` is called. Its ``sleep`` does not wait: it
records the requested delay, moves the clock forward by it and yields to the event loop
once, so retry backoff is observable (``clock.sleeps``) and costs no wall time.
"""

from __future__ import annotations

import asyncio

from underlay.kernel.clock import Clock

DEFAULT_START = 1_700_000_000.0


class FakeClock(Clock):
    def __init__(self, start: float = DEFAULT_START) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
