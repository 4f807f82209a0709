"""The event log through the kernel: order and cursors, topic filters, long polls that
wake on a publish (in this process, and another's) and time out, tenancy, bad input."""

from __future__ import annotations

import asyncio
import time

import pytest

from kernel.helpers import default_org, make_agent, make_org
from underlay import errors
from underlay.comms import events, notify
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport
from underlay.storage.engine import Database

TOPICS = ["queue.landed", "queue.conflict", "queue.conflict_predicted", "fleets.member", "queue"]


async def test_events_come_in_order_by_cursor_and_topic(ul: AsyncUnderlay, kernel: Kernel) -> None:
    org = default_org(kernel)
    ids = [await events.publish(kernel.db, org, t, f"s{i}", {"i": i}) for i, t in enumerate(TOPICS)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    page = await ul.events.list()
    assert [(e.id, e.topic, e.subject, e.payload) for e in page.items] == [
        (ids[i], t, f"s{i}", {"i": i}) for i, t in enumerate(TOPICS)
    ]
    assert page.cursor == ids[-1]
    assert (await ul.events.list(after=page.cursor)).items == []
    assert (await ul.events.list(after=page.cursor)).cursor == page.cursor  # nothing new: same
    seen, cursor = [], 0  # paging: each event exactly once
    while batch := (await ul.events.list(after=cursor, limit=2)).items:
        seen += [e.id for e in batch]
        cursor = batch[-1].id
    assert seen == ids

    async def topics(prefix: str) -> list[str]:
        return [e.topic for e in (await ul.events.list(topic=prefix)).items]

    assert await topics("queue") == [t for t in TOPICS if t.startswith("queue")]
    assert await topics("queue.*") == await topics("queue")
    assert await topics("queue.conflict") == ["queue.conflict"]  # segment by segment
    assert await topics("queue.conflict_predicted") == ["queue.conflict_predicted"]
    assert await topics("fleets") == ["fleets.member"]
    assert await topics("*") == TOPICS
    assert await topics("que") == []  # not a prefix of a segment


async def test_events_belong_to_their_organisation(ul: AsyncUnderlay, kernel: Kernel) -> None:
    await events.publish(kernel.db, default_org(kernel), "queue.landed", "chg_1", {})
    other = await make_org(kernel, "other")
    theirs = AsyncUnderlay(LocalTransport(kernel, other.token))
    assert (await theirs.events.list()).items == []
    await events.publish(kernel.db, other.org_id, "queue.landed", "chg_2", {})
    assert [e.subject for e in (await theirs.events.list()).items] == ["chg_2"]
    assert [e.subject for e in (await ul.events.list()).items] == ["chg_1"]


async def test_a_long_poll_wakes_on_a_publish_and_times_out(
    ul: AsyncUnderlay, kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "POLL_SECONDS", 60.0)  # only a wake-up can end a wait early
    org = default_org(kernel)
    started = time.monotonic()
    assert (await ul.events.list(wait_seconds=0.6)).items == []  # nothing: waits, then empty
    assert 0.55 <= time.monotonic() - started < 3

    waiting = asyncio.create_task(ul.events.list(topic="queue", wait_seconds=20))
    await asyncio.sleep(0.3)
    await events.publish(kernel.db, org, "fleets.member", "x", {})  # not its topic
    await asyncio.sleep(0.4)
    assert not waiting.done()
    started = time.monotonic()
    wanted = await events.publish(kernel.db, org, "queue.rejected", "chg_1", {"n": 1})
    page = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 5  # woken (the next poll is a minute away)
    assert [e.id for e in page.items] == [wanted] and page.cursor == wanted


async def test_another_processes_publish_is_seen_by_polling(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    """A publish through another engine (as by another process) wakes no one here; the
    long poll still sees it within its polling interval."""
    elsewhere = Database(kernel.config.resolved_database_url)
    try:
        waiting = asyncio.create_task(ul.events.list(wait_seconds=20))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await events.publish(elsewhere, default_org(kernel), "queue.landed", "chg_9", {})
        page = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 2
        assert [e.subject for e in page.items] == ["chg_9"]
    finally:
        await elsewhere.dispose()


async def test_concurrent_publishes_are_read_once_each_in_order(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    """A reader following the log while writers publish at once sees every event exactly
    once, in id order (appends of one organisation are serialized)."""
    org = default_org(kernel)
    seen: list[int] = []
    done = asyncio.Event()

    async def follow() -> None:
        cursor = 0
        while not (done.is_set() and len(seen) == 120):
            page = await ul.events.list(after=cursor, limit=7, wait_seconds=0.5)
            seen.extend(e.id for e in page.items)
            cursor = page.cursor

    reader = asyncio.create_task(follow())
    published = []
    for round_ in range(6):
        published += await asyncio.gather(
            *(events.publish(kernel.db, org, "load.test", f"{round_}-{i}", {}) for i in range(20))
        )
    done.set()
    await asyncio.wait_for(reader, 30)
    assert seen == sorted(published)


async def test_reading_events_needs_its_capability(ul: AsyncUnderlay, kernel: Kernel) -> None:
    await events.publish(kernel.db, default_org(kernel), "queue.landed", "chg_1", {})
    blind = await make_agent(kernel, "blind", ["queue.*"])
    reader = await make_agent(kernel, "reader", ["events.read"])
    with pytest.raises(errors.PermissionDenied):
        await AsyncUnderlay(LocalTransport(kernel, blind.token)).events.list()
    page = await AsyncUnderlay(LocalTransport(kernel, reader.token)).events.list()
    assert [e.subject for e in page.items] == ["chg_1"]


async def test_bad_input_is_named(ul: AsyncUnderlay, kernel: Kernel) -> None:
    for bad, field in (
        ({"limit": -1}, "limit"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
        ({"after": -5}, "after"), ({"wait_seconds": 31}, "wait_seconds"),
        ({"wait_seconds": -1}, "wait_seconds"),
    ):  # fmt: skip
        with pytest.raises(errors.InvalidInput) as caught:
            await ul.events.list(**bad)
        assert caught.value.field == field
    for topic in ("Queue", "queue.", "queue..landed", "queue.*.x", "queue landed", "../x"):
        with pytest.raises(errors.InvalidInput, match="not a topic filter") as caught:
            await ul.events.list(topic=topic)
        assert caught.value.field == "topic"
    with pytest.raises(errors.InvalidInput, match="expected dotted lower-case") as caught:
        await events.publish(kernel.db, default_org(kernel), "Queue.Landed", "x", {})
    assert caught.value.field == "topic"


async def test_secrets_never_reach_the_log(ul: AsyncUnderlay, kernel: Kernel) -> None:
    token = "ul_" + "A1b2" * 12
    await events.publish(kernel.db, default_org(kernel), "queue.rejected", "chg_1",
                         {"api_key": "sk-123", "summary": f"auth failed with {token}",
                          "nested": [{"password": "hunter2"}]})  # fmt: skip
    (event,) = (await ul.events.list()).items
    assert event.payload == {"api_key": "[redacted]", "summary": "auth failed with [redacted]",
                             "nested": [{"password": "[redacted]"}]}  # fmt: skip


async def test_the_log_and_the_inbox_over_rest(kernel: Kernel, base: str) -> None:
    """The same calls over HTTP: a long poll held by the server, woken by a publish."""
    agent = await make_agent(kernel, "remote", ["events.read"])
    async with AsyncUnderlay.connect(base, agent.token) as remote:
        waiting = asyncio.create_task(remote.events.list(topic="queue", wait_seconds=20))
        await asyncio.sleep(0.3)
        sent = await events.publish(kernel.db, default_org(kernel), "queue.landed", "chg_7", {})
        page = await asyncio.wait_for(waiting, 5)
        assert [e.id for e in page.items] == [sent]
        assert (await remote.messages.inbox()).items == []
        with pytest.raises(errors.InvalidInput, match="not a topic filter"):
            await remote.events.list(topic="Bad!")
