"""The ``events.*`` and ``messages.*`` syscalls: the organisation's event log, and
agents' mailboxes (the merge queue's verdicts and conflict notices arrive there)."""

from __future__ import annotations

from typing import Any

from underlay.comms import events, mailbox
from underlay.comms.events import MAX_WAIT_SECONDS
from underlay.comms.models import (
    Ack,
    Acked,
    Event,
    EventPage,
    Inbox,
    ListEvents,
    Message,
    MessagePage,
    SendMessage,
)
from underlay.identity import service as identity
from underlay.kernel.context import SELF, CallContext
from underlay.kernel.policy import FailurePolicy
from underlay.kernel.syscall import SyscallGroup

group = SyscallGroup("comms")
LONG_POLL = FailurePolicy(timeout_seconds=MAX_WAIT_SECONDS + 15)  # the wait bounds it


def _message(row: Any) -> Message:
    return Message.model_validate(row, from_attributes=True)


@group.syscall("events.list", capability="events.read", policy=LONG_POLL)
async def list_events(ctx: CallContext, inp: ListEvents) -> EventPage:
    """The organisation's events after a cursor, oldest first (optionally waiting for one)."""
    rows = await events.read(
        ctx.db, ctx.org_id, after=inp.after, topic=inp.topic, limit=inp.limit,
        wait_seconds=inp.wait_seconds,
    )  # fmt: skip
    items = [Event.model_validate(r, from_attributes=True) for r in rows]
    return EventPage(items=items, cursor=items[-1].id if items else inp.after)


@group.syscall("messages.inbox", capability=SELF, policy=LONG_POLL)
async def inbox(ctx: CallContext, inp: Inbox) -> MessagePage:
    """Your messages (unread ones by default) after a cursor, oldest first; may wait."""
    owner = ctx.principal.id
    if inp.agent is not None and inp.agent != owner:  # by id or name
        async with ctx.db.read() as conn:
            owner = (await identity.find_agent(conn, ctx.org_id, inp.agent)).id
        mailbox.may_read(ctx.principal, owner)
    rows = await mailbox.inbox(
        ctx.db, ctx.org_id, owner, unread=inp.unread, after=inp.after, limit=inp.limit,
        wait_seconds=inp.wait_seconds,
    )  # fmt: skip
    items = [_message(r) for r in rows]
    return MessagePage(items=items, cursor=items[-1].id if items else inp.after)


@group.syscall("messages.ack", capability=SELF, mutating=True)
async def ack(ctx: CallContext, inp: Ack) -> Acked:
    """Mark messages of your inbox read (the first time counts; again changes nothing)."""
    rows = await mailbox.ack(ctx.db, ctx.org_id, ctx.principal, inp.ids, ctx.now())
    ctx.audit.update(messages=len(rows))
    return Acked(items=[_message(r) for r in rows])


@group.syscall("messages.send", capability="messages.send", mutating=True)
async def send(ctx: CallContext, inp: SendMessage) -> Message:
    """Send a message (a subject and a JSON body) to another agent of the organisation."""
    async with ctx.db.read() as conn:
        to = (await identity.find_agent(conn, ctx.org_id, inp.to)).id
    row = await mailbox.send(ctx.db, ctx.org_id, to, ctx.principal.id, inp.subject, inp.body,
                             ctx.now())  # fmt: skip
    ctx.audit.update(message=row.id, to=to)
    return _message(row)
