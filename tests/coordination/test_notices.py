"""Conflict notices: predicted conflicts between in-flight branches (queued changes,
workspaces with unmerged work) and the target, told to both agents exactly once per pair
of heads — again only when a head changes — durably across restarts, and early."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kernel.helpers import make_agent
from underlay.config import Config
from underlay.coordination.notices import ConflictNotices
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport

from .repo import Repo
from .test_queue import agent_client, branch, registered
from .test_workspaces import CAPS, sh


@pytest.fixture
def compute_settings() -> dict[str, object]:
    return {"pool_size": 0}


async def inbox(agent: AsyncUnderlay) -> list[Any]:
    return list((await agent.messages.inbox(unread=False)).items)


async def test_a_predicted_conflict_is_told_to_both_agents_once_per_pair_of_heads(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    repo = await registered(ul, tmp_path)
    (ann, ann_id), (bob, bob_id) = (
        await agent_client(kernel, "ann"),
        await agent_client(kernel, "bob"),
    )
    branch(repo, "ours", {"shared.txt": "one\nTWO ours\nthree\n"})
    branch(repo, "theirs", {"shared.txt": "one\nTWO theirs\nthree\n"})
    branch(repo, "clean", {"c.txt": "c\n"})
    ours = await ann.queue.submit(repo="app", ref="ours")
    theirs = await bob.queue.submit(repo="app", ref="theirs")
    await ann.queue.submit(repo="app", ref="clean")
    notices = ConflictNotices(kernel)
    assert await notices.once() == 1

    (to_ann,) = await inbox(ann)
    (to_bob,) = await inbox(bob)
    assert to_ann.sender == "merge-queue"
    assert (
        to_ann.subject == f"predicted conflict: ours with theirs ({bob_id}'s change) in shared.txt"
    )
    assert (to_ann.body["yours"]["id"], to_ann.body["other"]) == (ours.id, {
        "kind": "change", "id": theirs.id, "ref": "theirs", "head": theirs.head, "agent": bob_id,
    })  # fmt: skip
    assert to_ann.body["conflicts"] == ["shared.txt"] and bob_id in to_ann.body["next"]
    assert (to_bob.body["yours"]["id"], to_bob.body["other"]["agent"]) == (theirs.id, ann_id)
    (event,) = (await ul.events.list(topic="queue.conflict_predicted")).items
    assert (event.subject, event.payload["a"]["id"], event.payload["b"]["id"]) == (
        ours.id, ours.id, theirs.id,
    )  # fmt: skip
    assert event.payload["conflicts"] == ["shared.txt"]

    assert await notices.once() == 0  # reported: not again
    assert await ConflictNotices(kernel).once() == 0  # nor after a restart (durable)
    assert len(await inbox(ann)) == len(await inbox(bob)) == 1

    repo.push(repo.commit({"shared.txt": "one\nTWO main\nthree\n"}) + ":refs/heads/main")
    assert await notices.once() == 2  # the target moved: ours and theirs each conflict with it
    to_ann = (await inbox(ann))[-1]
    assert to_ann.body["other"]["kind"] == "target" and to_ann.body["other"]["ref"] == "main"
    assert "(the target)" in to_ann.subject and "merge main into ours" in to_ann.body["next"]
    assert len(await inbox(bob)) == 2
    repo.push(repo.commit({"other.txt": "x\n"}) + ":refs/heads/main")
    assert await notices.once() == 0  # moved again, the same conflicts there: not told again

    repo.branch("theirs", theirs.head)  # bob's branch gets a new head: a new pair with ours
    repo.commit({"shared.txt": "one\nTWO theirs, again\nthree\n", "t.txt": "t\n"})
    repo.push("theirs")
    newer = await bob.queue.submit(repo="app", ref="theirs")
    assert await notices.once() == 2  # newer x ours, newer x target; newer x theirs is clean
    assert [m.body["other"]["id"] for m in (await inbox(bob))[2:]] == [ours.id, "target"]
    assert [m.body["other"]["id"] for m in (await inbox(ann))[2:]] == [newer.id]
    assert await notices.once() == 0


async def test_workspaces_with_unmerged_work_are_in_flight(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    repo = Repo(tmp_path)
    repo.push(repo.commit({"shared.txt": "one\n"}) + ":refs/heads/main")
    await ul.repos.register(name="app", path=str(repo.bare), checks=["true"])
    ann, bob, idle = [
        AsyncUnderlay(LocalTransport(kernel, (await make_agent(kernel, n, CAPS)).token))
        for n in ("ann", "bob", "idle")
    ]
    mine, theirs = await ann.workspaces.create(repo="app"), await bob.workspaces.create(repo="app")
    await idle.workspaces.create(repo="app")  # nothing unmerged: not in flight
    notices = ConflictNotices(kernel)
    assert await notices.once() == 0
    await sh(ann, mine, "echo ann > shared.txt && git commit -qam ann")
    await sh(bob, theirs, "echo bob > shared.txt && git commit -qam bob")
    await ann.workspaces.sync(workspace=mine.id)
    assert await notices.once() == 0  # bob's work is not synced yet: nothing to see
    await bob.workspaces.sync(workspace=theirs.id)
    assert await notices.once() == 1
    (to_ann,) = await inbox(ann)
    assert (to_ann.body["yours"]["kind"], to_ann.body["yours"]["ref"]) == ("workspace", mine.branch)
    assert (to_ann.body["other"]["id"], to_ann.body["other"]["ref"]) == (theirs.id, theirs.branch)
    assert len(await inbox(bob)) == 1 and await inbox(idle) == []
    submitted = await ann.workspaces.sync(workspace=mine.id, submit=True)
    assert submitted.change is not None
    assert await notices.once() == 0  # the same heads, now as a queued change: told already


async def test_notices_run_in_a_loop_and_arrive_early(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    assert Config.load(home=tmp_path / "h").coordination.notice_every_seconds == 5.0
    repo = await registered(ul, tmp_path)
    (ann, _), (bob, _) = await agent_client(kernel, "ann"), await agent_client(kernel, "bob")
    branch(repo, "ours", {"shared.txt": "ours\n"})
    branch(repo, "theirs", {"shared.txt": "theirs\n"})
    loop = asyncio.create_task(ConflictNotices(kernel).forever(0.05))
    try:
        waiting = asyncio.create_task(bob.messages.inbox(wait_seconds=20))
        await ann.queue.submit(repo="app", ref="ours")
        await bob.queue.submit(repo="app", ref="theirs")
        page = await asyncio.wait_for(waiting, 10)  # told while both changes still wait
        assert page.items[0].subject.startswith("predicted conflict: theirs with ours")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
