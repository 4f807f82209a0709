"""How every CLI command runs: global options, the client, one error path, one output path.

A command builds an *action* (an async function of an ``AsyncUnderlay``) and a *renderer*
for humans, and hands both to ``execute``. ``execute`` opens the client (the embedded
kernel under ``--home``, or a server at ``--url``), runs the action under a spinner on
stderr, and prints either the Rich rendering or, with ``--json``, the syscall's output
as one JSON document on stdout. An ``UnderlayError`` becomes ``error[code]: message`` on
stderr (or the problem document on stdout with ``--json``) and exit code 2 for invalid
input, 1 otherwise. The CLI holds no authorization, audit or budget logic: it only calls
syscalls through the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from underlay import errors
from underlay.sdk.client import AsyncUnderlay
from underlay.types import to_wire

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Machine output: one JSON document on stdout.")
]
IdemOpt = Annotated[
    str | None,
    typer.Option("--idempotency-key", help="Retry-safe key: a repeat returns the first result."),
]

PIPE_WIDTH = 1000

Action = Callable[[AsyncUnderlay], Awaitable[Any]]
Renderer = Callable[[Any, Console], None]


@dataclass
class State:
    """The global options, given before the command (``underlay --json agents ls``)."""

    home: Path | None = None
    url: str | None = None
    token: str | None = None
    json: bool = False


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


def wants_json(ctx: typer.Context, json_: bool) -> bool:
    return json_ or state(ctx).json


def out() -> Console:
    """stdout for humans. Markup and emoji codes are off: data (``did:key:...``) prints as is.

    On a terminal, tables fit its width; into a pipe or file, lines are never folded
    (unless ``COLUMNS`` says otherwise), so ``grep`` sees whole ids.
    """
    console = Console(markup=False, emoji=False)
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console.width = PIPE_WIDTH
    return console


def err() -> Console:
    """stderr: errors, notes and the spinner."""
    return Console(stderr=True, soft_wrap=True, markup=False, emoji=False)


def emit_json(doc: Any, *, one_line: bool = False) -> None:
    """Write one JSON document to stdout (not through Rich: no wrapping, no colour)."""
    if isinstance(doc, BaseModel):
        doc = to_wire(doc)
    indent = None if one_line else 2
    sys.stdout.write(json.dumps(doc, indent=indent, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def fail(exc: errors.UnderlayError, as_json: bool) -> NoReturn:
    """Report an expected error and exit: 2 for invalid input, 1 for anything else."""
    code = 2 if isinstance(exc, errors.InvalidInput) else 1
    if as_json:
        emit_json(exc.to_dict())
    else:
        line = f"error[{exc.code}]: {exc.message}"
        if exc.field:
            line += f" (field: {exc.field})"
        err().print(Text(line, style="bold red"))
    raise typer.Exit(code)


@contextlib.contextmanager
def guard(as_json: bool) -> Iterator[None]:
    """Turn an ``UnderlayError`` raised inside the block into the CLI's error report."""
    try:
        yield
    except errors.UnderlayError as exc:
        fail(exc, as_json)


@contextlib.asynccontextmanager
async def client(st: State) -> AsyncIterator[AsyncUnderlay]:
    """The SDK client the global options describe; closed when the block ends."""
    if st.url:
        if not st.token:
            raise errors.InvalidInput(
                "--url needs --token or UNDERLAY_TOKEN (the local admin token is in "
                "<home>/admin-token of the server's machine)",
                field="token",
            )
        remote = AsyncUnderlay.connect(st.url, st.token)
        try:
            yield remote
        finally:
            await remote.close()
        return
    local = await AsyncUnderlay.local(st.home)
    try:
        yield local.with_token(st.token) if st.token else local
    finally:
        await local.close()


@contextlib.contextmanager
def spinner(label: str, enabled: bool) -> Iterator[None]:
    """A spinner on stderr, only when stderr is a terminal a human watches."""
    console = err()
    if not enabled or not console.is_terminal:
        yield
        return
    with console.status(label, spinner="dots"):
        yield


def execute(
    ctx: typer.Context,
    action: Action,
    render: Renderer,
    *,
    json_: bool = False,
    label: str = "working",
    streaming: bool = False,
) -> Any:
    """Run ``action`` against the client and print its result; exits on an expected error.

    ``streaming``: the action prints as it goes (``--follow``): no spinner, and its
    result is not printed again."""
    st = state(ctx)
    as_json = json_ or st.json

    async def run() -> Any:
        async with client(st) as ul:
            with spinner(label, not as_json and not streaming):
                return await action(ul)

    with guard(as_json):
        result = asyncio.run(run())
    if streaming:
        return result
    if as_json:
        emit_json(result)
    else:
        render(result, out())
    return result


def collect_pages(fetch: Callable[[AsyncUnderlay, Any], Awaitable[Any]], all_pages: bool) -> Action:
    """An action that fetches one page, or with ``all_pages`` follows ``next_cursor`` to the end.

    The pages are merged into the first page's model, so ``--json`` prints the same shape
    as the syscall returns (with ``next_cursor`` null once everything is in).
    """

    async def action(ul: AsyncUnderlay) -> Any:
        page = await fetch(ul, None)
        items = list(page.items)
        while all_pages and page.next_cursor is not None:
            page = await fetch(ul, page.next_cursor)
            items.extend(page.items)
        return page.model_copy(update={"items": items})

    return action
