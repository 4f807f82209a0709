"""The merge queue's verdicts as events and messages: every verdict an event
``queue.<outcome>`` (ids, no output beyond a first line), every verdict but landed a
message to its author with what it needs; written with the verdict, scrubbed, and
woken long polls see them at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import update

from underlay.coordination.queue import MergeQueue
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.storage.schema import merge_changes

from .test_queue import (
    agent_client,
    branch,
    compute_settings,  # noqa: F401  (the fixture: no warm pool)
    registered,
)

TOKEN = "ul_" + "Q7x" * 15
CHECKS = ["test ! -e FAIL || { echo 'FAIL marker found'; cat FAIL; exit 1; }"]


async def test_verdicts_are_published_and_told_to_their_authors(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    repo = await registered(ul, tmp_path, CHECKS, max_conflict_tries=2)
    agent, agent_id = await agent_client(kernel, "coder")
    branch(repo, "good", {"g.txt": "g\n"})
    branch(repo, "red", {"FAIL": f"the secret was {TOKEN}\n"})
    branch(repo, "ours", {"shared.txt": "one\nTWO ours\nthree\n"})
    branch(repo, "theirs", {"shared.txt": "one\nTWO theirs\nthree\n"})
    made = {ref: await agent.queue.submit(repo="app", ref=ref, task_id=f"task-{ref}")
            for ref in ("good", "red", "ours", "theirs")}  # fmt: skip
    waiting = asyncio.create_task(agent.messages.inbox(wait_seconds=30))
    await MergeQueue(kernel).process_once()
    first = await asyncio.wait_for(waiting, 5)  # the long poll was woken by a verdict
    assert first.items

    published = {e.subject: e for e in (await ul.events.list(topic="queue")).items}
    assert {c.id: published[c.id].topic for c in made.values()} == {
        made["good"].id: "queue.landed", made["red"].id: "queue.rejected",
        made["ours"].id: "queue.landed", made["theirs"].id: "queue.conflict",
    }  # fmt: skip
    landed = published[made["good"].id].payload
    target = repo.target()
    assert landed["commit"] == (await agent.queue.get(change=made["good"].id)).landed_commit
    assert {k: landed[k] for k in ("change", "repo", "ref", "agent", "task", "state")} == {
        "change": made["good"].id, "repo": "app", "ref": "good", "agent": agent_id,
        "task": "task-good", "state": "landed",
    }  # fmt: skip
    assert published[made["ours"].id].payload["commit"] == target
    rejected = published[made["red"].id].payload
    assert rejected["summary"] == "FAIL marker found" and rejected["commit"] is None
    assert TOKEN not in str(rejected) and "the secret" not in str(rejected)  # a first line only
    assert published[made["theirs"].id].payload["conflicts"] == ["shared.txt"]

    inbox = {m.body["change"]: m for m in (await agent.messages.inbox()).items}
    assert set(inbox) == {made["red"].id, made["theirs"].id}  # no message for a landing
    red = inbox[made["red"].id]
    assert red.sender == "merge-queue" and red.subject.startswith("red rejected in app")
    assert "FAIL marker found" in red.body["output"] and "[redacted]" in red.body["output"]
    assert TOKEN not in str(red.body) and red.body["task"] == "task-red"
    conflict = inbox[made["theirs"].id].body
    assert (conflict["state"], conflict["conflicts"], conflict["tries"]) == (
        "conflict",
        ["shared.txt"],
        1,
    )
    assert "merge main into theirs" in conflict["next"]

    again = await agent.queue.submit(repo="app", ref="theirs")  # still conflicting
    await MergeQueue(kernel).process_once()
    (escalated,) = (await ul.events.list(topic="queue.escalated")).items
    assert escalated.subject == again.id and escalated.payload["escalation"]
    told = (await agent.messages.inbox(after=first.cursor)).items
    assert [(m.body["change"], m.body["state"]) for m in told][-1] == (again.id, "escalated")
    assert "a human was asked" in told[-1].body["next"]


async def test_a_verdict_recovered_after_a_crash_is_published(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    repo = await registered(ul, tmp_path, CHECKS)
    agent, _ = await agent_client(kernel, "coder")
    branch(repo, "done", {"a.txt": "a\n"})
    done = await agent.queue.submit(repo="app", ref="done")
    repo.push("done:refs/heads/main")  # it landed, then the process died before the verdict
    async with kernel.db.write() as conn:
        await conn.execute(update(merge_changes).values(state="testing"))
    await MergeQueue(kernel).process_once()
    (event,) = (await ul.events.list(topic="queue.landed")).items
    assert (event.subject, event.payload["commit"]) == (done.id, repo.target())
