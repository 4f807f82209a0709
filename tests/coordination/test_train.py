"""The merge train on a real repository: batches, bisection, conflicts, a moving target,
and never a red tree. The checks here read the tree (a file saying FAIL fails them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from underlay.coordination.git import Git
from underlay.coordination.train import Change, Train, Verdict

from .repo import Repo

MAIN = "refs/heads/main"


async def tree_of(git: Git, commit: str) -> str:
    return (await git.run("rev-parse", f"{commit}^{{tree}}"))[1].strip()


class Checks:
    """Fails a tree in which any file says FAIL; remembers every verdict by tree (what
    the checks see) and every commit checked."""

    def __init__(self, git: Git, delay: float = 0.0) -> None:
        self.git, self.delay = git, delay
        self.results: dict[str, bool] = {}
        self.commits: list[str] = []

    async def __call__(self, commit: str) -> tuple[bool, str]:
        self.commits.append(commit)
        await asyncio.sleep(self.delay)
        _, listing = await self.git.run("grep", "-l", "FAIL", commit, ok=(0, 1))
        failing = [line.split(":", 1)[1] for line in listing.split()]
        self.results[await tree_of(self.git, commit)] = not failing
        return not failing, "".join(f"FAIL in {name}\n" for name in failing)


def changes(repo: Repo, base: str, contents: list[dict[str, str]]) -> list[Change]:
    out = []
    for i, files in enumerate(contents):
        repo.branch(f"c{i}", base)
        out.append(Change(f"c{i}", repo.commit(files, f"c{i}")))
        repo.push(f"c{i}")
    return out


def setup(tmp_path: Path) -> tuple[Repo, str]:
    repo = Repo(tmp_path)
    base = repo.commit({"shared.txt": "one\ntwo\nthree\n"})
    repo.push(f"{base}:{MAIN}")
    return repo, base


def outcomes(verdicts: list[Verdict]) -> dict[str, str]:
    return {v.change.id: v.outcome for v in verdicts}


async def landed_trees_all_passed(git: Git, verdicts: list[Verdict], checks: Checks) -> None:
    """Every commit the target was moved to had passed its checks, and it ends on one."""
    landed = [v.commit for v in verdicts if v.outcome == "landed"]
    assert landed, "nothing landed"
    for commit in landed:
        tree = await tree_of(git, commit or "")
        assert checks.results.get(tree) is True, f"{commit} landed without passing"
    assert await git.sha("main") == landed[-1]


async def test_a_failing_change_is_isolated_and_the_others_land(tmp_path: Path) -> None:
    repo, base = setup(tmp_path)
    contents = [{f"f{i}.txt": "FAIL\n" if i == 5 else f"ok {i}\n"} for i in range(8)]
    queued = changes(repo, base, contents)
    git = Git(repo.bare)
    checks = Checks(git)
    train = Train(git, MAIN, checks, batch_size=4, concurrency=2)
    verdicts = await train.run(queued)
    assert outcomes(verdicts) == {f"c{i}": "rejected" if i == 5 else "landed" for i in range(8)}
    [rejected] = [v for v in verdicts if v.outcome == "rejected"]
    assert rejected.detail == "FAIL in f5.txt\n"
    assert all(v.check_seconds >= 0 for v in verdicts)
    assert sum(v.check_seconds for v in verdicts) > 0
    for v in verdicts:
        if v.outcome == "landed":
            assert await git.is_ancestor(v.change.head, "main")
    assert not await git.is_ancestor(queued[5].head, "main")
    await landed_trees_all_passed(git, verdicts, checks)
    assert train.checks_run < len(queued) + 3  # batches: fewer checks than a serial queue


async def test_a_tree_already_checked_is_not_checked_again(tmp_path: Path) -> None:
    """[good, bad] fails as a batch; bisection checks good alone, and bad on top of good
    is the batch's tree again: rejected with the batch's output, with no third check.
    Meanwhile the next batch was built on good alone, not on the known-red tree."""
    repo, base = setup(tmp_path)
    contents = [{"a.txt": "ok\n"}, {"b.txt": "FAIL\n"}, {"c.txt": "ok\n"}, {"d.txt": "ok\n"}]
    queued = changes(repo, base, contents)
    git = Git(repo.bare)
    checks = Checks(git, delay=0.01)
    train = Train(git, MAIN, checks, batch_size=2, concurrency=2)
    verdicts = await train.run(queued)
    assert outcomes(verdicts) == {"c0": "landed", "c1": "rejected", "c2": "landed", "c3": "landed"}
    assert [v.detail for v in verdicts if v.outcome == "rejected"] == ["FAIL in b.txt\n"]
    assert train.checks_saved == 1
    trees = [await tree_of(git, c) for c in checks.commits]
    assert len(trees) == len(set(trees)) == train.checks_run  # no tree checked twice
    await landed_trees_all_passed(git, verdicts, checks)
    assert not await git.is_ancestor(queued[1].head, "main")


async def test_the_queue_never_lands_a_red_tree(tmp_path: Path) -> None:
    repo, base = setup(tmp_path)
    contents = [{f"f{i}.txt": "FAIL\n" if i % 3 == 0 else f"ok {i}\n"} for i in range(12)]
    git = Git(repo.bare)
    checks = Checks(git, delay=0.01)
    verdicts = await Train(git, MAIN, checks, batch_size=5, concurrency=3).run(
        changes(repo, base, contents)
    )
    assert sorted(k for k, v in outcomes(verdicts).items() if v == "rejected") == [
        "c0", "c3", "c6", "c9",
    ]  # fmt: skip
    assert len(verdicts) == 12  # one verdict each
    await landed_trees_all_passed(git, verdicts, checks)


async def test_conflicts_are_handed_back_or_deferred_behind_the_change_ahead(
    tmp_path: Path,
) -> None:
    repo, base = setup(tmp_path)
    queued = changes(repo, base, [
        {"shared.txt": "one\nTWO by a\nthree\n"},
        {"shared.txt": "one\nTWO by b\nthree\n"},  # conflicts with a, ahead of it
        {"shared.txt": "one\ntwo\nthree\n", "FAIL.txt": "FAIL\n"},
    ])  # fmt: skip
    git = Git(repo.bare)
    verdicts = await Train(git, MAIN, Checks(git), batch_size=3).run(queued)
    assert outcomes(verdicts) == {"c0": "landed", "c1": "conflict", "c2": "rejected"}
    [conflict] = [v for v in verdicts if v.outcome == "conflict"]
    assert conflict.conflicts == ("shared.txt",)
    # the same two, when the one ahead fails its checks: the second lands after all
    repo2, base2 = setup(tmp_path / "again")
    queued = changes(repo2, base2, [
        {"shared.txt": "one\nTWO by a\nthree\n", "x.txt": "FAIL\n"},
        {"shared.txt": "one\nTWO by b\nthree\n"},
    ])  # fmt: skip
    git2 = Git(repo2.bare)
    verdicts = await Train(git2, MAIN, Checks(git2), batch_size=2).run(queued)
    assert outcomes(verdicts) == {"c0": "rejected", "c1": "landed"}


async def test_a_target_moved_by_someone_else_is_never_overwritten(tmp_path: Path) -> None:
    repo, base = setup(tmp_path)
    queued = changes(repo, base, [{f"f{i}.txt": f"ok {i}\n"} for i in range(3)])
    repo.branch("other", base)
    other = repo.commit({"other.txt": "pushed meanwhile\n"})
    git = Git(repo.bare)
    checks = Checks(git)
    moved = False

    async def check_and_move(commit: str) -> tuple[bool, str]:
        nonlocal moved
        if not moved:  # someone lands directly while the first batch is being tested
            moved = True
            repo.push(f"{other}:{MAIN}")
        return await checks(commit)

    verdicts = await Train(git, MAIN, check_and_move, batch_size=3).run(queued)
    assert outcomes(verdicts) == {"c0": "landed", "c1": "landed", "c2": "landed"}
    assert await git.is_ancestor(other, "main")  # kept, and the batch rebuilt on top of it
