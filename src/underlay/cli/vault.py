"""``underlay vault``: secrets that sandboxes get as environment variables.

    printf %s "$TOKEN" | underlay vault put github --description "CI bot"
    underlay vault grant github builder          # the agent may use it now
    underlay sandbox create --secret GITHUB_TOKEN=github
    underlay vault ls                            # names, versions, grants: never values

A value is read from standard input (one trailing newline dropped), from a variable of
the CLI's own environment (``--from-env``), or at a terminal from a hidden prompt; never
from the command line, where ``ps`` and the shell's history would keep it.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from underlay import errors
from underlay.cli import render
from underlay.cli.runtime import IdemOpt, JsonOpt, execute
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(
    help="The vault: secrets for sandboxes; a value is never shown again.", no_args_is_help=True
)

COLUMNS = ("name", "version", "description", "grants", "updated_at")
NameArg = Annotated[str, typer.Argument(help="The secret's name (a-z, 0-9, '_', '-').")]
AgentArg = Annotated[str, typer.Argument(help="Agent id or name.")]


def _value(name: str, from_env: str | None) -> str:
    if from_env is not None:
        if from_env not in os.environ:
            raise errors.InvalidInput(f"no variable {from_env} in this environment", field="value")
        return os.environ[from_env]
    if sys.stdin.isatty():
        return getpass.getpass(f"value of {name} (not shown): ")
    return sys.stdin.read().removesuffix("\n")


@app.command("put")
def put(
    ctx: typer.Context,
    name: NameArg,
    description: Annotated[str, typer.Option(help="What it is, for whom.")] = "",
    from_env: Annotated[
        str | None, typer.Option(help="Take the value from this variable of the environment.")
    ] = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Store a secret (or a new version of it): the value from stdin, a prompt or --from-env."""

    async def action(ul: AsyncUnderlay) -> Any:
        value = _value(name, from_env)
        return await ul.vault.put(
            name=name, value=value, description=description, idempotency_key=idempotency_key
        )

    def show(made: Any, console: Console) -> None:
        console.print(Text(f"stored {made.name}, version {made.version}", style="green"))

    execute(ctx, action, show, json_=json_, label="storing")


@app.command("ls")
def ls(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """The organisation's secrets: names, versions, descriptions and grants."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.vault.list()

    def show(page: Any, console: Console) -> None:
        console.print(render.table(page.items, COLUMNS))

    execute(ctx, action, show, json_=json_, label="listing")


@app.command("rm")
def rm(ctx: typer.Context, name: NameArg, json_: JsonOpt = False) -> None:
    """Delete a secret and its grants (sandboxes that have it keep their copy)."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.vault.delete(name=name)

    def show(_: Any, console: Console) -> None:
        console.print(Text(f"deleted {name}", style="green"))

    execute(ctx, action, show, json_=json_, label="deleting")


def _granting(verb: str, doc: str, label: str) -> None:
    def command(ctx: typer.Context, name: NameArg, agent: AgentArg, json_: JsonOpt = False) -> None:
        async def action(ul: AsyncUnderlay) -> Any:
            return await getattr(ul.vault, verb)(name=name, agent=agent)

        def show(info: Any, console: Console) -> None:
            whom = ", ".join(info.grants) or "no agent"
            console.print(Text(f"{name}: granted to {whom}", style="green"))

        execute(ctx, action, show, json_=json_, label=label)

    command.__doc__ = doc
    app.command(verb)(command)


_granting("grant", "Let an agent use a secret in its sandboxes and commands.", "granting")
_granting(
    "revoke", "Stop an agent's use of a secret (from its next sandbox or command).", "revoking"
)
