"""``underlay call`` (any syscall, by name) and ``underlay syscalls`` (the table itself)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from underlay import errors
from underlay.cli import render
from underlay.cli.parsing import call_payload
from underlay.cli.runtime import IdemOpt, JsonOpt, execute, guard, wants_json
from underlay.kernel.docgen import syscalls_markdown
from underlay.sdk.client import AsyncUnderlay


def call(
    ctx: typer.Context,
    syscall: Annotated[
        str,
        typer.Argument(
            metavar="SYSCALL", help="Syscall name, e.g. agents.get (see `underlay syscalls`)."
        ),
    ],
    words: Annotated[
        list[str] | None,
        typer.Argument(metavar="KEY=VALUE|KEY:=JSON", help="Input fields; := takes raw JSON."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Input as a JSON object, @file or @- (stdin)."),
    ] = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Invoke any syscall: `underlay call agents.get agent=fixer`."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.call(syscall, call_payload(data, words), idempotency_key=idempotency_key)

    execute(ctx, action, render.render_any, json_=json_, label=syscall)


def syscalls(
    ctx: typer.Context,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print docs/syscalls.md.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Print the syscall table: name, capability, mutating, cost, failure policy, doc."""
    as_json = wants_json(ctx, json_)
    if markdown and as_json:
        with guard(as_json):
            raise errors.InvalidInput("--markdown and --json exclude each other", field="markdown")

    async def action(ul: AsyncUnderlay) -> Any:
        if markdown:
            return syscalls_markdown(ul.table)
        return [sc.describe() for sc in ul.table]

    def show(result: Any, console: Console) -> None:
        if markdown:
            sys.stdout.write(result)
            return
        t = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            title=f"{len(result)} syscalls",
            title_justify="left",
        )
        for header in ("name", "capability", "mutating", "cost", "policy", "doc"):
            t.add_column(header, overflow="fold", no_wrap=header == "name")
        for row in result:
            cap = row["capability"] + (" (operator)" if row["operator_only"] else "")
            t.add_row(
                row["name"],
                cap,
                render.cell("mutating", row["mutating"]),
                row["cost"],
                row["policy"],
                row["doc"],
            )
        console.print(t)

    execute(ctx, action, show, json_=json_, label="reading the syscall table")


def register(app: typer.Typer) -> None:
    app.command("call")(call)
    app.command("syscalls")(syscalls)
