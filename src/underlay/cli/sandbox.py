"""``underlay sandbox``: create, run in, inspect and destroy sandboxes.

Ephemeral sandboxes live as long as the server that holds them: use these commands
with ``--url`` against ``underlay up``. Embedded (no ``--url``), a persistent sandbox
still works across invocations: it starts again, files intact, on its next use.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from underlay.cli import render
from underlay.cli.parsing import pairs
from underlay.cli.runtime import IdemOpt, JsonOpt, execute, state
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(help="Sandboxes: isolated places to run code.", no_args_is_help=True)
files_app = typer.Typer(help="Files in a sandbox's /workspace.", no_args_is_help=True)
app.add_typer(files_app, name="files")

COLUMNS = ("id", "template", "state", "persistent", "owner", "expires_at")
SbxArg = Annotated[str, typer.Argument(help="Sandbox id.")]
SecretOpt = Annotated[
    list[str] | None,
    typer.Option("--secret", help="VARIABLE=SECRET: a variable from the vault (repeatable)."),
]


@app.command("create")
def create(
    ctx: typer.Context,
    template: Annotated[str, typer.Option(help="Root file system template.")] = "default",
    timeout: Annotated[float | None, typer.Option(help="Seconds until destroyed.")] = 300,
    persistent: Annotated[bool, typer.Option(help="Survive restarts, files included.")] = False,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE (repeatable).")] = None,
    secret: SecretOpt = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory cap in MiB.")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPU quota in cores.")] = None,
    disk_mb: Annotated[int | None, typer.Option(help="Workspace size cap in MiB.")] = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Start a sandbox and print it."""
    limits = {
        k: v for k, v in (("memory_mb", memory_mb), ("cpus", cpus), ("disk_mb", disk_mb)) if v
    }

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.sandbox.create(
            template=template,
            timeout=None if persistent and not timeout else timeout,
            persistent=persistent,
            env=pairs(env, "env"),
            secrets=pairs(secret, "secrets"),
            limits=limits,
            idempotency_key=idempotency_key,
        )

    execute(ctx, action, render.one, json_=json_, label="starting sandbox")


@app.command("ls")
def ls(
    ctx: typer.Context,
    all_states: Annotated[bool, typer.Option("--all", help="Include destroyed ones.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List sandboxes, newest first."""

    async def action(ul: AsyncUnderlay) -> Any:
        page = await ul.sandbox.list(limit=500)
        if not all_states:
            page.items = [s for s in page.items if s.state != "destroyed"]
        return page

    def show(page: Any, console: Console) -> None:
        console.print(render.table(page.items, COLUMNS))

    execute(ctx, action, show, json_=json_, label="listing sandboxes")


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    sandbox: SbxArg,
    command: Annotated[list[str], typer.Argument(help="A shell line, or an argv after --.")],
    timeout: Annotated[float, typer.Option(help="Seconds before it is killed.")] = 60,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE (repeatable).")] = None,
    secret: SecretOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run a command; print its output and exit with its exit code."""
    cmd: str | list[str] = command[0] if len(command) == 1 else command
    stdin = None if sys.stdin.isatty() else sys.stdin.read() or None

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.sandbox.commands.run(
            sandbox, cmd, env=pairs(env, "env"), secrets=pairs(secret, "secrets"),
            timeout=timeout, stdin=stdin,
        )  # fmt: skip

    def show(out: Any, console: Console) -> None:
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
        if out.timed_out:
            sys.stderr.write(f"underlay: killed after {timeout} s\n")

    result = execute(ctx, action, show, json_=json_, label="running")
    if not (json_ or state(ctx).json) and result.exit_code:
        raise typer.Exit(min(255, max(1, result.exit_code)))


def _simple(verb: str, doc: str, label: str) -> None:
    def command(
        ctx: typer.Context, sandbox: SbxArg, idempotency_key: IdemOpt = None, json_: JsonOpt = False
    ) -> None:
        async def action(ul: AsyncUnderlay) -> Any:
            method = getattr(ul.sandbox, verb)
            if method.syscall.mutating:
                return await method(sandbox, idempotency_key=idempotency_key)
            return await method(sandbox)

        execute(ctx, action, render.one, json_=json_, label=label)

    command.__doc__ = doc
    app.command(verb.replace("_", "-"))(command)


_simple("get", "Show one sandbox.", "fetching sandbox")
_simple("pause", "Freeze every process of a sandbox.", "pausing")
_simple("resume", "Thaw a paused sandbox, or start a stopped persistent one.", "resuming")
_simple("destroy", "Kill a sandbox's processes and delete its files.", "destroying")
_simple("metrics", "CPU-seconds, memory, disk and processes of a sandbox.", "reading metrics")


@files_app.command("read")
def files_read(ctx: typer.Context, sandbox: SbxArg, path: str, json_: JsonOpt = False) -> None:
    """Print a file (base64 when it is not UTF-8)."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.sandbox.files.read(sandbox, path)

    def show(f: Any, console: Console) -> None:
        sys.stdout.write(f.content)

    execute(ctx, action, show, json_=json_, label="reading")


@files_app.command("write")
def files_write(
    ctx: typer.Context,
    sandbox: SbxArg,
    path: str,
    source: Annotated[typer.FileText, typer.Argument(help="Local file, or - for stdin.")],
    json_: JsonOpt = False,
) -> None:
    """Write a local text file (or stdin) to PATH in the sandbox."""
    content = source.read()

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.sandbox.files.write(sandbox, path, content)

    def show(f: Any, console: Console) -> None:
        console.print(Text(f"wrote {f.size} bytes to {f.path}", style="green"))

    execute(ctx, action, show, json_=json_, label="writing")


@files_app.command("ls")
def files_ls(
    ctx: typer.Context,
    sandbox: SbxArg,
    path: Annotated[str, typer.Argument()] = "/workspace",
    depth: int = 1,
    json_: JsonOpt = False,
) -> None:
    """List a directory of the sandbox."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.sandbox.files.list(sandbox, path, depth=depth)

    def show(listing: Any, console: Console) -> None:
        console.print(render.table(listing.items, ("path", "type", "size", "modified_at")))

    execute(ctx, action, show, json_=json_, label="listing")


template_app = typer.Typer(help="Root file system templates.", no_args_is_help=True)
app.add_typer(template_app, name="template")


def _show_templates(result: Any, console: Console) -> None:
    for name in result.names:
        console.print(name)


@template_app.command("ls")
def template_ls(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List the templates sandboxes can start from."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.sandbox.templates()

    execute(ctx, action, _show_templates, json_=json_, label="listing templates")


@template_app.command("build")
def template_build(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Template name, e.g. bookworm-py.")],
    suite: Annotated[str, typer.Option(help="Debian suite.")] = "bookworm",
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Extra Debian package (repeatable).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Build a Debian root file system with debootstrap (takes a few minutes)."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.sandbox.template_build(name=name, suite=suite, include=include or [])

    execute(ctx, action, _show_templates, json_=json_, label=f"building template {name}")


@template_app.command("rm")
def template_rm(ctx: typer.Context, name: str, json_: JsonOpt = False) -> None:
    """Delete a built template."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.sandbox.template_delete(name=name)

    execute(ctx, action, _show_templates, json_=json_, label=f"deleting template {name}")
