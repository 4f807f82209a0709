"""Mailboxes through the kernel: send, inbox (unread or all, by cursor, long poll), ack
once, and each inbox readable only by its agent or a human of the organisation."""

from __future__ import annotations

import asyncio
import time

import pytest

from kernel.helpers import make_agent, make_org
from underlay import errors
from underlay.comms import notify
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport


async def agents(kernel: Kernel) -> tuple[AsyncUnderlay, str, AsyncUnderlay, str]:
    ann = await make_agent(kernel, "ann", ["messages.send"])
    bob = await make_agent(kernel, "bob", [])  # reading one's own inbox needs nothing
    return (AsyncUnderlay(LocalTransport(kernel, ann.token)), ann.id,
            AsyncUnderlay(LocalTransport(kernel, bob.token)), bob.id)  # fmt: skip


async def test_send_read_and_acknowledge(kernel: Kernel) -> None:
    ann, ann_id, bob, bob_id = await agents(kernel)
    first = await ann.messages.send(to="bob", subject="hello", body={"n": 1})
    second = await ann.messages.send(to=bob_id, subject="again", body={"n": 2})
    assert (first.to_agent, first.sender, first.read_at) == (bob_id, ann_id, None)
    page = await bob.messages.inbox()
    assert [(m.id, m.subject, m.body) for m in page.items] == [
        (first.id, "hello", {"n": 1}),
        (second.id, "again", {"n": 2}),
    ]
    assert page.cursor == second.id
    assert [m.id for m in (await bob.messages.inbox(after=first.id)).items] == [second.id]
    assert (await ann.messages.inbox()).items == []  # ann's inbox is her own
    acked = await bob.messages.ack(ids=[first.id])
    assert [m.id for m in acked.items] == [first.id] and acked.items[0].read_at is not None
    assert [m.id for m in (await bob.messages.inbox()).items] == [second.id]  # unread only
    everything = await bob.messages.inbox(unread=False)
    assert [m.id for m in everything.items] == [first.id, second.id]
    again = await bob.messages.ack(ids=[first.id, second.id])
    assert again.items[0].read_at == acked.items[0].read_at  # the first ack counts
    assert (await bob.messages.inbox()).items == []


async def test_an_inbox_is_its_agents_alone(ul: AsyncUnderlay, kernel: Kernel) -> None:
    ann, _, bob, bob_id = await agents(kernel)
    sent = await ann.messages.send(to="bob", subject="private", body={})
    for who in ("bob", bob_id):
        with pytest.raises(errors.PermissionDenied, match=f"the inbox of {bob_id} is theirs"):
            await ann.messages.inbox(agent=who)
    with pytest.raises(errors.PermissionDenied, match="is theirs"):
        await ann.messages.ack(ids=[sent.id])
    assert (await bob.messages.inbox()).items[0].read_at is None  # the refused ack did nothing
    assert [m.id for m in (await bob.messages.inbox(agent="bob")).items] == [sent.id]
    # a human of the organisation reads (and may mark read) any of its agents' inboxes
    assert [m.id for m in (await ul.messages.inbox(agent="bob")).items] == [sent.id]
    other = await make_org(kernel, "other")
    outsider = AsyncUnderlay(LocalTransport(kernel, other.token))
    with pytest.raises(errors.NotFound):
        await outsider.messages.inbox(agent=bob_id)
    with pytest.raises(errors.NotFound):
        await outsider.messages.ack(ids=[sent.id])
    with pytest.raises(errors.NotFound):
        await outsider.messages.send(to=bob_id, subject="hi")


async def test_an_inbox_read_waits_for_a_message(
    kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "POLL_SECONDS", 60.0)  # only a wake-up can end a wait early
    ann, _, bob, _ = await agents(kernel)
    started = time.monotonic()
    assert (await bob.messages.inbox(wait_seconds=0.5)).items == []
    assert 0.45 <= time.monotonic() - started < 3
    waiting = asyncio.create_task(bob.messages.inbox(wait_seconds=20))
    await asyncio.sleep(0.3)
    await ann.messages.send(to="ann", subject="to herself")  # not bob's: he keeps waiting
    await asyncio.sleep(0.3)
    assert not waiting.done()
    started = time.monotonic()
    sent = await ann.messages.send(to="bob", subject="now")
    page = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 5  # woken (the next poll is a minute away)
    assert [m.id for m in page.items] == [sent.id]


async def test_bad_input_is_named(kernel: Kernel) -> None:
    ann, _, bob, _ = await agents(kernel)
    for bad, field in (
        ({"limit": -1}, "limit"), ({"after": -1}, "after"), ({"wait_seconds": 60}, "wait_seconds"),
    ):  # fmt: skip
        with pytest.raises(errors.InvalidInput) as caught:
            await bob.messages.inbox(**bad)
        assert caught.value.field == field
    with pytest.raises(errors.InvalidInput) as caught:
        await bob.messages.ack(ids=[])
    assert caught.value.field == "ids"
    with pytest.raises(errors.InvalidInput, match="positive"):
        await bob.messages.ack(ids=[-3])
    with pytest.raises(errors.NotFound, match="no message 999") as caught:
        await bob.messages.ack(ids=[999])
    assert caught.value.field == "ids"
    with pytest.raises(errors.NotFound, match="no agent 'carol'"):
        await ann.messages.send(to="carol", subject="hi")
    with pytest.raises(errors.InvalidInput, match="at most 65536 bytes"):
        await ann.messages.send(to="bob", subject="big", body={"x": "y" * 70_000})
    with pytest.raises(errors.PermissionDenied):
        await bob.messages.send(to="ann", subject="bob may not send")


async def test_bodies_are_scrubbed_of_secrets(kernel: Kernel) -> None:
    ann, _, bob, _ = await agents(kernel)
    token = "ul_" + "Zz09" * 12
    await ann.messages.send(to="bob", subject=f"here: {token}",
                            body={"token": token, "log": f"failed: {token} rejected"})  # fmt: skip
    (got,) = (await bob.messages.inbox()).items
    assert token not in got.subject and got.subject == "here: [redacted]"
    assert got.body == {"token": "[redacted]", "log": "failed: [redacted] rejected"}
