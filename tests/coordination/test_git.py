"""Conflict prediction without a checkout equals a real ``git merge``, exactly."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from underlay.coordination.git import Git, GitError

from .repo import ENV, Repo


def real_merge(repo: Repo, ours: str, theirs: str, where: Path) -> tuple[bool, tuple[str, ...]]:
    """What ``git merge`` does in a working tree: clean, or the paths left conflicted."""
    if not where.exists():
        repo.git("worktree", "add", "-q", "--detach", str(where), ours)
    repo.git("checkout", "-q", "--detach", "-f", ours, cwd=where)
    merged = subprocess.run(["git", "merge", "-q", "--no-edit", theirs], cwd=where, env=ENV,
                            capture_output=True, text=True)  # fmt: skip
    conflicted = repo.git("diff", "--name-only", "--diff-filter=U", cwd=where).split()
    repo.git("merge", "--abort", cwd=where, check=False)
    repo.git("reset", "-q", "--hard", cwd=where)
    return merged.returncode == 0, tuple(sorted(conflicted))


def random_change(rng: random.Random, files: dict[str, list[str]]) -> dict[str, str | None]:
    """Edits of a few lines in a few files, sometimes a new file or a deleted one."""
    out: dict[str, str | None] = {}
    for name in rng.sample(sorted(files), k=rng.randint(1, 3)):
        lines = list(files[name])
        for _ in range(rng.randint(1, 2)):
            lines[rng.randrange(len(lines))] = f"edit {rng.random():.6f}"
        out[name] = "\n".join(lines) + "\n"
    if rng.random() < 0.2:
        out[f"new{rng.randrange(3)}.txt"] = f"added {rng.random()}\n"
    if rng.random() < 0.1:
        out[rng.choice(sorted(files))] = None
    return out


async def test_predictions_equal_real_merges_on_random_branches(tmp_path: Path) -> None:
    rng = random.Random(7)
    repo = Repo(tmp_path)
    files = {f"f{i}.txt": [f"line {j} of {i}" for j in range(8)] for i in range(6)}
    base = repo.commit({n: "\n".join(lines) + "\n" for n, lines in files.items()})
    heads = []
    for b in range(8):
        repo.branch(f"b{b}", base)
        for _ in range(rng.randint(1, 2)):
            head = repo.commit(random_change(rng, files), f"b{b}")
        heads.append(head)
    git, checked, conflicting = Git(repo.work), 0, 0
    for i in range(len(heads)):
        for j in range(i + 1, len(heads)):
            predicted = await git.merge_tree(heads[i], heads[j])
            clean, paths = real_merge(repo, heads[i], heads[j], tmp_path / "wt")
            assert (predicted.clean, predicted.conflicts) == (clean, paths), (i, j)
            checked, conflicting = checked + 1, conflicting + (not clean)
    assert checked == 28 and 0 < conflicting < checked  # both kinds were exercised


async def test_commits_refs_and_errors(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    base = repo.commit({"a.txt": "a\n"})
    repo.branch("topic", base)
    topic = repo.commit({"b.txt": "b\n"})
    repo.push(f"{base}:refs/heads/main", "topic")
    git = Git(repo.bare)
    merge = await git.merge_tree(base, topic)
    assert merge.clean and merge.tree
    made = await git.commit_tree(merge.tree, [base, topic], "merge")
    assert await git.is_ancestor(topic, made) and await git.is_ancestor(base, made)
    assert await git.update_ref("refs/heads/main", made, base)
    assert not await git.update_ref("refs/heads/main", base, topic)  # it moved: refused
    assert await git.sha("main") == made
    assert await git.maybe_sha("nope") is None
    with pytest.raises(GitError, match="rev-parse"):
        await git.sha("nope")
    await git.export(made, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt"]
