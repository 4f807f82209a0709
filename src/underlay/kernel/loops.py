"""Background loops of ``underlay up``: one step, again and again, never stopped by a
failed step.

``repeat(step, every, what, log)`` awaits ``step()``, sleeps ``every`` seconds, and so on
until it is cancelled. A step that raises is logged (with ``what`` and when the next one
runs) and the loop goes on: one bad round — the database briefly away, one broken
repository — must not end the service. Cancellation is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any


async def repeat(
    step: Callable[[], Awaitable[Any]], every: float, what: str, log: logging.Logger
) -> None:
    while True:
        try:
            await step()
        except Exception:  # one bad round must not end the loop
            log.exception("%s failed; next in %s s", what, every)
        await asyncio.sleep(every)
