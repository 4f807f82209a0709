"""``underlay memory``: remember, recall, inspect, forget, export and import memories.

Every command takes the scope as ``--user``, ``--agent`` and/or ``--run``. Embedded (no
``--url``) the memory store is the installation's own file; with ``--url`` the server's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from underlay.cli import render
from underlay.cli.runtime import IdemOpt, JsonOpt, execute
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(help="Memory: curated, long-term, searchable.", no_args_is_help=True)

User = Annotated[str | None, typer.Option("--user", help="user_id of the scope.")]
AgentId = Annotated[str | None, typer.Option("--agent", help="agent_id of the scope.")]
Run = Annotated[str | None, typer.Option("--run", help="run_id of the scope.")]
IdArg = Annotated[str, typer.Argument(help="Memory id.")]
COLUMNS = ("id", "memory", "actor", "version", "valid_from", "valid_to")


def _scope(user: str | None, agent: str | None, run: str | None) -> dict[str, str]:
    return {k: v for k, v in (("user_id", user), ("agent_id", agent), ("run_id", run)) if v}


@app.command("add")
def add(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="What to remember ('-' reads stdin).")],
    user: User = None,
    agent: AgentId = None,
    run: Run = None,
    raw: Annotated[bool, typer.Option("--raw", help="Store as is (infer=false).")] = False,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Remember a text: facts are extracted, duplicates merged, contradictions superseded."""
    body = sys.stdin.read() if text == "-" else text

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.memory.add(
            body, infer=not raw, idempotency_key=idempotency_key, **_scope(user, agent, run)
        )

    def show(result: Any, console: Console) -> None:
        console.print(render.table(result.results, ("event", "id", "memory")))

    execute(ctx, action, show, json_=json_, label="remembering")


@app.command("search")
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to recall.")],
    user: User = None,
    agent: AgentId = None,
    run: Run = None,
    limit: Annotated[int, typer.Option(help="How many memories.")] = 10,
    as_of: Annotated[str | None, typer.Option(help="What was true then (ISO time).")] = None,
    json_: JsonOpt = False,
) -> None:
    """The memories most relevant to a query, best first."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.memory.search(query, limit=limit, as_of=as_of, **_scope(user, agent, run))

    def show(result: Any, console: Console) -> None:
        console.print(render.table(result.results, ("score", "memory", "actor", "id")))

    execute(ctx, action, show, json_=json_, label="searching")


@app.command("ls")
def ls(
    ctx: typer.Context,
    user: User = None,
    agent: AgentId = None,
    run: Run = None,
    limit: Annotated[int, typer.Option(help="Page size.")] = 100,
    cursor: Annotated[str | None, typer.Option(help="From a previous page.")] = None,
    json_: JsonOpt = False,
) -> None:
    """A scope's memories that are true now, oldest first."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.memory.get_all(limit=limit, cursor=cursor, **_scope(user, agent, run))

    def show(page: Any, console: Console) -> None:
        console.print(render.table(page.items, COLUMNS))
        if page.next_cursor:
            console.print(f"more: --cursor {page.next_cursor}")

    execute(ctx, action, show, json_=json_)


@app.command("get")
def get(ctx: typer.Context, memory_id: IdArg, json_: JsonOpt = False) -> None:
    """One memory."""
    execute(ctx, lambda ul: ul.memory.get(memory_id), render.one, json_=json_)


@app.command("history")
def history(ctx: typer.Context, memory_id: IdArg, json_: JsonOpt = False) -> None:
    """Every change of one memory."""

    def show(result: Any, console: Console) -> None:
        console.print(render.table(result.items, ("event", "version", "memory", "at")))

    execute(ctx, lambda ul: ul.memory.history(memory_id), show, json_=json_)


@app.command("rm")
def rm(
    ctx: typer.Context, memory_id: IdArg, idempotency_key: IdemOpt = None, json_: JsonOpt = False
) -> None:
    """Delete a memory (its history is kept)."""
    execute(
        ctx,
        lambda ul: ul.memory.delete(memory_id, idempotency_key=idempotency_key),
        render.one,
        json_=json_,
    )


@app.command("export")
def export(
    ctx: typer.Context,
    user: User = None,
    agent: AgentId = None,
    run: Run = None,
    current_only: Annotated[bool, typer.Option(help="Leave out superseded versions.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Write a scope's memories to stdout as JSONL (format underlay.memory/1); with --json,
    one JSON object holding the JSONL and the count."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.memory.export(history=not current_only, **_scope(user, agent, run))

    def show(out: Any, _console: Console) -> None:
        sys.stdout.write(out.jsonl)

    execute(ctx, action, show, json_=json_)


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A JSONL export ('-' reads stdin).")],
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Load an export: every line or none."""
    data = sys.stdin.read() if str(path) == "-" else path.read_text()

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.memory.import_(data, idempotency_key=idempotency_key)

    execute(ctx, action, render.one, json_=json_, label="importing")
