"""The merge train: lands queued changes on a target branch in speculative batches, with
bisection when a batch fails — and never a red tree.

How a run goes (``Train.run(changes)``, changes in queue order):

1. Changes are cut into groups of ``batch_size``. Each group's *speculative commit* is
   the merge of its changes on top of the group before it (the first on the target):
   ``git merge-tree`` then ``commit-tree`` — no checkout, no working tree.
2. The checks run on up to ``concurrency`` groups' commits at once: group 2 is tested on
   top of group 1 while group 1 is, as in a speculative merge queue. A group is built
   only when it enters that window, while the tests ahead of it run (building all of
   them first left the checks idle half the time).
3. The head group's verdict decides. Passed: the target moves to exactly that commit
   (compare-and-swap; if someone else moved it, everything left is rebuilt on the new
   target), and its changes are landed. Failed: a group of one change is rejected with
   the failing output; a larger group is split in halves, tested in turn (bisection),
   so a failing change is isolated and the others land. Either way the groups after it,
   built on a failed commit, are rebuilt and tested again.
3a. Verdicts are remembered by tree, what the checks see: a group whose merged tree was
   checked before is decided without checking it again. Bisection is where this pays:
   when the first half of a failed group passes, the second half on top of it is the
   failed group's tree again, rejected or split at once. A group known to be red keeps
   its place in line, but the groups after it are built without it, so the test window
   bets on what is likely to pass rather than on what is known to fail.
4. A change that does not merge onto the commit before it is taken out: if it merges
   onto the target by itself, it conflicts only with changes ahead of it, so it is
   deferred once, to be tried after them; otherwise (or the second time) its verdict is
   ``conflict`` with the conflicted paths.

Guarantees: the target only ever moves to a commit whose checks passed, and only
forward (each landing is a descendant of the one before); each change gets exactly one
verdict; a change's head is in the target once it is ``landed``. Each verdict carries
the change's share of the checks' time (a check's wall time split evenly among the
changes it tested, abandoned speculative checks included) — what it cost to land it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from underlay.coordination.git import Git, Merge

Check = Callable[[str], Awaitable[tuple[bool, str]]]  # commit -> (passed, output)
Outcome = Literal["landed", "rejected", "conflict"]


@dataclass(frozen=True)
class Change:
    id: str
    head: str  # the commit to land


@dataclass(frozen=True)
class Verdict:
    change: Change
    outcome: Outcome
    commit: str | None = None  # landed: the target commit that holds it
    detail: str = ""  # rejected: the failing output; conflict: what it conflicts with
    conflicts: tuple[str, ...] = ()
    check_seconds: float = 0.0  # its share of the checks that tested it (cost attribution)


@dataclass
class _Group:
    changes: list[Change]
    top: str = ""  # the speculative commit: these changes merged on the group before
    tree: str = ""  # its tree: what the checks see, so what their verdict is keyed by
    known: tuple[bool, str] | None = None  # the verdict of an earlier check of that tree


@dataclass
class Train:
    git: Git
    target: str  # a full ref: refs/heads/main
    check: Check
    batch_size: int = 2
    concurrency: int = 2
    on_verdict: Callable[[Verdict], Awaitable[None]] | None = None
    checks_run: int = 0  # how many times the checks ran (figures for the benchmark)
    checks_saved: int = 0  # groups decided by an earlier check of the same tree
    _verdicts: list[Verdict] = field(default_factory=list)
    _spent: dict[str, float] = field(default_factory=dict)  # change id -> check seconds
    _seen: dict[str, tuple[bool, str]] = field(default_factory=dict)  # tree -> verdict
    _merges: dict[tuple[str, str], Merge] = field(default_factory=dict)
    _commits: dict[tuple[str, str], str] = field(default_factory=dict)  # (top, head) -> merge

    async def run(self, changes: list[Change]) -> list[Verdict]:
        """Land, reject or hand back every change; their verdicts, in decision order."""
        self._verdicts = []
        self._seen, self._merges, self._commits = {}, {}, {}
        size = max(1, self.batch_size)
        pending = [changes[i : i + size] for i in range(0, len(changes), size)]
        deferred: set[str] = set()
        while pending:
            later: list[Change] = []
            pending = await self._round(pending, deferred, later)
            if later:
                pending.append(later)
        return self._verdicts

    async def _round(
        self, pending: list[list[Change]], deferred: set[str], later: list[Change]
    ) -> list[list[Change]]:
        """Build, test and land groups in order from the target's head, each group built
        only as it enters the test window (while the tests ahead of it run); what is left
        to rebuild after a failure or a target moved by someone else, or nothing.

        A group whose tree was checked before is not checked again. A known-red group
        stays in line (to be split or rejected when its turn comes) but the groups after
        it are built without it: they bet on what is likely, not on what is known to
        fail."""
        base = top = await self.git.sha(self.target)
        queue = list(pending)
        window: list[tuple[_Group, asyncio.Task[tuple[bool, str]] | None]] = []
        try:
            while True:
                while sum(t is not None for _, t in window) < self.concurrency and queue:
                    group = await self._build(top, base, queue.pop(0), deferred, later)
                    if group is None:
                        continue
                    group.known = self._seen.get(group.tree)
                    if group.known is None:
                        window.append((group, asyncio.create_task(self._check(group))))
                    else:
                        self.checks_saved += 1
                        window.append((group, None))
                    if group.known is None or group.known[0]:
                        top = group.top
                if not window:
                    return []
                group, test = window.pop(0)
                if test is not None:
                    passed, output = await test
                else:
                    assert group.known is not None
                    passed, output = group.known
                self._seen[group.tree] = (passed, output)
                rest = [g.changes for g, _ in window] + queue
                if passed:
                    if not await self.git.update_ref(self.target, group.top, base):
                        return [group.changes, *rest]  # moved under us: rebuild all
                    base = group.top
                    for change in group.changes:
                        await self._decide(Verdict(change, "landed", commit=group.top))
                    continue
                halves = await self._failed(group, output)
                if test is None:  # known red: the groups after it were built without it
                    queue[0:0] = halves
                    continue
                return [*halves, *rest]  # the groups after it were built on it
        finally:
            for _, test in window:
                if test is not None:
                    test.cancel()
            for _, test in window:
                with contextlib.suppress(BaseException):
                    if test is not None:
                        await test

    async def _failed(self, group: _Group, output: str) -> list[list[Change]]:
        """A red group: its one change is rejected, or it is split in halves to bisect."""
        if len(group.changes) == 1:
            await self._decide(Verdict(group.changes[0], "rejected", detail=output))
            return []
        half = len(group.changes) // 2
        return [group.changes[:half], group.changes[half:]]

    async def _build(
        self, top: str, base: str, changes: list[Change], deferred: set[str],
        later: list[Change],
    ) -> _Group | None:  # fmt: skip
        """The group's speculative commit on ``top``; None if none of its changes merge
        (those that conflict only with changes ahead are deferred into ``later``)."""
        group = _Group([])
        for change in changes:
            merge = await self._merge(top, change.head)
            if not merge.clean:
                alone = await self._merge(base, change.head) if top != base else merge
                if alone.clean and change.id not in deferred:
                    deferred.add(change.id)
                    later.append(change)  # it conflicts only with changes ahead of it
                else:
                    await self._decide(Verdict(
                        change, "conflict", conflicts=merge.conflicts,
                        detail=f"conflicts with the target in {', '.join(merge.conflicts)}",
                    ))  # fmt: skip
                continue
            assert merge.tree is not None
            made = self._commits.get((top, change.head))
            if made is None:
                made = await self.git.commit_tree(
                    merge.tree, [top, change.head], f"underlay merge queue: {change.id}"
                )
                self._commits[(top, change.head)] = made
            top = made
            group.changes.append(change)
            group.tree = merge.tree
        if not group.changes:
            return None
        group.top = top
        return group

    async def _merge(self, ours: str, theirs: str) -> Merge:
        """``git merge-tree`` of two commits, once per run: bisection rebuilds the halves
        of a failed group on the same commits, so they cost no git call."""
        merge = self._merges.get((ours, theirs))
        if merge is None:
            merge = self._merges[(ours, theirs)] = await self.git.merge_tree(ours, theirs)
        return merge

    async def _check(self, group: _Group) -> tuple[bool, str]:
        """The checks on the group's commit; their time is shared by its changes."""
        self.checks_run += 1
        started = time.monotonic()
        try:
            return await self.check(group.top)
        finally:
            share = (time.monotonic() - started) / len(group.changes)
            for change in group.changes:
                self._spent[change.id] = self._spent.get(change.id, 0.0) + share

    async def _decide(self, verdict: Verdict) -> None:
        spent = round(self._spent.pop(verdict.change.id, 0.0), 3)
        verdict = dataclasses.replace(verdict, check_seconds=spent)
        self._verdicts.append(verdict)
        if self.on_verdict is not None:
            await self.on_verdict(verdict)
