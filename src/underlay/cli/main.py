"""The ``underlay`` app: global options and the command groups.

    underlay [--home PATH] [--url URL] [--token TOKEN] [--json] COMMAND ...

Without ``--url`` the embedded kernel under ``--home`` is opened in this process, acting
as the local admin (or as ``UNDERLAY_TOKEN``); with it, the commands talk to a running
``underlay up`` over HTTP. ``--json`` is accepted here and on every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from underlay.cli import (
    agents,
    audit,
    budget,
    calls,
    comms,
    escalations,
    fleets,
    memory,
    queue,
    sandbox,
    serve,
    tasks,
    tokens,
    vault,
)
from underlay.cli.runtime import State

app = typer.Typer(
    name="underlay",
    help="underlay: an operating system for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(envvar="UNDERLAY_HOME", help="Installation directory (default ~/.underlay)."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="UNDERLAY_URL", help="Talk to a running server instead of the embedded kernel."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="UNDERLAY_TOKEN",
            show_default=False,
            help="Act as this token's holder (default: the local admin).",
        ),
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Machine output: one JSON document on stdout.")
    ] = False,
) -> None:
    ctx.obj = State(home=home, url=url or None, token=token or None, json=json_)


app.add_typer(agents.app, name="agents")
app.add_typer(tokens.app, name="tokens")
app.add_typer(budget.app, name="budget")
app.add_typer(audit.app, name="audit")
app.add_typer(vault.app, name="vault")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(memory.app, name="memory")
app.add_typer(tasks.app, name="tasks")
app.command("costs")(tasks.costs)
fleets.register(app)
app.add_typer(escalations.app, name="escalations")
app.add_typer(queue.repos_app, name="repos")
app.add_typer(queue.queue_app, name="queue")
comms.register(app)
calls.register(app)
serve.register(app)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
