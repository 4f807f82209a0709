"""Conflict notices: predicted conflicts between in-flight branches, told to their agents
early — while they work, not when the queue hands a change back.

One pass (``ConflictNotices.once``), for each repository:

1. The in-flight branches: changes ``queued`` or ``testing`` (their submitted head),
   then active workspaces whose branch holds commits the target lacks (its synced
   head). A workspace at the same head as a change is that change.
2. Every pair of them, and each with the target's head, is predicted exactly
   (``prediction.pairwise``, ``git merge-tree``). Results are cached by the pair of
   commits: a pass merges only pairs it has not seen.
3. Each conflicting pair *of heads* not reported before is reported once: a message to
   each agent involved (naming the other agent, its branch and the conflicted paths;
   for the target, the target) and the event ``queue.conflict_predicted``, written in
   one transaction with the durable record of the pair (``conflict_notices``), so a
   restart, a second pass or a second process never reports it again. When a branch
   gets new commits, its pairs are new ones, reported once if they still conflict. The
   target's side of a pair is keyed by the conflicted paths, not by its head: the
   target moves with every landing, and a branch is told again only when what it
   conflicts with there changes.

``forever(every)`` runs a pass every ``every`` seconds (``underlay up`` starts it with
``coordination.notice_every_seconds``); one failed pass does not stop the loop.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from underlay.comms import events, notify
from underlay.coordination import announce, prediction, repos
from underlay.kernel.loops import repeat
from underlay.storage.schema import conflict_notices, merge_changes, workspaces

log = logging.getLogger("underlay.conflict_notices")


@dataclass(frozen=True)
class Branch:
    """An in-flight branch (or the target): who is behind it, at which commit."""

    kind: str  # change | workspace | target
    id: str  # the change or workspace id; "target"
    ref: str  # the branch: what was submitted, ws/<id>, or the target's name
    head: str
    agent: str  # "" for the target


class ConflictNotices:
    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._cache: prediction.Cache = {}  # pair of commits -> conflicts (or None: clean)
        self._reported: set[tuple[str, str, str, str]] = set()  # (org, repo, head, head)

    async def forever(self, every: float = 5.0) -> None:
        await repeat(self.once, every, "conflict notices pass", log)

    async def once(self) -> int:
        """One pass over every repository; how many new conflicts were reported."""
        reported = 0
        for repo in await repos.every(self.kernel.db):
            try:
                reported += await self._repository(repo)
            except Exception:  # one broken repository must not silence the others
                log.exception("conflict notices for %s failed", repo.name)
        return reported

    async def in_flight(self, repo: Any) -> list[Branch]:
        """The repository's changes in the queue, then its workspaces with unmerged work."""
        git = repos.git_of(repo)
        target = await git.maybe_sha(f"refs/heads/{repo.target}")
        c, w = merge_changes, workspaces
        async with self.kernel.db.read() as conn:
            queued = (await conn.execute(select(c).where(
                c.c.org_id == repo.org_id, c.c.repo == repo.name,
                c.c.state.in_(("queued", "testing")),
            ).order_by(c.c.created_at))).all()  # fmt: skip
            active = (await conn.execute(select(w).where(
                w.c.org_id == repo.org_id, w.c.repo == repo.name, w.c.state == "active",
            ).order_by(w.c.created_at))).all()  # fmt: skip
        found = [Branch("change", r.id, r.ref, r.head, r.submitted_by) for r in queued]
        heads = {b.head for b in found}
        for r in active:
            head = await git.maybe_sha(f"refs/heads/{r.branch}")
            if head is None or head in heads:
                continue
            if target is not None and await git.is_ancestor(head, target):
                continue  # nothing the target lacks: not in flight
            heads.add(head)
            found.append(Branch("workspace", r.id, r.branch, head, r.owner))
        return found

    async def _repository(self, repo: Any) -> int:
        branches = await self.in_flight(repo)
        if not branches:
            return 0
        git = repos.git_of(repo)
        target_head = await git.maybe_sha(f"refs/heads/{repo.target}")
        sides = {b.id: b for b in branches}
        if target_head is not None:
            sides["target"] = Branch("target", "target", repo.target, target_head, "")
        heads = [(b.id, b.head) for b in sides.values()]
        overlaps, _ = await prediction.pairwise(git, heads, cache=self._cache)
        reported = 0
        for o in overlaps:
            if await self._report(repo, sides[o.a], sides[o.b], o.conflicts):
                reported += 1
        return reported

    async def _report(self, repo: Any, a: Branch, b: Branch, conflicts: list[str]) -> bool:
        """Report the pair once (durably); False if it was reported before."""
        head_a, head_b = sorted((_side(a, conflicts), _side(b, conflicts)))
        key = (repo.org_id, repo.name, head_a, head_b)
        if key in self._reported:
            return False
        n = conflict_notices
        now = self.kernel.clock.now()

        def work(conn: Connection) -> bool:
            events.serialize(conn, repo.org_id)  # two processes' passes: one reports it
            seen = conn.execute(select(n.c.head_a).where(
                n.c.org_id == repo.org_id, n.c.repo == repo.name, n.c.head_a == head_a,
                n.c.head_b == head_b,
            )).first()  # fmt: skip
            if seen is not None:
                return False
            conn.execute(n.insert().values(
                org_id=repo.org_id, repo=repo.name, head_a=head_a, head_b=head_b,
                conflicts=conflicts, created_at=now,
            ))  # fmt: skip
            announce.predicted(conn, repo, a, b, conflicts, now)
            return True

        new = await self.kernel.db.run_write(work)
        if len(self._reported) > prediction.CACHE_LIMIT:  # a memo only: the table decides
            self._reported.clear()
        self._reported.add(key)
        if new:
            notify.wake(self.kernel.db, repo.org_id)
        return bool(new)


def _side(branch: Branch, conflicts: list[str]) -> str:
    """A side of a reported pair: a branch's head; for the target, the conflicted paths."""
    if branch.kind != "target":
        return branch.head
    return "target:" + hashlib.sha1("\0".join(sorted(conflicts)).encode()).hexdigest()
