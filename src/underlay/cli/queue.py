"""``underlay repos`` and ``underlay queue``: repositories and their merge queue."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from underlay.cli import render
from underlay.cli.runtime import IdemOpt, JsonOpt, execute
from underlay.sdk.client import AsyncUnderlay

repos_app = typer.Typer(help="Repositories the merge queue lands on.", no_args_is_help=True)
queue_app = typer.Typer(help="The merge queue: submit, list, status.", no_args_is_help=True)
REPO_COLUMNS = ("name", "target", "target_head", "owned", "batch_size", "concurrency", "path")
CHANGE_COLUMNS = ("id", "ref", "state", "tries", "submitted_by", "landed_commit", "conflicts")
RepoArg = Annotated[str, typer.Argument(help="Repository name.")]


@repos_app.command("add")
def add(
    ctx: typer.Context,
    name: RepoArg,
    path: Annotated[str | None, typer.Option(help="An existing repository (operators).")] = None,
    create: Annotated[bool, typer.Option(help="A new bare repository underlay owns.")] = False,
    target: Annotated[str, typer.Option(help="The branch changes land on.")] = "main",
    check: Annotated[
        list[str] | None, typer.Option("--check", help="A check command (repeatable).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Changes tested together.")] = 2,
    concurrency: Annotated[int, typer.Option(help="Batches tested at once.")] = 2,
    max_conflict_tries: Annotated[int, typer.Option(help="Before a human is asked.")] = 3,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Register a repository: --path of one on this host, or --create a bare one."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.repos.register(
            name=name, path=path, create=create, target=target, checks=check or [],
            batch_size=batch_size, concurrency=concurrency,
            max_conflict_tries=max_conflict_tries, idempotency_key=idempotency_key,
        )  # fmt: skip

    execute(ctx, action, render.one, json_=json_, label="registering")


@repos_app.command("ls")
def repos_ls(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """The organisation's repositories, with their target's head."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.repos.list()

    def show(page: Any, console: Console) -> None:
        console.print(render.table(page.items, REPO_COLUMNS))

    execute(ctx, action, show, json_=json_, label="listing")


@queue_app.command("submit")
def submit(
    ctx: typer.Context,
    repo: RepoArg,
    ref: Annotated[str, typer.Argument(help="The branch (or commit) to land.")],
    task: Annotated[str | None, typer.Option(help="The task it comes from.")] = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Queue a branch to land on the repository's target once its checks pass."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.queue.submit(
            repo=repo, ref=ref, task_id=task, idempotency_key=idempotency_key
        )

    execute(ctx, action, render.one, json_=json_, label="submitting")


@queue_app.command("ls")
def ls(
    ctx: typer.Context,
    repo: RepoArg,
    state: Annotated[str | None, typer.Option(help="Only changes in this state.")] = None,
    predict: Annotated[
        bool, typer.Option("--predict", help="Also the conflicts the queue will meet.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """A repository's changes, oldest first (with --predict, the predicted conflicts)."""

    async def action(ul: AsyncUnderlay) -> Any:
        page = await ul.queue.list(repo=repo, state=state)
        if not predict:
            return page
        return {"items": page.items, "prediction": await ul.queue.predict(name=repo)}

    def show(result: Any, console: Console) -> None:
        items = result["items"] if isinstance(result, dict) else result.items
        console.print(render.table(items, CHANGE_COLUMNS))
        if isinstance(result, dict):
            for o in result["prediction"].conflicts:
                console.print(f"conflict: {o.a} x {o.b} in {', '.join(o.conflicts)}",
                              style="yellow")  # fmt: skip

    execute(ctx, action, show, json_=json_, label="listing")


@queue_app.command("status")
def status(
    ctx: typer.Context,
    change: Annotated[str, typer.Argument(help="Change id.")],
    json_: JsonOpt = False,
) -> None:
    """One change: its state, and the landed commit, failing output or conflicting paths."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.queue.get(change=change)

    execute(ctx, action, render.one, json_=json_, label="reading")
