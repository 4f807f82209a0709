"""A worker: claims leased tasks, runs them durably, heartbeats, and reaps the dead.

One worker per process runs DBOS (``durable.launch``) and up to ``concurrency`` tasks at
once on its event loop. Three loops:

* **claim**: lease ready tasks while there is room, run each as a DBOS workflow, then
  report with the lease's fencing token (``complete`` / ``fail``); a report the queue
  rejects as stale is dropped — another worker owns the task now.
* **heartbeat**: every ``heartbeat_seconds``, prove this worker (and so its leases)
  alive; attempts whose task is no longer its own (cancelled) are stopped. If the queue
  answers that this worker was declared dead (it stalled), it cancels its running
  attempts — their tasks belong to others now — and registers again.
* **reap** (every worker does it; it is idempotent): workers silent for
  ``dead_after_seconds`` are declared dead and their leases go back to the queue, where a
  live worker adopts them — the recovery time is about ``dead_after_seconds`` plus a poll.

``stop()`` drains: no new claims, running attempts finish (or are cancelled at the
deadline), remaining leases are handed back, DBOS shuts down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from underlay import errors
from underlay.config import Config, OrchestrationConfig
from underlay.orchestration import (
    builtin_handlers,  # noqa: F401  (registers handlers)
    durable,
    failures,
    llm_loop,  # noqa: F401  (registers the built-in agent loop)
)
from underlay.orchestration.queue import Lease, TaskQueue

log = logging.getLogger("underlay.worker")


def dbos_url(config: Config) -> str:
    """DBOS's system database: its own SQLite file, or the installation's PostgreSQL."""
    if config.orchestration.dbos_url:
        return config.orchestration.dbos_url
    if config.database_url and not config.database_url.startswith("sqlite"):
        return config.database_url.replace("postgresql+psycopg:", "postgresql:", 1)
    return f"sqlite:///{config.home / 'dbos.sqlite'}"


class Worker:
    def __init__(
        self,
        queue: TaskQueue,
        settings: OrchestrationConfig,
        system_url: str,
        *,
        now: Callable[[], float] = time.time,
        kernel: Any = None,
    ) -> None:
        self.queue = queue
        self.kernel = kernel  # tool calls of its tasks (run.invoke) go through it
        self.settings = settings
        self.system_url = system_url
        self.now = now
        self.id = ""
        self.completed = 0
        self._running: dict[str, tuple[int, asyncio.Task[None]]] = {}  # id -> (fence, run)
        self._grace: dict[str, float] = {}  # id -> seconds from a stop request to the cancel
        self._told_to_stop: set[str] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._rejoining = False

    async def start(self) -> None:
        s = self.settings
        self.id = await self.queue.register_worker(
            socket.gethostname(), os.getpid(), s.queues, self.now()
        )
        durable.launch(self.system_url, self.id, self.queue.db, self.kernel)
        self._loops = [
            asyncio.create_task(self._claim_loop(), name=f"{self.id}:claim"),
            asyncio.create_task(self._heartbeat_loop(), name=f"{self.id}:heartbeat"),
            asyncio.create_task(self._reap_loop(), name=f"{self.id}:reap"),
        ]
        log.info("worker %s started on queues %s", self.id, ", ".join(s.queues))

    async def stop(self, deadline_seconds: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        for task_id in self._told_to_stop:  # cancelled tasks in their grace: no more wait
            if (entry := self._running.get(task_id)) is not None:
                entry[1].cancel()
        runs = [run for _, run in self._running.values()]
        if runs:
            _, late = await asyncio.wait(runs, timeout=deadline_seconds)
            for task in late:
                task.cancel()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, *runs, return_exceptions=True)
        if self.id:
            await self.queue.stop_worker(self.id, self.now())
        durable.shutdown()

    def poke(self) -> None:
        """New work may be ready (a submit in this process): claim without waiting a poll."""
        self._wake.set()

    async def _claim_loop(self) -> None:
        s = self.settings
        while not self._stopping.is_set():
            room = s.concurrency - len(self._running)
            leases: list[Lease] = []
            if room > 0:
                try:
                    leases = await self.queue.claim(self.id, s.queues, room, self.now())
                except errors.StaleLease:
                    await self._rejoin()
                except Exception:  # the database is away, a deadlock...: next round
                    log.warning("claim failed; retrying", exc_info=True)
                    await asyncio.sleep(s.poll_seconds)
            for lease in leases:
                self._running[lease.task_id] = (lease.fence, asyncio.create_task(self._run(lease)))
                grace = lease.input.get("stop_grace_seconds")
                if isinstance(grace, int | float) and grace > 0:
                    self._grace[lease.task_id] = float(grace)
            if not leases:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), s.poll_seconds)
                except TimeoutError:
                    pass

    async def _run(self, lease: Lease) -> None:
        try:
            try:
                result = await durable.run_attempt(lease)
            except asyncio.CancelledError:
                raise
            except durable.WaitingOnHuman as waiting:
                await self.queue.wait(lease, waiting.escalation_id, self.now())
                return
            except Exception as exc:  # classified the same way for every task
                error, kind = failures.describe(exc), failures.classify(exc)
                if kind in ("needs_human", "budget"):
                    await self.queue.escalate_failure(lease, error, self.now())
                else:
                    retry = kind == "transient"
                    await self.queue.fail(lease, error, self.now(), retryable=retry)
                return
            await self.queue.complete(lease, result, self.now())
            self.completed += 1
        except errors.StaleLease as exc:
            log.warning("dropped a stale result: %s", exc.message)
        finally:
            self._running.pop(lease.task_id, None)
            self._grace.pop(lease.task_id, None)
            self._told_to_stop.discard(lease.task_id)
            self._wake.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                fences = {t: fence for t, (fence, _) in self._running.items()}
                for task_id in await self.queue.heartbeat(self.id, self.now(), fences):
                    if (entry := self._running.get(task_id)) is not None:
                        log.warning("task %s is no longer ours (cancelled?): stopping it", task_id)
                        self._stop(task_id, entry[1])
            except errors.StaleLease:
                await self._rejoin()
            except Exception:  # never let one failed beat end the heartbeats
                log.warning("heartbeat failed; retrying", exc_info=True)

    def _stop(self, task_id: str, run: asyncio.Task[None]) -> None:
        """Stop an attempt: at once, or — its input gave ``stop_grace_seconds`` — first
        ``run.stopping`` is set, and the attempt is cancelled after the grace."""
        grace = self._grace.pop(task_id, 0.0)
        if task_id in self._told_to_stop:
            return  # asked at an earlier heartbeat; the cancel is on its way
        if grace and durable.request_stop(task_id):
            self._told_to_stop.add(task_id)
            asyncio.get_running_loop().call_later(grace, run.cancel)
        else:
            run.cancel()

    async def _rejoin(self) -> None:
        """Declared dead while alive (stalled too long): its leases were handed on, so its
        running attempts are cancelled (their reports would be refused anyway); then it
        registers again under a new id."""
        if self._rejoining:
            return
        self._rejoining = True
        try:
            log.error("worker %s was declared dead: cancelling its attempts", self.id)
            for _, run in list(self._running.values()):
                run.cancel()
            s = self.settings
            self.id = await self.queue.register_worker(
                socket.gethostname(), os.getpid(), s.queues, self.now()
            )
            log.warning("registered again as %s", self.id)
        finally:
            self._rejoining = False

    async def _reap_loop(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.heartbeat_seconds)
            try:
                dead, adopted = await self.queue.reap(
                    self.now(), s.dead_after_seconds, reaper=self.id
                )
            except Exception:
                log.warning("reconciling failed; retrying", exc_info=True)
                continue
            if dead or adopted:
                log.warning("declared dead: %s; %d tasks back in the queue", dead, adopted)
                self._wake.set()


async def run_worker(
    config: Config, stop: asyncio.Event, *, announce: bool = False, **overrides: Any
) -> None:
    """``underlay worker``: one worker on the installation until ``stop``, with a kernel of
    its own, through which its tasks' tool calls go."""
    from underlay.kernel.kernel import Kernel

    settings = config.orchestration.model_copy(update=overrides)
    kernel = await Kernel.open(config)
    worker = Worker(kernel.tasks(), settings, dbos_url(config), kernel=kernel)
    try:
        await worker.start()
        if announce:
            print(json.dumps({"worker": worker.id, "queues": settings.queues}), flush=True)
        await stop.wait()
    finally:
        await worker.stop()
        await kernel.close()
