"""Durable task steps on DBOS Transact, recovered by underlay rather than by DBOS.

Each *attempt* of a task (one lease) runs as one DBOS workflow, ``{task_id}-f{fence}``,
and every ``await run.step(name, fn, ...)`` in its handler is a DBOS step: its output is
checkpointed (SQLite or PostgreSQL) before the handler goes on. A later attempt first
reads the steps its predecessors recorded (``DBOS.list_workflow_steps``) and replays
them — the outputs are returned and re-recorded, the functions do not run — so after a
crash (kill -9 included) completed steps never run again and the task continues where
it stopped. The step that was in flight at the crash does run again: every step gets a
stable ``idempotency_key`` for its outside effects (``run.key(name)``).

Why not DBOS's own recovery: open-source DBOS recovers only the workflows of the
executor that restarts, and re-queues adopted ones for whichever process polls first.
underlay decides who runs a task (leases with fencing tokens, in ``queue.py``); a
workflow per attempt keeps DBOS to what it does best, durable checkpoints.

DBOS is one instance per process (``launch`` / ``shutdown`` here); each worker process
gets its own executor id and the fixed ``APPLICATION_VERSION`` (DBOS's default, a hash
of the workflow source, would make processes of different builds ignore each other).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from underlay import errors
from underlay.orchestration import escalations, failures
from underlay.orchestration.queue import Lease
from underlay.storage.engine import Database

APPLICATION_VERSION = "underlay-tasks-1"
Handler = Callable[["TaskRun", dict[str, Any]], Awaitable[dict[str, Any]]]
HANDLERS: dict[str, Handler] = {}
STEPLESS: set[str] = set()  # handlers that never take a step: no workflow, no checkpoint


def handler(name: str, *, steps: bool = True) -> Callable[[Handler], Handler]:
    """Register an async task handler under ``name`` (what ``tasks.submit`` names).

    ``steps=False`` declares that it never calls ``run.step``: its attempts then run
    without a DBOS workflow (a no-op task costs a claim and a completion, nothing more).
    """

    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        if not steps:
            STEPLESS.add(name)
        return fn

    return register


class WaitingOnHuman(Exception):
    """Raised out of a handler by ``ask_human``: the task waits for an escalation's answer."""

    def __init__(self, escalation_id: str) -> None:
        super().__init__(escalation_id)
        self.escalation_id = escalation_id


@dataclass
class TaskRun:
    """What a handler sees of its task: identity, attempt, fencing token and steps."""

    task_id: str
    attempt: int
    fence: int
    org_id: str = ""
    db: Database | None = None
    replayed: int = 0  # steps answered from an earlier attempt's record
    executed: int = 0  # steps whose function ran in this attempt
    durable: bool = True
    _recorded: dict[str, Any] = field(default_factory=dict)
    _seen: dict[str, int] = field(default_factory=dict)
    _undo: list[tuple[str, Callable[[Any], Any], Any]] = field(default_factory=list)

    def key(self, name: str) -> str:
        """A stable idempotency key for step ``name``'s outside effect, equal in every attempt."""
        return f"{self.task_id}:{name}"

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        compensate: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn`` once for this task, durably: its result is checkpointed and replayed.

        ``compensate(result)`` undoes the step's effect: if the task then fails for good
        (a permanent error, or a transient one on its last attempt), the compensations of
        the steps done run in reverse order, each itself a durable step."""
        from dbos import DBOS

        if not self.durable:
            raise errors.InternalError("this handler was registered with steps=False")

        n = self._seen[name] = self._seen.get(name, 0) + 1
        label = name if n == 1 else f"{name}#{n}"
        if label in self._recorded:
            self.replayed += 1
            result = await DBOS.run_step_async({"name": label}, _recorded, self._recorded[label])
        else:
            self.executed += 1
            result = await DBOS.run_step_async({"name": label}, fn, *args, **kwargs)
        if compensate is not None:
            self._undo.append((label, compensate, result))
        return result

    async def compensate(self) -> list[str]:
        """Undo the steps done, last first (each undo replayed if an earlier lease ran it)."""
        undone = []
        while self._undo:
            label, undo, result = self._undo.pop()
            await self.step(f"undo:{label}", undo, result)
            undone.append(label)
        return undone

    async def ask_human(
        self,
        name: str,
        summary: str,
        context: dict[str, Any] | None = None,
        *,
        kind: str = "approval",
    ) -> dict[str, Any]:
        """A human's answer: the first call opens an escalation (exactly once, keyed by
        ``name``) and the task waits — no worker is held — until someone resolves it in
        the inbox; the task then runs again, its steps replayed, and this returns it."""
        if self.db is None:
            raise errors.InternalError("ask_human needs the task's database")
        key = self.key(f"human:{name}")
        row = await escalations.find(self.db, self.org_id, key)
        if row is not None and row.state == "resolved":
            return dict(row.resolution or {})
        if row is None:
            row, _ = await escalations.raise_(
                self.db, org_id=self.org_id, source=f"task:{self.task_id}", summary=summary,
                context=context or {}, dedupe_key=key, raised_by=self.task_id,
                now=time.time(), kind=kind, task_id=self.task_id,
            )  # fmt: skip
        raise WaitingOnHuman(row.id)


def _recorded(value: Any) -> Any:
    return value


async def _earlier_steps(task_id: str, fence: int) -> dict[str, Any]:
    """The outputs earlier leases recorded, the latest one's winning."""
    from dbos import DBOS

    found: dict[str, Any] = {}
    for earlier in range(fence - 1, 0, -1):
        for info in await DBOS.list_workflow_steps_async(workflow_id(task_id, earlier)):
            if info["error"] is None and info["function_name"] not in found:
                found[info["function_name"]] = info["output"]
    return found


