"""``underlay tasks``: submit durable tasks, list and inspect them, cancel and prune them."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from underlay.cli import render
from underlay.cli.parsing import read_data
from underlay.cli.runtime import IdemOpt, JsonOpt, execute
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(help="Durable tasks: submit, list, inspect, cancel, prune.", no_args_is_help=True)
COLUMNS = ("id", "handler", "queue", "state", "attempts", "priority")
IdArg = Annotated[str, typer.Argument(help="Task id.")]


@app.command("submit")
def submit(
    ctx: typer.Context,
    handler: Annotated[str, typer.Argument(help="Task handler (noop, sleep, python, ...).")],
    input_: Annotated[
        str, typer.Option("--input", help="The task's input: a JSON object, @file or @-.")
    ] = "{}",
    queue: Annotated[str, typer.Option(help="Queue.")] = "default",
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    max_attempts: Annotated[int, typer.Option(help="Attempts before it fails for good.")] = 3,
    dedupe: Annotated[str | None, typer.Option(help="At most one task with this key.")] = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Queue a durable task for the workers."""

    async def action(ul: AsyncUnderlay) -> Any:
        payload = read_data(input_, "input")
        return await ul.tasks.submit(
            handler=handler, input=payload, queue=queue, priority=priority,
            max_attempts=max_attempts, dedupe_key=dedupe, idempotency_key=idempotency_key,
        )  # fmt: skip

    execute(ctx, action, render.one, json_=json_, label="submitting")


@app.command("ls")
def ls(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="Only tasks in this state.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    json_: JsonOpt = False,
) -> None:
    """The organisation's tasks, newest first."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tasks.list(state=state, queue=queue, limit=limit)

    def show(page: Any, console: Console) -> None:
        console.print(render.table(page.items, COLUMNS))

    execute(ctx, action, show, json_=json_, label="listing")


@app.command("get")
def get(ctx: typer.Context, task_id: IdArg, json_: JsonOpt = False) -> None:
    """One task: state, attempts, fencing token, result or error."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tasks.get(task_id=task_id)

    execute(ctx, action, render.one, json_=json_, label="reading")


@app.command("cancel")
def cancel(ctx: typer.Context, task_id: IdArg, json_: JsonOpt = False) -> None:
    """Cancel a task that has not finished."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tasks.cancel(task_id=task_id)

    execute(ctx, action, render.one, json_=json_, label="cancelling")


@app.command("attempts")
def attempts(ctx: typer.Context, task_id: IdArg, json_: JsonOpt = False) -> None:
    """Every lease of a task: worker, start, end, outcome, failure class."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tasks.attempts(task_id=task_id)

    def show(page: Any, console: Console) -> None:
        cols = ("attempt", "fence", "worker_id", "outcome", "error_class", "started_at")
        console.print(render.table(page.items, cols))

    execute(ctx, action, show, json_=json_, label="reading")


@app.command("prune")
def prune(
    ctx: typer.Context,
    older_than: Annotated[
        float, typer.Option("--older-than", help="Days since the task finished (> 0).")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count, delete nothing.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Delete finished tasks older than N days, with their attempts and DBOS workflows.

    Operators only. Kept: unfinished tasks, and those an open escalation or a live fleet
    member needs.
    """

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tasks.prune(older_than_days=older_than, dry_run=dry_run)

    def show(report: Any, console: Console) -> None:
        verb = "would prune" if report.dry_run else "pruned"
        console.print(
            f"{verb} {report.tasks} tasks, {report.attempts} attempts and {report.workflows} "
            f"DBOS workflows finished before {render.local_time(report.cutoff)}"
        )

    execute(ctx, action, show, json_=json_, label="pruning")


def costs(
    ctx: typer.Context,
    by: Annotated[str, typer.Option(help="Group by handler, queue or agent.")] = "handler",
    since: Annotated[float, typer.Option(help="Attempts started at or after (epoch s).")] = 0.0,
    json_: JsonOpt = False,
) -> None:
    """What tasks cost in worker time and money, joined with outcomes: per success, retry tax."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tasks.costs(by=by, since=since)

    def show(report: Any, console: Console) -> None:
        cols = ["key", "tasks", "succeeded", "attempts", "worker_seconds",
                "seconds_per_success", "attempts_per_success", "retry_tax",
                "spend", "spend_per_success", "spend_retry_tax"]  # fmt: skip
        if report.by == "agent":
            cols.append("agent_spend")
        console.print(render.table(report.rows, tuple(cols)))

    execute(ctx, action, show, json_=json_, label="costing")
