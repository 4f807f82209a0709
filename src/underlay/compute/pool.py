"""The warm pool: started sandboxes of one shape, waiting to be handed out.

A create whose shape matches the pool's (``compute.pool_template``, default limits, not
persistent, no network) takes a warm instance, so creating is mostly a hand-out; the pool then
refills in the background, one start at a time. Environment variables are not part of
the shape: they are given to each command, never baked into the sandbox.

Guarantees: a warm instance is handed out at most once and was never used; a failure
to refill is logged and retried later, never surfaced to a caller; ``close`` destroys
every instance still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from underlay.compute.interface import Instance
from underlay.compute.models import CreateSandbox, Limits
from underlay.compute.templates import DEFAULT
from underlay.types import new_id

if TYPE_CHECKING:
    from underlay.compute.manager import ComputeManager

log = logging.getLogger("underlay.compute.pool")
REFILL_DELAY_S = 0.1


class WarmPool:
    def __init__(self, manager: ComputeManager, size: int, template: str = DEFAULT) -> None:
        self.manager = manager
        self.size = size
        self.shape = CreateSandbox(template=template)
        self.ready: list[Instance] = []
        self._filler: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self.handed_out = 0

    def fits(self, inp: CreateSandbox) -> bool:
        return (
            inp.template == self.shape.template
            and not inp.persistent
            and inp.network is None
            and inp.limits == Limits()
        )

    def take(self, inp: CreateSandbox) -> Instance | None:
        """A warm instance for ``inp``, or None (then the caller starts one cold)."""
        if not self.fits(inp) or not self.ready:
            return None
        self.handed_out += 1
        inst = self.ready.pop(0)
        self.refill()
        return inst

    def start(self) -> None:
        """Begin filling (``underlay up`` does; an embedded one-shot client does not)."""
        if self.size > 0 and self._filler is None:
            self._filler = asyncio.create_task(self._fill_forever())

    def refill(self) -> None:
        """Refill soon, not now: starting a replacement on the event loop right after a
        hand-out would slow the caller who just got one."""
        asyncio.get_running_loop().call_later(REFILL_DELAY_S, self._wake.set)

    async def _fill_forever(self) -> None:
        while not self._closed:
            while len(self.ready) < self.size and not self._closed:
                m = self.manager
                if len(m.instances) + len(self.ready) >= m.config.max_sandboxes:
                    break
                try:
                    sid = new_id("sbx")
                    uid = m.allocate_uid(sid)
                    try:
                        self.ready.append(await m.driver.start(m.spec(sid, self.shape, uid)))
                    except BaseException:
                        m.release_uid(uid)
                        raise
                except Exception:
                    log.exception("warm pool: starting a sandbox failed; retrying later")
                    await asyncio.sleep(5)
                    break
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns normally
            # when it is cancelled just as the event is set, and a filler that missed its
            # cancellation kept close() waiting forever (seen once in the test suite)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await self._wake.wait()

    async def wait_full(self, timeout: float = 30) -> None:
        """Until the pool holds ``size`` instances (tests and benchmarks use this)."""
        self.start()
        async with asyncio.timeout(timeout):
            while len(self.ready) < self.size:
                await asyncio.sleep(0.005)

    async def close(self) -> None:
        self._closed = True  # the filler stops even if its cancellation is lost
        self._wake.set()
        if self._filler:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
        while self.ready:
            inst = self.ready.pop()
            self.manager.release_uid(inst.spec.uid)
            await self.manager.driver.destroy(inst)
