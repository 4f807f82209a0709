"""The ``tasks.*`` syscalls: durable tasks through the kernel.

Every call is confined to the caller's organisation and authorized by its capability
(``tasks.submit``, ``tasks.read``, ``tasks.cancel``, ``tasks.admin``); submissions and
cancellations are audited with the task id and handler, never the task's input.
``tasks.costs`` shows money (the ledger's spend) only to callers that may read budgets
(``budget.read``); to others its money columns are null.
"""

from __future__ import annotations

from typing import Any

from underlay import errors
from underlay.kernel.context import CallContext
from underlay.kernel.syscall import SyscallGroup
from underlay.orchestration import attempts, spend
from underlay.orchestration.models import (
    AttemptList,
    CostQuery,
    CostReport,
    CostRow,
    ListTasks,
    QueueSettings,
    SetConcurrency,
    SubmitTask,
    Task,
    TaskAttempt,
    TaskPage,
    TaskRef,
)
from underlay.orchestration.queue import NewTask
from underlay.storage.rows import in_org, page
from underlay.storage.schema import tasks

group = SyscallGroup("orchestration")


def task_model(row: Any, created: bool = True) -> Task:
    return Task(
        id=row.id, queue=row.queue, handler=row.handler, state=row.state,
        priority=row.priority, attempts=row.attempts, max_attempts=row.max_attempts,
        fence=row.fence, worker_id=row.worker_id, waiting_on=row.waiting_on, input=row.input,
        result=row.result, error=row.error, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, created=created,
    )  # fmt: skip


async def _get(ctx: CallContext, task_id: str) -> Any:
    row = await in_org(ctx.kernel.db, tasks, ctx.org_id, task_id)
    if row is None:
        raise errors.NotFound(f"no task {task_id}", field="task_id")
    return row


@group.syscall("tasks.submit", mutating=True)
async def submit(ctx: CallContext, inp: SubmitTask) -> Task:
    """Queue a durable task for a worker; with ``dedupe_key``, at most one such task."""
    now = ctx.now()
    new = NewTask(
        org_id=ctx.org_id,
        queue=inp.queue,
        handler=inp.handler,
        input=inp.input,
        submitted_by=ctx.principal.id,
        priority=inp.priority,
        max_attempts=inp.max_attempts,
        idempotency_key=inp.dedupe_key,
    )
    task_id, created = await ctx.kernel.tasks().submit(new, now)
    ctx.audit.update(task=task_id, handler=inp.handler, queue=inp.queue, created=created)
    ctx.kernel.wake_workers()
    if not created:
        return task_model(await _get(ctx, task_id), created=False)
    return Task(
        id=task_id,
        queue=inp.queue,
        handler=inp.handler,
        state="queued",
        priority=inp.priority,
        attempts=0,
        max_attempts=inp.max_attempts,
        fence=0,
        worker_id=None,
        input=inp.input,
        result=None,
        error=None,
        created_at=now,
        started_at=None,
        finished_at=None,
    )  # fmt: skip (what the insert wrote: no read back)


@group.syscall("tasks.get", capability="tasks.read")
async def get(ctx: CallContext, inp: TaskRef) -> Task:
    """One task: its state, attempts, fencing token, result or error."""
    return task_model(await _get(ctx, inp.task_id))


@group.syscall("tasks.list", capability="tasks.read")
async def list_(ctx: CallContext, inp: ListTasks) -> TaskPage:
    """The organisation's tasks, newest first, by cursor."""
    where = [tasks.c.state == inp.state] if inp.state else []
    if inp.queue:
        where.append(tasks.c.queue == inp.queue)
    rows, cursor = await page(
        ctx.kernel.db, tasks, ctx.org_id, where, limit=inp.limit, cursor=inp.cursor,
        newest_first=True,
    )  # fmt: skip
    return TaskPage(items=[task_model(r) for r in rows], next_cursor=cursor)


@group.syscall("tasks.cancel", mutating=True)
async def cancel(ctx: CallContext, inp: TaskRef) -> Task:
    """Cancel a task that has not finished; its running attempt's results are fenced out."""
    await ctx.kernel.tasks().cancel(ctx.org_id, inp.task_id, ctx.now())
    ctx.audit.update(task=inp.task_id)
    return task_model(await _get(ctx, inp.task_id))


@group.syscall("tasks.set_concurrency", capability="tasks.admin", mutating=True)
async def set_concurrency(ctx: CallContext, inp: SetConcurrency) -> QueueSettings:
    """Bound how many of the organisation's tasks of one queue run at once."""
    await ctx.kernel.tasks().set_concurrency(ctx.org_id, inp.queue, inp.concurrency)
    ctx.audit.update(queue=inp.queue, concurrency=inp.concurrency)
    return QueueSettings(queue=inp.queue, concurrency=inp.concurrency)


@group.syscall("tasks.attempts", capability="tasks.read")
async def attempts_(ctx: CallContext, inp: TaskRef) -> AttemptList:
    """Every lease of a task: worker, start and end, outcome, failure class."""
    await _get(ctx, inp.task_id)  # not_found for another org's task
    rows = await attempts.history(ctx.kernel.db, ctx.org_id, inp.task_id)
    return AttemptList(
        items=[
            TaskAttempt(
                attempt=r.attempt,
                fence=r.fence,
                worker_id=r.worker_id,
                started_at=r.started_at,
                finished_at=r.finished_at,
                outcome=r.outcome,
                error_class=r.error_class,
            )
            for r in rows
        ]
    )


@group.syscall("tasks.costs", capability="tasks.read")
async def costs(ctx: CallContext, inp: CostQuery) -> CostReport:
    """Worker time and money per handler, queue or agent, with outcomes: per success, retry tax."""
    money = ctx.principal.allows("budget.read")  # spend is budget data: null without it
    rows = await spend.costs(ctx.kernel.db, ctx.org_id, inp.by, inp.since, money=money)
    return CostReport(by=inp.by, rows=[CostRow(key=r.pop(inp.by), **r) for r in rows])
