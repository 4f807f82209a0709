"""``underlay agents``: create, list, get and disable agents."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.text import Text

from underlay.cli import render
from underlay.cli.parsing import pairs
from underlay.cli.runtime import IdemOpt, JsonOpt, collect_pages, execute
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(help="Agents: identities with capabilities and a budget.", no_args_is_help=True)

COLUMNS = ("id", "name", "status", "capabilities", "created_at")
DETAIL = ("id", "name", "status", "did", "capabilities", "metadata", "created_by", "created_at")


def show_agent(agent: Any, console: Console) -> None:
    console.print(render.fields(agent, only=DETAIL))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A unique name in the org.")],
    cap: Annotated[
        list[str] | None,
        typer.Option("--cap", help="Capability pattern (repeatable), e.g. 'sandbox.*'."),
    ] = None,
    budget: Annotated[str | None, typer.Option(help="Initial budget, e.g. '5.00 USD'.")] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Metadata key=value (repeatable).")
    ] = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create an agent with its key pair, capabilities and an optional budget."""

    async def action(ul: AsyncUnderlay) -> Any:
        fields: dict[str, Any] = {"name": name, "capabilities": cap or []}
        if budget is not None:
            fields["budget"] = budget
        if meta:
            fields["metadata"] = pairs(meta, "metadata")
        return await ul.agents.create(idempotency_key=idempotency_key, **fields)

    def show(agent: Any, console: Console) -> None:
        console.print(Text(f"created agent {agent.name} ({agent.id})", style="green"))
        show_agent(agent, console)

    execute(ctx, action, show, json_=json_, label="creating agent")


@app.command("ls")
def ls(
    ctx: typer.Context,
    status: Annotated[
        Literal["active", "disabled"] | None, typer.Option(help="Only agents in this state.")
    ] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Fetch every page.")] = False,
    limit: Annotated[int, typer.Option(help="Page size.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Start after this cursor.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List the org's agents, oldest first."""

    async def page(ul: AsyncUnderlay, after: Any) -> Any:
        return await ul.agents.list(cursor=after or cursor, limit=limit, status=status)

    def show(result: Any, console: Console) -> None:
        console.print(
            render.table(
                result.items, COLUMNS, headers=("id", "name", "status", "capabilities", "created")
            )
        )
        render.more_hint(console, result.next_cursor)

    execute(ctx, collect_pages(page, all_pages), show, json_=json_, label="listing agents")


@app.command("get")
def get(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Agent id or name.")],
    json_: JsonOpt = False,
) -> None:
    """Show one agent."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.agents.get(agent=ref)

    execute(ctx, action, show_agent, json_=json_, label="fetching agent")


@app.command("disable")
def disable(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Agent id or name.")],
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Disable an agent: its tokens stop working at once; its records are kept."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.agents.disable(agent=ref, idempotency_key=idempotency_key)

    def show(agent: Any, console: Console) -> None:
        console.print(Text(f"disabled agent {agent.name} ({agent.id})", style="yellow"))

    execute(ctx, action, show, json_=json_, label="disabling agent")