def workflow_id(task_id: str, fence: int) -> str:
    """One DBOS workflow per lease (the fencing token grows with every claim)."""
    return f"{task_id}-f{fence}"


_db: Database | None = None  # the worker's database, for ask_human


async def _attempt(
    task_id: str,
    attempt: int,
    fence: int,
    name: str,
    payload: dict[str, Any],
    org_id: str = "",
    max_attempts: int = 1,
) -> dict[str, Any]:
    fn = HANDLERS.get(name)
    if fn is None:
        raise errors.InvalidInput(f"no task handler {name!r} in this worker", field="handler")
    earlier = await _earlier_steps(task_id, fence)
    run = TaskRun(task_id, attempt, fence, org_id, _db, _recorded=earlier)
    try:
        result = await fn(run, payload)
    except WaitingOnHuman:
        raise
    except Exception as exc:
        kind = failures.classify(exc)
        if run._undo and (kind == "permanent" or (kind == "transient" and attempt >= max_attempts)):
            exc.compensated = await run.compensate()  # type: ignore[attr-defined]
        raise
    return {**result, "_steps": {"executed": run.executed, "replayed": run.replayed}}


_workflow: Callable[..., Awaitable[dict[str, Any]]] | None = None


def _registered() -> Callable[..., Awaitable[dict[str, Any]]]:
    global _workflow
    if _workflow is None:
        from dbos import DBOS

        _workflow = DBOS.workflow(name="underlay.task")(_attempt)
    return _workflow


async def run_attempt(lease: Lease) -> dict[str, Any]:
    """Run one leased attempt as its own DBOS workflow; return the handler's result."""
    from dbos import SetWorkflowID

    if lease.handler in STEPLESS:
        run = TaskRun(lease.task_id, lease.attempt, lease.fence, lease.org_id, _db, durable=False)
        return await HANDLERS[lease.handler](run, lease.input)

    workflow = _registered()
    with SetWorkflowID(workflow_id(lease.task_id, lease.fence)):
        return await workflow(
            lease.task_id, lease.attempt, lease.fence, lease.handler, lease.input,
            lease.org_id, lease.max_attempts,
        )  # fmt: skip


def launch(system_url: str, executor_id: str, db: Database | None = None) -> None:
    """Start this process's DBOS (idempotent per process): its own executor id, our version.
    ``db``: the installation's database, where ``ask_human`` opens escalations."""
    from dbos import DBOS

    global _db
    _db = db
    if system_url.startswith("sqlite:///"):
        _wal(system_url[len("sqlite:///") :])
    _registered()
    DBOS(
        config={
            "name": "underlay",
            "system_database_url": system_url,
            "executor_id": executor_id,
            "application_version": APPLICATION_VERSION,
            "log_level": "WARNING",
            "notification_listener_polling_interval_sec": 0.05,
        }
    )
    DBOS.launch()


def shutdown() -> None:
    from dbos import DBOS

    DBOS.destroy(workflow_completion_timeout_sec=0)


def _wal(path: str) -> None:
    """WAL once on DBOS's SQLite file (DBOS leaves it in rollback mode: 1.5-2x slower)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
