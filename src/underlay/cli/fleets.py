"""``underlay apply -f fleet.yaml`` (the diff first), ``get fleets``, ``describe fleet``,
``delete fleet``: declarative fleets, kubectl-shaped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from underlay import errors
from underlay.cli import render
from underlay.cli.runtime import IdemOpt, JsonOpt, execute
from underlay.sdk.client import AsyncUnderlay

KINDS = ("fleet", "fleets")
Kind = Annotated[str, typer.Argument(help="What: fleet (or fleets).")]
NameArg = Annotated[str, typer.Argument(help="Fleet name.")]
MEMBER_COLUMNS = (
    "agent", "replica", "state", "restarts", "progress", "agent_id", "task_id", "sandbox_id",
)  # fmt: skip


def _kind(kind: str) -> None:
    if kind not in KINDS:
        raise errors.InvalidInput(f"unknown kind {kind!r}: this version knows fleets", field="kind")


def _changes(result: Any, console: Console) -> None:
    if not result.changes:
        console.print(f"fleet {result.name}: unchanged (generation {result.generation})")
        return
    for line in result.changes:
        console.print(line, style={"+": "green", "-": "red"}.get(line[0], "yellow"))
    done = "applied" if result.applied else "not applied (dry run)"
    console.print(f"fleet {result.name}: {done}, generation {result.generation}")


def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("--file", "-f", help="The fleet's YAML ('-': stdin).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the changes.")] = False,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Declare a fleet: print what changes, then apply it (the reconciler does the rest)."""

    async def action(ul: AsyncUnderlay) -> Any:
        try:
            text = typer.get_text_stream("stdin").read() if str(file) == "-" else file.read_text()
            spec = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as exc:
            raise errors.InvalidInput(f"cannot read {file}: {exc}", field="file") from None
        if not isinstance(spec, dict):
            raise errors.InvalidInput(f"{file}: expected a mapping (a fleet spec)", field="file")
        return await ul.fleets.apply(spec=spec, dry_run=dry_run, idempotency_key=idempotency_key)

    execute(ctx, action, _changes, json_=json_, label="applying")


def get(ctx: typer.Context, kind: Kind, json_: JsonOpt = False) -> None:
    """List fleets: generation, members by state."""

    async def action(ul: AsyncUnderlay) -> Any:
        _kind(kind)
        return await ul.fleets.list()

    def show(page: Any, console: Console) -> None:
        rows = [
            {"name": f.name, "generation": f.generation, "members": len(f.members),
             "running": sum(m.state == "running" for m in f.members),
             "escalated": f.escalation_id or "", "deleted": f.deleted}
            for f in page.items
        ]  # fmt: skip
        console.print(render.table(rows, tuple(rows[0]) if rows else ("name",)))

    execute(ctx, action, show, json_=json_, label="listing")


def describe(ctx: typer.Context, kind: Kind, name: NameArg, json_: JsonOpt = False) -> None:
    """One fleet: its spec as declared and every member (identity, run, lifecycle state,
    restarts, last reported progress)."""

    async def action(ul: AsyncUnderlay) -> Any:
        _kind(kind)
        return await ul.fleets.get(name=name)

    def show(fleet: Any, console: Console) -> None:
        declared = fleet.spec.model_dump(mode="json", exclude_defaults=True)
        console.print(yaml.safe_dump(declared, sort_keys=False))
        console.print(render.table(fleet.members, MEMBER_COLUMNS))
        if fleet.escalation_id:
            console.print(f"escalated: {fleet.escalation_id}", style="red")

    execute(ctx, action, show, json_=json_, label="reading")


def delete(
    ctx: typer.Context, kind: Kind, name: NameArg, idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:  # fmt: skip
    """Stop a fleet: runs cancelled, members terminated."""

    async def action(ul: AsyncUnderlay) -> Any:
        _kind(kind)
        return await ul.fleets.delete(name=name, idempotency_key=idempotency_key)

    execute(ctx, action, _changes, json_=json_, label="deleting")


def register(app: typer.Typer) -> None:
    for command in (apply, get, describe, delete):
        app.command(command.__name__)(command)
