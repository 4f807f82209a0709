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

``run.invoke(syscall, args)`` is a step too: a tool call made as the task's agent under
the task's declared failure policy (tools.py), keyed ``run.key("invoke:<syscall>")``.

DBOS is one instance per process (``launch`` / ``shutdown`` here), and so is what its
workflows reach of the worker (``_Process``: the database, and the kernel for tool
calls); each worker process gets its own executor id and the fixed
``APPLICATION_VERSION`` (DBOS's default, a hash of the workflow source, would make
processes of different builds ignore each other).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from underlay import errors
from underlay.orchestration import escalations, failures
from underlay.orchestration.fleet_models import PoliciesSpec
from underlay.orchestration.queue import Lease
from underlay.orchestration.tools import Toolbox
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
    kernel: Any = None  # the worker's kernel: tool calls (``invoke``) go through it
    policies: PoliciesSpec | None = None  # the task's declared failure policy, if any
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # see request_stop
    _toolbox: Toolbox | None = None
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
        return await self._step(self._label(name), fn, args, kwargs, compensate)

    async def heartbeat(self, progress: str | None = None) -> None:
        """Tell the fleet this run (a member's) is alive, and — any change of
        ``progress`` — moving; not a step (a liveness signal is never replayed)."""
        box = await self._tools()
        beat = {"progress": progress}
        await self.kernel.invoke("fleets.heartbeat", beat, principal=box.principal)

    async def _tools(self) -> Toolbox:
        if self.kernel is None:
            raise errors.InternalError("run.invoke needs a worker started with a kernel")
        if self._toolbox is None:
            self._toolbox = await Toolbox.for_task(
                self.kernel, self.task_id, self.attempt, self.policies
            )
        return self._toolbox

    async def invoke(self, syscall: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Syscall ``syscall`` as the task's agent, once for this task: a durable step
        (replayed after a crash) keyed ``run.key("invoke:<syscall>")`` for the kernel's
        idempotency, under the task's failure policy (tools.py). Returns its JSON result."""
        box = await self._tools()
        label = self._label(f"invoke:{syscall}")
        return await self._step(label, box.call, (syscall, args or {}, self.key(label)), {}, None)

    def _label(self, name: str) -> str:
        """``name``, numbered from its second use in this attempt (``name#2``...)."""
        n = self._seen[name] = self._seen.get(name, 0) + 1
        return name if n == 1 else f"{name}#{n}"

    async def _step(
        self,
        label: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        compensate: Callable[[Any], Any] | None,
    ) -> Any:
        from dbos import DBOS

        if not self.durable:
            raise errors.InternalError("this handler was registered with steps=False")
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


@dataclass
class _Process:
    """What this process's workflows reach of their worker (DBOS is one per process)."""

    db: Database | None = None  # where ask_human opens escalations
    kernel: Any = None  # tool calls (run.invoke); None in a worker without one
    runs: dict[str, TaskRun] = field(default_factory=dict)  # running attempts, by task


def request_stop(task_id: str) -> bool:
    """Ask the running attempt of ``task_id`` to stop (``run.stopping`` is set); False if
    none runs here. The worker cancels it after the task's grace period."""
    run = _process.runs.get(task_id)
    if run is not None:
        run.stopping.set()
    return run is not None


_process = _Process()


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
    run = TaskRun(
        task_id, attempt, fence, org_id, _process.db, kernel=_process.kernel,
        policies=_policies(payload), _recorded=earlier,
    )  # fmt: skip
    _process.runs[task_id] = run
    try:
        result = await fn(run, payload)
    except WaitingOnHuman:
        raise
    except Exception as exc:
        kind = failures.classify(exc)
        if run._undo and (kind == "permanent" or (kind == "transient" and attempt >= max_attempts)):
            exc.compensated = await run.compensate()  # type: ignore[attr-defined]
        raise
    finally:
        _process.runs.pop(task_id, None)
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
        run = TaskRun(
            lease.task_id, lease.attempt, lease.fence, lease.org_id, _process.db,
            durable=False, kernel=_process.kernel, policies=_policies(lease.input),
        )  # fmt: skip
        _process.runs[lease.task_id] = run
        try:
            return await HANDLERS[lease.handler](run, lease.input)
        finally:
            _process.runs.pop(lease.task_id, None)

    workflow = _registered()
    with SetWorkflowID(workflow_id(lease.task_id, lease.fence)):
        return await workflow(
            lease.task_id, lease.attempt, lease.fence, lease.handler, lease.input,
            lease.org_id, lease.max_attempts,
        )  # fmt: skip


def _policies(payload: dict[str, Any]) -> PoliciesSpec | None:
    """The ``failure_policy`` a task's input declares (a fleet's, or its submitter's)."""
    declared = payload.get("failure_policy")
    if declared is None:
        return None
    try:
        return PoliciesSpec.model_validate(declared)
    except ValueError as exc:
        raise errors.InvalidInput(f"failure_policy: {exc}", field="failure_policy") from None


def launch(
    system_url: str, executor_id: str, db: Database | None = None, kernel: Any = None
) -> None:
    """Start this process's DBOS (idempotent per process): its own executor id, our version.
    ``db``: the installation's database, where ``ask_human`` opens escalations; ``kernel``:
    what tool calls (``run.invoke``) go through."""
    from dbos import DBOS

    _process.db, _process.kernel = db, kernel
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
