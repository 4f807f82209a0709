"""``underlay escalations``: the human inbox — list, read and resolve escalations."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from underlay import errors
from underlay.cli import render
from underlay.cli.parsing import read_data
from underlay.cli.runtime import IdemOpt, JsonOpt, execute
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(help="The human inbox: escalations and approvals.", no_args_is_help=True)
COLUMNS = ("id", "kind", "state", "source", "summary")
IdArg = Annotated[str, typer.Argument(help="Escalation id.")]


@app.command("ls")
def ls(
    ctx: typer.Context,
    resolved: Annotated[bool, typer.Option("--resolved", help="Resolved ones instead.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    json_: JsonOpt = False,
) -> None:
    """Open escalations (or resolved ones), oldest first."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.escalations.list(state="resolved" if resolved else "open", limit=limit)

    def show(page: Any, console: Console) -> None:
        console.print(render.table(page.items, COLUMNS))

    execute(ctx, action, show, json_=json_, label="listing")


@app.command("get")
def get(ctx: typer.Context, escalation_id: IdArg, json_: JsonOpt = False) -> None:
    """One escalation with its context (and its answer, once resolved)."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.escalations.get(escalation_id=escalation_id)

    execute(ctx, action, render.one, json_=json_, label="reading")


@app.command("resolve")
def resolve(
    ctx: typer.Context,
    escalation_id: IdArg,
    approve: Annotated[
        bool | None, typer.Option("--approve/--reject", help="The decision, for approvals.")
    ] = None,
    note: Annotated[str | None, typer.Option(help="A note for the agent or task.")] = None,
    data: Annotated[
        str | None, typer.Option(help="More of the answer: a JSON object, @file or @-.")
    ] = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Answer an escalation; a task waiting on it resumes with the answer."""

    async def action(ul: AsyncUnderlay) -> Any:
        answer = read_data(data)
        if approve is not None:
            answer["approved"] = approve
        if note:
            answer["note"] = note
        if not answer:
            raise errors.InvalidInput(
                "give --approve/--reject, --note or --data", field="resolution"
            )
        return await ul.escalations.resolve(
            escalation_id=escalation_id, resolution=answer, idempotency_key=idempotency_key
        )

    execute(ctx, action, render.one, json_=json_, label="resolving")
