"""Git, run as a subprocess, for what coordination needs — all of it without a checkout.

* ``merge_tree(a, b)``: ``git merge-tree --write-tree`` — the merge of two commits as a
  tree, and, when it conflicts, exactly the paths a real ``git merge`` would leave
  conflicted (same merge machinery, ort), with its messages.
* ``commit_tree`` and ``update_ref``: a merge commit made from such a tree, and a branch
  moved only if it still points where the caller saw it (compare-and-swap), so two
  writers never overwrite each other's landing.

Every failure of git itself raises ``GitError`` with the command and git's own message;
a missing ``git`` binary raises ``errors.Unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from underlay import errors

IDENTITY = {  # commits made by underlay itself (speculative merges)
    "GIT_AUTHOR_NAME": "underlay", "GIT_AUTHOR_EMAIL": "merge-queue@underlay.invalid",
    "GIT_COMMITTER_NAME": "underlay", "GIT_COMMITTER_EMAIL": "merge-queue@underlay.invalid",
}  # fmt: skip


SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None  # where predictions write


class GitError(errors.Conflict):
    """git refused: the command and its message."""


@dataclass(frozen=True)
class Merge:
    """The merge of two commits: its tree when clean, else the conflicted paths."""

    clean: bool
    tree: str | None
    conflicts: tuple[str, ...] = ()
    messages: str = ""


@dataclass
class Git:
    """git in the repository at ``path`` (a bare repository or a working tree)."""

    path: Path
    env: dict[str, str] = field(default_factory=dict)

    async def run(
        self, *args: str, ok: tuple[int, ...] = (0,), stdin: bytes | None = None
    ) -> tuple[int, str]:
        """``git args...``; its exit code and stdout. Other exit codes raise GitError."""
        code, out = await self.run_bytes(*args, ok=ok, stdin=stdin)
        return code, out.decode(errors="replace")

    async def run_bytes(
        self, *args: str, ok: tuple[int, ...] = (0,), stdin: bytes | None = None
    ) -> tuple[int, bytes]:
        env = {**os.environ, **IDENTITY, **self.env, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        try:
            proc = await asyncio.create_subprocess_exec(
                "git", "-C", str(self.path), *args, env=env,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except FileNotFoundError:
            raise errors.Unavailable("git is not installed on this host") from None
        out, err = await proc.communicate(stdin)
        code = proc.returncode or 0
        if code not in ok:
            what = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
            raise GitError(f"git {' '.join(args[:3])} failed ({code}): {what[:2000]}")
        return code, out

    async def sha(self, rev: str) -> str:
        """The commit ``rev`` names (a branch, a tag, a sha)."""
        _, out = await self.run("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
        return out.strip()

    async def maybe_sha(self, rev: str) -> str | None:
        code, out = await self.run(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", ok=(0, 1)
        )
        return out.strip() if code == 0 else None

    async def merge_tree(self, ours: str, theirs: str) -> Merge:
        """Merge ``theirs`` into ``ours`` without touching any working tree."""
        code, out = await self.run(
            "merge-tree", "--write-tree", "--name-only", "-z", "--no-messages", ours, theirs,
            ok=(0, 1),
        )  # fmt: skip
        parts = out.split("\0")
        tree = parts[0].strip()
        if code == 0:
            return Merge(True, tree)
        conflicts = tuple(sorted({p for p in parts[1:] if p and p != "\n"}))
        return Merge(False, tree, conflicts)

    @contextlib.asynccontextmanager
    async def scratch(self) -> AsyncIterator[Git]:
        """This repository, read-only in effect: objects git writes (``merge-tree``'s
        merged trees) go to a throwaway directory — in memory when ``/dev/shm`` exists —
        with the repository's objects as an alternate. For predictions: exact, nothing
        left behind, and no loose objects written to the disk (half the time a pair)."""
        _, common = await self.run("rev-parse", "--path-format=absolute", "--git-common-dir")
        objects = str(Path(common.strip()) / "objects")
        where = SCRATCH
        with tempfile.TemporaryDirectory(prefix="underlay-predict-", dir=where) as tmp:
            env = {**self.env, "GIT_OBJECT_DIRECTORY": tmp,
                   "GIT_ALTERNATE_OBJECT_DIRECTORIES": objects}  # fmt: skip
            yield Git(self.path, env)

    async def commit_tree(self, tree: str, parents: list[str], message: str) -> str:
        args = ["commit-tree", tree, "-m", message]
        for parent in parents:
            args += ["-p", parent]
        _, out = await self.run(*args)
        return out.strip()

    async def update_ref(self, ref: str, new: str, old: str) -> bool:
        """Move ``ref`` to ``new`` only if it still points at ``old``; False if it moved."""
        code, _ = await self.run("update-ref", ref, new, old, ok=(0, 128))
        return code == 0

    async def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        code, _ = await self.run("merge-base", "--is-ancestor", ancestor, descendant, ok=(0, 1))
        return code == 0

    async def export(self, rev: str, into: Path) -> None:
        """The files of ``rev`` written into the directory ``into`` (no .git; nothing of
        the repository's own state changes, so exports may run side by side)."""
        _, tar = await self.run_bytes("archive", "--format=tar", rev)
        await asyncio.to_thread(_untar, tar, into)


def _untar(tar: bytes, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
