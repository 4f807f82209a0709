"""``underlay audit``: read the trail and verify its hash chain."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from underlay.cli import render
from underlay.cli.runtime import JsonOpt, execute
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(help="The audit trail: append-only and hash-chained.", no_args_is_help=True)

COLUMNS = ("seq", "ts", "actor_kind", "actor_id", "syscall", "outcome", "error_code")
HEADERS = ("seq", "when", "actor", "actor id", "syscall", "outcome", "error")


@app.command("tail")
def tail(
    ctx: typer.Context,
    n: Annotated[int, typer.Option("-n", "--lines", help="How many events.")] = 20,
    syscall: Annotated[str | None, typer.Option(help="Only events of this syscall.")] = None,
    before: Annotated[int | None, typer.Option(help="Only events with seq below this.")] = None,
    json_: JsonOpt = False,
) -> None:
    """The latest audit events, newest first."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.audit.tail(limit=n, syscall=syscall, before=before)

    def show(page: Any, console: Console) -> None:
        console.print(render.table(page.items, COLUMNS, headers=HEADERS))
        if page.next_cursor is not None:
            console.print(Text(f"older events: --before {page.next_cursor}", style="dim"))

    execute(ctx, action, show, json_=json_, label="reading audit trail")


@app.command("verify")
def verify(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Check the hash chain; exit 1 and list the problems when it is broken."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.audit.verify()

    def show(report: Any, console: Console) -> None:
        if report.ok:
            console.print(
                Text(f"audit chain intact: {report.events} events verified", style="bold green")
            )
            return
        console.print(
            Text(
                f"audit chain BROKEN: {len(report.problems)} problem(s) in {report.events} events",
                style="bold red",
            )
        )
        console.print(render.table(report.problems, ("seq", "problem"), title=None), style="red")

    report = execute(ctx, action, show, json_=json_, label="verifying audit chain")
    if not report.ok:
        raise typer.Exit(1)
