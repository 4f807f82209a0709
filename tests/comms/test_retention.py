"""Retention of events and messages: old events go, old read messages go, unread
messages stay however old, in bounded batches, and cursors stay valid."""

from __future__ import annotations

import asyncio

from underlay.comms import events, mailbox, retention
from underlay.config import Config
from underlay.kernel.context import Principal
from underlay.kernel.kernel import Kernel

DAY = retention.DAY


async def test_old_events_and_read_messages_go_unread_ones_stay(kernel: Kernel) -> None:
    assert kernel.bootstrap_info is not None
    org, db = kernel.bootstrap_info.org_id, kernel.db
    now = 1_000 * DAY
    old = [await events.publish(db, org, "queue.landed", f"c{i}", {"i": i}, now - 40 * DAY)
           for i in range(5)]  # fmt: skip
    kept = await events.publish(db, org, "queue.landed", "new", {}, now - DAY)
    read_old = await mailbox.send(db, org, "agt_a", "merge-queue", "old, read", {}, now - 40 * DAY)
    unread_old = await mailbox.send(db, org, "agt_a", "merge-queue", "old", {}, now - 40 * DAY)
    recent = await mailbox.send(db, org, "agt_a", "merge-queue", "recent", {}, now - DAY)
    reader = Principal(kind="agent", id="agt_a", org_id=org, capabilities=())
    await mailbox.ack(db, org, reader, [read_old.id, recent.id], now - DAY)

    done = await retention.prune(db, now - 30 * DAY, batch_size=2)  # 3 batches of events
    assert (done.events, done.messages) == (5, 1)
    left = await events.read(db, org, after=0)
    assert [e.id for e in left] == [kept]
    assert [e.id for e in await events.read(db, org, after=old[1])] == [kept]  # old cursor
    inbox = await mailbox.inbox(db, org, "agt_a", unread=False)
    assert [m.id for m in inbox] == [unread_old.id, recent.id]  # unread: kept however old
    assert await retention.prune(db, now - 30 * DAY) == retention.Pruned(0, 0)  # idempotent


async def test_the_loop_prunes_by_the_configured_days_and_can_be_off(
    kernel: Kernel, config: Config
) -> None:
    assert kernel.bootstrap_info is not None
    org, db = kernel.bootstrap_info.org_id, kernel.db
    now = 1_000 * DAY
    await events.publish(db, org, "queue.landed", "old", {}, now - 3 * DAY)
    off = config.model_copy(update={"comms": config.comms.model_copy(update={"retention_days": 0})})
    await asyncio.wait_for(retention.forever(db, off, clock=lambda: now), 1)  # returns at once
    assert len(await events.read(db, org)) == 1
    on = config.model_copy(update={"comms": config.comms.model_copy(update={
        "retention_days": 2, "retention_every_seconds": 0.05,
    })})  # fmt: skip
    loop = asyncio.create_task(retention.forever(db, on, clock=lambda: now))
    try:
        for _ in range(100):
            if not await events.read(db, org):
                break
            await asyncio.sleep(0.02)
        assert await events.read(db, org) == []
    finally:
        loop.cancel()
