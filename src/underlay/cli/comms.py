"""``underlay events`` (the organisation's event log; ``--follow`` waits for new ones) and
``underlay inbox`` (the caller's messages: verdicts of its changes, predicted conflicts).

    underlay events --topic queue --follow            # every queue event, as it happens
    underlay events --topic queue.landed --after 41 --follow --count 1
    underlay inbox --ack                              # read, and mark read
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from underlay import errors
from underlay.cli import render
from underlay.cli.runtime import JsonOpt, emit_json, execute, out, wants_json
from underlay.sdk.client import AsyncUnderlay

EVENT_COLUMNS = ("id", "topic", "subject", "created_at", "payload")
MESSAGE_COLUMNS = ("id", "sender", "subject", "created_at", "read_at", "body")
FOLLOW_WAIT = 30.0  # seconds one long poll of --follow waits (the syscall's maximum)

AfterOpt = Annotated[int, typer.Option(help="Only ids above this cursor.")]
LimitOpt = Annotated[int, typer.Option(help="At most this many.")]


def events(
    ctx: typer.Context,
    topic: Annotated[
        str | None, typer.Option(help="Only topics under this prefix: queue, queue.landed.")
    ] = None,
    after: AfterOpt = 0,
    limit: LimitOpt = 100,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new events (Ctrl-C ends).")
    ] = False,
    count: Annotated[
        int | None, typer.Option(help="With --follow: stop after this many events.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """The organisation's events after a cursor, oldest first; --follow waits for more.

    With --follow and --json, one JSON object per event and line."""
    if not follow:

        async def page(ul: AsyncUnderlay) -> Any:
            return await ul.events.list(topic=topic, after=after, limit=limit)

        def show(result: Any, console: Console) -> None:
            console.print(render.table(result.items, EVENT_COLUMNS))
            if result.items:
                console.print(Text(f"read on: --after {result.cursor}", style="dim"))

        execute(ctx, page, show, json_=json_, label="reading")
        return
    as_json = wants_json(ctx, json_)

    async def stream(ul: AsyncUnderlay) -> int:
        if count is not None and count < 1:
            raise errors.InvalidInput("--count must be at least 1", field="count")
        console, cursor, seen = out(), after, 0
        while count is None or seen < count:
            got = await ul.events.list(topic=topic, after=cursor, limit=limit,
                                       wait_seconds=FOLLOW_WAIT)  # fmt: skip
            for event in got.items[: None if count is None else count - seen]:
                _print_event(event, console, as_json)
                cursor, seen = event.id, seen + 1
        return cursor

    try:
        execute(ctx, stream, render.render_any, json_=json_, streaming=True)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _print_event(event: Any, console: Console, as_json: bool) -> None:
    if as_json:
        emit_json(event, one_line=True)
        return
    data = render.wire(event)
    console.print(Text.assemble(
        (f"{data['id']:>6}  ", "dim"), (render.local_time(data["created_at"]) + "  ", "dim"),
        (data["topic"], "cyan"), f"  {data['subject']}  ", render.cell("payload", data["payload"]),
    ), soft_wrap=True)  # fmt: skip


def inbox(
    ctx: typer.Context,
    agent: Annotated[
        str | None, typer.Option(help="Whose inbox (humans only; default: your own).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Read messages too, not only new.")] = False,
    after: AfterOpt = 0,
    limit: LimitOpt = 100,
    wait: Annotated[
        float, typer.Option(help="Wait up to this many seconds (max 30) for a message.")
    ] = 0.0,
    ack: Annotated[bool, typer.Option("--ack", help="Mark the messages shown read.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Your messages, oldest first: unread ones (--all: every one); --ack marks them read."""

    async def action(ul: AsyncUnderlay) -> Any:
        page = await ul.messages.inbox(agent=agent, unread=not all_, after=after, limit=limit,
                                       wait_seconds=wait)  # fmt: skip
        if ack and page.items:
            acked = await ul.messages.ack(ids=[m.id for m in page.items])
            page = page.model_copy(update={"items": acked.items})
        return page

    def show(page: Any, console: Console) -> None:
        console.print(render.table(page.items, MESSAGE_COLUMNS))
        if page.items and not ack:
            console.print(Text("mark them read: underlay inbox --ack", style="dim"))

    execute(ctx, action, show, json_=json_, label="reading")


def register(app: typer.Typer) -> None:
    app.command("events")(events)
    app.command("inbox")(inbox)
