"""Workspaces in real sandboxes: a branch and a clone per agent, synced back, landed
through the queue, never deleted with unmerged work, recovered after the agent's
sandbox is gone, and only ever touched by their owner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kernel.helpers import make_agent
from underlay import errors
from underlay.coordination.queue import MergeQueue
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport

from .repo import Repo

CAPS = ["workspaces.*", "sandbox.*", "queue.*", "repos.read"]


@pytest.fixture
def compute_settings() -> dict[str, object]:
    return {"pool_size": 0}


async def setup(ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path) -> tuple[Repo, AsyncUnderlay]:
    repo = Repo(tmp_path)
    base = repo.commit({"shared.txt": "one\n"})
    repo.push(f"{base}:refs/heads/main")
    await ul.repos.register(name="app", path=str(repo.bare), checks=["test -f shared.txt"])
    agent = await make_agent(kernel, "coder", CAPS)
    return repo, AsyncUnderlay(LocalTransport(kernel, agent.token))


async def sh(ul: AsyncUnderlay, ws: Any, script: str) -> str:
    ran = await ul.sandbox.commands.run(sandbox=ws.sandbox, cmd=f"cd {ws.path} && {script}")
    assert ran.exit_code == 0, ran.stderr
    return str(ran.stdout)


async def test_a_workspace_lands_through_the_queue_and_is_then_cleaned_up(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    repo, agent = await setup(ul, kernel, tmp_path)
    ws = await agent.workspaces.create(repo="app")
    assert ws.branch == f"ws/{ws.id}" and ws.base == repo.target() and ws.unmerged_commits == 0
    assert await sh(agent, ws, "cat shared.txt") == "one\n"  # a clone, inside the sandbox
    assert (await sh(agent, ws, "git remote")).strip() == ""  # no way back to the repository
    await sh(agent, ws, "echo two >> shared.txt")
    with pytest.raises(errors.Conflict, match="not synced"):
        await agent.workspaces.delete(workspace=ws.id)  # uncommitted work stays
    await sh(agent, ws, "git commit -qam 'second line'")
    synced = await agent.workspaces.sync(workspace=ws.id, submit=True, task_id="task_9")
    assert synced.unmerged_commits == 1 and synced.change is not None
    assert synced.change.task_id == "task_9"
    with pytest.raises(errors.Conflict, match="unmerged work: 1 commit"):
        await agent.workspaces.delete(workspace=ws.id)
    await MergeQueue(kernel).process_once()
    assert (await agent.queue.get(change=synced.change.id)).state == "landed"
    assert repo.git("show", "main:shared.txt", cwd=repo.bare) == "one\ntwo"
    gone = await agent.workspaces.delete(workspace=ws.id)
    assert gone.state == "deleted"
    assert repo.git("branch", "--list", ws.branch, cwd=repo.bare) == ""
    assert (await agent.workspaces.list(name="app")).items == []


async def test_a_killed_agents_workspace_is_kept_and_recovered(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    _, agent = await setup(ul, kernel, tmp_path)
    ws = await agent.workspaces.create(repo="app")
    await sh(agent, ws, "echo work > work.txt && git add -A && git commit -qm work")
    await agent.workspaces.sync(workspace=ws.id)
    await agent.sandbox.destroy(sandbox=ws.sandbox)  # the agent and its sandbox die
    with pytest.raises(errors.Conflict, match="unmerged work"):
        await agent.workspaces.delete(workspace=ws.id)
    other = AsyncUnderlay(LocalTransport(kernel, (await make_agent(kernel, "other", CAPS)).token))
    with pytest.raises(errors.PermissionDenied, match="not yours"):
        await other.workspaces.recover(workspace=ws.id)
    back = await agent.workspaces.recover(workspace=ws.id)
    assert back.sandbox != ws.sandbox
    assert await sh(agent, back, "cat work.txt") == "work\n"  # the synced work is there
    with pytest.raises(errors.Conflict, match="is alive"):
        await agent.workspaces.recover(workspace=ws.id)
    landed = await agent.workspaces.sync(workspace=ws.id, submit=True)
    assert landed.change is not None
    await MergeQueue(kernel).process_once()
    assert (await agent.workspaces.delete(workspace=ws.id)).state == "deleted"
    with pytest.raises(errors.NotFound, match="was deleted"):
        await agent.workspaces.sync(workspace=ws.id)


async def test_agents_see_their_predicted_conflicts_while_they_work(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    _, ann = await setup(ul, kernel, tmp_path)
    bob = AsyncUnderlay(LocalTransport(kernel, (await make_agent(kernel, "bob", CAPS)).token))
    mine, theirs = await ann.workspaces.create(repo="app"), await bob.workspaces.create(repo="app")
    await sh(ann, mine, "echo ann > shared.txt && git commit -qam ann")
    await sh(
        bob, theirs, "echo bob > shared.txt && echo b > b.txt && git add -A && git commit -qm bob"
    )
    await ann.workspaces.sync(workspace=mine.id)
    await bob.workspaces.sync(workspace=theirs.id)
    seen = await ann.workspaces.get(workspace=mine.id)
    assert [(o.b, o.conflicts) for o in seen.predicted_conflicts] == [(theirs.id, ["shared.txt"])]
    listed = (await ann.workspaces.list(name="app")).items  # one pass, each pair merged once
    assert {w.id: [(o.a, o.b, o.conflicts) for o in w.predicted_conflicts] for w in listed} == {
        mine.id: [(mine.id, theirs.id, ["shared.txt"])],
        theirs.id: [(theirs.id, mine.id, ["shared.txt"])],
    }
    landed = await bob.workspaces.sync(workspace=theirs.id, submit=True)
    await MergeQueue(kernel).process_once()
    assert landed.change is not None
    assert (await bob.queue.get(change=landed.change.id)).state == "landed"
    seen = await ann.workspaces.get(workspace=mine.id)  # now it is the target it meets
    assert ("target", ["shared.txt"]) in [(o.b, o.conflicts) for o in seen.predicted_conflicts]
