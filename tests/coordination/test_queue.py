"""The merge queue through the kernel: repositories, submissions by agents, checks in
real bubblewrap sandboxes, verdicts with their attribution, conflicts handed back then
escalated, prediction, recovery after a crash, many agents at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from kernel.helpers import audit_events, make_agent
from underlay import errors
from underlay.coordination.queue import MergeQueue
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport
from underlay.storage.schema import merge_changes

from .repo import Repo

CHECKS = ["test ! -e FAIL || { echo 'FAIL marker found'; exit 1; }"]


@pytest.fixture
def compute_settings() -> dict[str, object]:
    return {"pool_size": 0}


async def registered(
    ul: AsyncUnderlay, tmp_path: Path, checks: list[str] = CHECKS, **settings: Any
) -> Repo:
    repo = Repo(tmp_path)
    base = repo.commit({"shared.txt": "one\ntwo\nthree\n"})
    repo.push(f"{base}:refs/heads/main")
    await ul.repos.register(name="app", path=str(repo.bare), checks=checks, **settings)
    return repo


def branch(repo: Repo, name: str, files: dict[str, str | None]) -> str:
    repo.branch(name, repo.target())
    head = repo.commit(files, name)
    repo.push(name)
    return head


async def agent_client(kernel: Kernel, name: str) -> tuple[AsyncUnderlay, str]:
    agent = await make_agent(kernel, name, ["queue.*", "repos.read"])
    return AsyncUnderlay(LocalTransport(kernel, agent.token)), agent.id


async def test_registration_and_its_errors(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    owned = await ul.repos.register(name="fresh", create=True, checks=["true"])
    assert owned.owned and Path(owned.path).is_dir() and owned.target_head is None
    with pytest.raises(errors.InvalidInput, match="exactly one of path"):
        await ul.repos.register(name="both", create=True, path=str(tmp_path))
    with pytest.raises(errors.InvalidInput, match="not a git repository"):
        await ul.repos.register(name="plain", path=str(tmp_path))
    with pytest.raises(errors.Conflict):
        await ul.repos.register(name="fresh", create=True)
    admin = await make_agent(kernel, "repo-admin", ["repos.*"])
    as_agent = AsyncUnderlay(LocalTransport(kernel, admin.token))
    with pytest.raises(errors.PermissionDenied, match="only an operator"):
        await as_agent.repos.register(name="host", path=str(tmp_path))
    assert [r.name for r in (await as_agent.repos.list()).items] == ["fresh"]


async def test_changes_land_fail_or_conflict_with_their_attribution(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    repo = await registered(ul, tmp_path, max_conflict_tries=2)
    agent, agent_id = await agent_client(kernel, "coder")
    good = [branch(repo, f"good{i}", {f"f{i}.txt": f"{i}\n"}) for i in range(3)]
    branch(repo, "red", {"FAIL": "x\n"})
    branch(repo, "ours", {"shared.txt": "one\nTWO ours\nthree\n"})
    branch(repo, "theirs", {"shared.txt": "one\nTWO theirs\nthree\n"})
    submitted = {}
    for ref in ("good0", "red", "ours", "good1", "theirs", "good2"):
        submitted[ref] = await agent.queue.submit(repo="app", ref=ref, task_id=f"task-{ref}")
    prediction = await ul.queue.predict(name="app")
    assert [(o.a, o.b, o.conflicts) for o in prediction.conflicts] == [
        (submitted["ours"].id, submitted["theirs"].id, ["shared.txt"])
    ]
    assert prediction.pairs_checked == 21  # 6 changes and the target, pairwise
    await MergeQueue(kernel).process_once()
    states = {ref: (await agent.queue.get(change=c.id)) for ref, c in submitted.items()}
    assert {ref: c.state for ref, c in states.items()} == {
        "good0": "landed", "red": "rejected", "ours": "landed", "good1": "landed",
        "theirs": "conflict", "good2": "landed",
    }  # fmt: skip
    assert "FAIL marker found" in states["red"].detail
    assert all(c.check_seconds > 0 for ref, c in states.items() if ref != "theirs")  # its cost
    assert states["theirs"].conflicts == ["shared.txt"] and states["theirs"].tries == 1
    target = repo.git("rev-parse", "main", cwd=repo.bare)
    assert states["good2"].landed_commit == target
    for head in good:
        assert repo.git("merge-base", "--is-ancestor", head, target, cwd=repo.bare) == ""
    landed = await audit_events(kernel, syscall="queue.landed")
    assert all(e["detail"]["check_seconds"] > 0 for e in landed)
    assert {(e["detail"]["agent"], e["detail"]["task"]) for e in landed} == {
        (agent_id, f"task-{ref}") for ref in ("good0", "ours", "good1", "good2")
    }
    again = await agent.queue.submit(repo="app", ref="theirs")  # still conflicting
    assert again.tries == 1
    await MergeQueue(kernel).process_once()
    escalated = await agent.queue.get(change=again.id)
    assert (escalated.state, escalated.tries) == ("escalated", 2)
    esc = await ul.escalations.get(escalation_id=escalated.escalation_id)
    assert esc.context["ref"] == "theirs" and esc.state == "open"


async def test_bad_submissions_are_named(ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path) -> None:
    await registered(ul, tmp_path)
    agent, _ = await agent_client(kernel, "coder")
    with pytest.raises(errors.NotFound, match="names no commit"):
        await agent.queue.submit(repo="app", ref="no-such-branch")
    with pytest.raises(errors.InvalidInput):
        await agent.queue.submit(repo="app", ref="--upload-pack=evil")
    with pytest.raises(errors.NotFound, match="no repository"):
        await agent.queue.submit(repo="other", ref="main")


async def test_a_crash_while_testing_is_recovered(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    repo = await registered(ul, tmp_path)
    agent, _ = await agent_client(kernel, "coder")
    branch(repo, "done", {"a.txt": "a\n"})
    branch(repo, "pending", {"b.txt": "b\n"})
    done = await agent.queue.submit(repo="app", ref="done")
    pending = await agent.queue.submit(repo="app", ref="pending")
    repo.push("done:refs/heads/main")  # it landed, then the process died before the verdict
    async with kernel.db.write() as conn:
        await conn.execute(update(merge_changes).values(state="testing"))
    await MergeQueue(kernel).process_once()
    assert (await agent.queue.get(change=done.id)).state == "landed"
    assert (await agent.queue.get(change=pending.id)).state == "landed"


async def test_many_agents_submit_at_once(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    repo = await registered(ul, tmp_path, batch_size=8)
    clients = [await agent_client(kernel, f"a{i}") for i in range(10)]
    for i in range(10):
        branch(repo, f"w{i}", {f"w{i}.txt": f"{i}\n"})
    made = await asyncio.gather(
        *(c.queue.submit(repo="app", ref=f"w{i}") for i, (c, _) in enumerate(clients))
    )
    assert len({c.id for c in made}) == 10
    await MergeQueue(kernel).process_once()
    page = await ul.queue.list(repo="app")
    assert [c.state for c in page.items] == ["landed"] * 10
    assert {c.submitted_by for c in page.items} == {agent_id for _, agent_id in clients}
