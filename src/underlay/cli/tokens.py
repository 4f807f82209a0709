"""``underlay tokens``: mint, list and revoke tokens."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from underlay import errors
from underlay.cli import render
from underlay.cli.runtime import IdemOpt, JsonOpt, execute
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(
    help="Tokens: scoped, expiring credentials for agents and humans.", no_args_is_help=True
)

COLUMNS = ("id", "kind", "subject_id", "name", "scopes", "expires_at", "revoked_at")
HEADERS = ("id", "kind", "subject", "name", "scopes", "expires", "revoked")


@app.command("create")
def create(
    ctx: typer.Context,
    agent: Annotated[
        str | None, typer.Option(help="Agent id or name (kind agent; default: the caller).")
    ] = None,
    kind: Annotated[str, typer.Option(help="agent, human or enrollment.")] = "agent",
    name: Annotated[str, typer.Option(help="A label for the token.")] = "cli",
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="Narrow to these capability patterns (repeatable)."),
    ] = None,
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds.")] = None,
    max_agents: Annotated[
        int | None, typer.Option(help="Enrollment: how many agents may sign up.")
    ] = None,
    enroll_cap: Annotated[
        list[str] | None,
        typer.Option("--enroll-cap", help="Enrollment: capabilities agents may take."),
    ] = None,
    enroll_budget: Annotated[
        str | None, typer.Option(help="Enrollment: most budget per agent, e.g. '1.00 USD'.")
    ] = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Mint a token; it is printed this once and never again."""

    async def action(ul: AsyncUnderlay) -> Any:
        fields: dict[str, Any] = {"kind": kind, "name": name, "subject": agent, "ttl_seconds": ttl}
        if scope:
            fields["scopes"] = scope
        limits: dict[str, Any] = {}
        if max_agents is not None:
            limits["max_agents"] = max_agents
        if enroll_cap:
            limits["capabilities"] = enroll_cap
        if enroll_budget is not None:
            limits["budget_per_agent"] = enroll_budget
        if limits and kind != "enrollment":
            raise errors.InvalidInput(
                "--max-agents, --enroll-cap and --enroll-budget need --kind enrollment",
                field="kind",
            )
        if kind == "enrollment":
            fields["limits"] = limits
        return await ul.tokens.create(idempotency_key=idempotency_key, **fields)

    def show(issued: Any, console: Console) -> None:
        info = issued.info
        whom = f" for {info.subject_id}" if info.subject_id else ""
        console.print(Text(f"created {info.kind} token {info.id}{whom}", style="green"))
        console.print(
            issued.token.get_secret_value(), soft_wrap=True, highlight=False, markup=False
        )
        console.print(
            Text("Store it now: it is shown this once and never again.", style="bold yellow")
        )
        if info.expires_at:
            console.print(Text(f"expires {render.local_time(info.expires_at)}", style="dim"))

    execute(ctx, action, show, json_=json_, label="minting token")


@app.command("ls")
def ls(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(help="Only this agent's tokens.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List the org's tokens (never their secrets)."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tokens.list(subject=agent, include_revoked=all_)

    def show(result: Any, console: Console) -> None:
        console.print(render.table(result.items, COLUMNS, headers=HEADERS))

    execute(ctx, action, show, json_=json_, label="listing tokens")


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (tok_...).")],
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Revoke a token: calls with it fail from now on."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.tokens.revoke(token_id=token_id, idempotency_key=idempotency_key)

    def show(token: Any, console: Console) -> None:
        console.print(
            Text(
                f"revoked token {token.id} at {render.local_time(token.revoked_at)}", style="yellow"
            )
        )

    execute(ctx, action, show, json_=json_, label="revoking token")
