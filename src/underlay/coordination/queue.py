"""The merge queue: changes submitted per repository, landed by the train (train.py).

* ``submit`` resolves the ref to a commit at once (what lands is what was submitted,
  whatever the branch does next) and records the change ``queued``, durably, with its
  agent and task for attribution, and how many times this ref's changes were already
  handed back for conflicts.
* ``MergeQueue.process_once`` (a loop of ``underlay up``) takes each repository's
  queued changes in order, marks them ``testing`` and runs the train with the
  repository's checks in sandboxes (checks.py). Each verdict is written as it is
  decided — ``landed`` (with the target commit), ``rejected`` (with the failing
  output), ``conflict`` (handed back with the paths; the agent fixes and submits again)
  or ``escalated`` once a ref's conflicts reach ``max_conflict_tries`` (an escalation in
  the human inbox, once per ref) — and audited as ``queue.<outcome>``. The same
  transaction publishes the event ``queue.<outcome>`` and, for every outcome but
  ``landed``, puts a message in the author's inbox with what it needs to fix the
  branch (announce.py).
* After a crash, changes left ``testing`` are ``landed`` if the target holds their
  head already (the verdict was lost after the landing), else queued again.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, func, select, update

from underlay import errors
from underlay.comms import notify
from underlay.coordination import announce, prediction, repos
from underlay.coordination.checks import SandboxChecks
from underlay.coordination.models import MergeChange, Prediction
from underlay.coordination.train import Change, Train, Verdict
from underlay.kernel.loops import repeat
from underlay.orchestration import escalations
from underlay.storage.engine import Database
from underlay.storage.schema import merge_changes as changes
from underlay.types import new_id

log = logging.getLogger("underlay.merge_queue")


def model(row: Any) -> MergeChange:
    return MergeChange.model_validate(row, from_attributes=True)


async def submit(
    db: Database, repo: Any, ref: str, by: str, task_id: str | None, now: float
) -> MergeChange:
    head = await repos.git_of(repo).maybe_sha(ref)
    if head is None:
        raise errors.NotFound(f"{ref} names no commit in {repo.name}", field="ref")
    c = changes
    async with db.write() as conn:
        tries = (await conn.execute(select(func.count()).where(
            c.c.org_id == repo.org_id, c.c.repo == repo.name, c.c.ref == ref,
            c.c.state.in_(("conflict", "escalated")),
        ))).scalar_one()  # fmt: skip
        change_id = new_id("chg")
        await conn.execute(c.insert().values(
            id=change_id, org_id=repo.org_id, repo=repo.name, ref=ref, head=head,
            submitted_by=by, task_id=task_id, state="queued", tries=tries, detail="",
            conflicts=[], check_seconds=0.0, created_at=now,
        ))  # fmt: skip
    return await get(db, repo.org_id, change_id)


async def get(db: Database, org_id: str, change_id: str) -> MergeChange:
    async with db.read() as conn:
        row = (await conn.execute(
            select(changes).where(changes.c.org_id == org_id, changes.c.id == change_id)
        )).first()  # fmt: skip
    if row is None:
        raise errors.NotFound(f"no change {change_id}", field="change")
    return model(row)


async def listing(
    db: Database, org_id: str, repo: str, state: str | None, limit: int
) -> list[MergeChange]:
    query = select(changes).where(changes.c.org_id == org_id, changes.c.repo == repo)
    if state is not None:
        query = query.where(changes.c.state == state)
    async with db.read() as conn:
        rows = await conn.execute(query.order_by(changes.c.created_at).limit(limit))
        return [model(r) for r in rows]


async def predict(db: Database, repo: Any) -> Prediction:
    """Every queued change against the target and against each other, as ``git merge``
    would find them — exactly, without a checkout."""
    git = repos.git_of(repo)
    target = await git.maybe_sha(f"refs/heads/{repo.target}")
    queued = await listing(db, repo.org_id, repo.name, "queued", 1000)
    heads = [(c.id, c.head) for c in queued]
    if target is not None:
        heads.append(("target", target))
    found, pairs = await prediction.pairwise(git, heads)
    return Prediction(repo=repo.name, target_head=target or "", pairs_checked=pairs,
                      conflicts=found)  # fmt: skip


class MergeQueue:
    """Lands every repository's queued changes (one train per repository at a time)."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._running: set[tuple[str, str]] = set()

    async def forever(self, every: float = 1.0) -> None:
        await repeat(self.process_once, every, "merge queue round", log)

    async def process_once(self) -> int:
        """One round over every repository; how many changes were decided."""
        decided = 0
        for repo in await repos.every(self.kernel.db):
            key = (repo.org_id, repo.name)
            if key in self._running:
                continue
            self._running.add(key)
            try:
                decided += await self._repository(repo)
            finally:
                self._running.discard(key)
        return decided

    async def _repository(self, repo: Any) -> int:
        await self._recover(repo)
        queued = await listing(self.kernel.db, repo.org_id, repo.name, "queued", 1000)
        if not queued:
            return 0
        git = repos.git_of(repo)
        if await git.maybe_sha(f"refs/heads/{repo.target}") is None:
            log.warning("repository %s has no branch %s yet: nothing lands", repo.name,
                        repo.target)  # fmt: skip
            return 0
        await self._set([c.id for c in queued], state="testing")
        s = repo.settings
        checks = SandboxChecks(self.kernel, repo.org_id, git, s["checks"], s["template"],
                               s["check_timeout_seconds"])  # fmt: skip
        by_id = {c.id: c for c in queued}

        async def decided(verdict: Verdict) -> None:
            await self._decided(repo, by_id[verdict.change.id], verdict)

        train = Train(git, f"refs/heads/{repo.target}", checks, s["batch_size"],
                      s["concurrency"], on_verdict=decided)  # fmt: skip
        verdicts = await train.run([Change(c.id, c.head) for c in queued])
        return len(verdicts)

    async def _decided(self, repo: Any, change: MergeChange, verdict: Verdict) -> None:
        state: str = verdict.outcome
        values: dict[str, Any] = {
            "detail": verdict.detail[-8000:], "conflicts": list(verdict.conflicts),
            "check_seconds": change.check_seconds + verdict.check_seconds,
        }  # fmt: skip
        if state == "landed":
            values["landed_commit"] = verdict.commit
        if state == "conflict":
            values["tries"] = change.tries + 1
            if change.tries + 1 >= repo.settings["max_conflict_tries"]:
                state, values["escalation_id"] = "escalated", await self._escalate(repo, change)
        await self._announce(repo, change, state, decided_at=self.kernel.clock.now(), **values)
        detail = {"change": change.id, "repo": repo.name, "ref": change.ref,
                  "head": change.head, "agent": change.submitted_by, "task": change.task_id,
                  "commit": verdict.commit, "conflicts": list(verdict.conflicts),
                  "check_seconds": values["check_seconds"]}  # fmt: skip
        await self.kernel.record(repo.org_id, ("system", "merge-queue"), f"queue.{state}",
                                 "ok" if state == "landed" else "error", detail)  # fmt: skip

    async def _escalate(self, repo: Any, change: MergeChange) -> str:
        esc, _ = await escalations.raise_(
            self.kernel.db, org_id=repo.org_id, source=f"merge-queue:{repo.name}",
            summary=f"{change.ref} still conflicts with {repo.target} after "
                    f"{change.tries + 1} tries",
            context={"repo": repo.name, "change": change.id, "ref": change.ref,
                     "agent": change.submitted_by, "task": change.task_id},
            dedupe_key=f"merge-queue:{repo.name}:{change.ref}:conflicts",
            raised_by="system", now=self.kernel.clock.now(),
        )  # fmt: skip
        return str(esc.id)

    async def _recover(self, repo: Any) -> None:
        """Changes left ``testing`` by a crash: landed if the target holds their head (the
        verdict was lost after the landing), else queued again."""
        git = repos.git_of(repo)
        target = await git.maybe_sha(f"refs/heads/{repo.target}")
        for c in await listing(self.kernel.db, repo.org_id, repo.name, "testing", 1000):
            if target is not None and await git.is_ancestor(c.head, target):
                await self._announce(repo, c, "landed", landed_commit=target,
                                     decided_at=self.kernel.clock.now())  # fmt: skip
            else:
                await self._set([c.id], state="queued")

    async def _announce(self, repo: Any, change: MergeChange, state: str, **values: Any) -> None:
        """Write a verdict with its event and its author's message, in one transaction."""

        def work(conn: Connection) -> None:
            conn.execute(update(changes).where(changes.c.id == change.id)
                         .values(state=state, **values))  # fmt: skip
            announce.verdict(conn, repo, change, state, values, values["decided_at"])

        await self.kernel.db.run_write(work)
        notify.wake(self.kernel.db, repo.org_id)

    async def _set(self, ids: list[str], **values: Any) -> None:
        async with self.kernel.db.write() as conn:
            await conn.execute(update(changes).where(changes.c.id.in_(ids)).values(**values))
