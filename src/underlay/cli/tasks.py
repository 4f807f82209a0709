"""``underlay tasks``: submit durable tasks, list and inspect them, cancel them."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from underlay.cli import render
from underlay.cli.parsing import read_data
from underlay.cli.runtime import IdemOpt, JsonOpt, execute
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(help="Durable tasks: submit, list, inspect, cancel.", no_args_is_help=True)
COLUMNS = ("id", "handler", "queue", "state", "attempts", "priority")
IdArg = Annotated[str, typer.Argument(help="Task id.")]


def _one(task: Any, console: Console) -> None:
    console.print(render.fields(task))


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

    execute(ctx, action, _one, json_=json_, label="submitting")


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

    execute(ctx, action, _one, json_=json_, label="reading")


@app.command("cancel")
def cancel(ctx: typer.Context, task_id: IdArg, json_: JsonOpt = False) -> None:
    """Cancel a task that has not finished."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tasks.cancel(task_id=task_id)

    execute(ctx, action, _one, json_=json_, label="cancelling")


@app.command("attempts")
def attempts(ctx: typer.Context, task_id: IdArg, json_: JsonOpt = False) -> None:
    """Every lease of a task: worker, start, end, outcome, failure class."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tasks.attempts(task_id=task_id)

    def show(page: Any, console: Console) -> None:
        cols = ("attempt", "fence", "worker_id", "outcome", "error_class", "started_at")
        console.print(render.table(page.items, cols))

    execute(ctx, action, show, json_=json_, label="reading")


def costs(
    ctx: typer.Context,
    by: Annotated[str, typer.Option(help="Group by handler or queue.")] = "handler",
    since: Annotated[float, typer.Option(help="Attempts started at or after (epoch s).")] = 0.0,
    json_: JsonOpt = False,
) -> None:
    """What tasks cost in worker time, joined with outcomes: per success, and the retry tax."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tasks.costs(by=by, since=since)

    def show(report: Any, console: Console) -> None:
        cols = ("key", "tasks", "succeeded", "attempts", "worker_seconds",
                "seconds_per_success", "attempts_per_success", "retry_tax")  # fmt: skip
        console.print(render.table(report.rows, cols))

    execute(ctx, action, show, json_=json_, label="costing")
