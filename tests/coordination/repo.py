"""A real git repository for the coordination tests, driven synchronously."""

from __future__ import annotations

import subprocess
from pathlib import Path

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "LC_ALL": "C"}  # fmt: skip


class Repo:
    """A bare repository (what underlay owns) and a scratch working tree to make commits."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "repo.git"
        self.work = root / "work"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.work)], check=True)
        self.git("remote", "add", "origin", str(self.bare))

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        done = subprocess.run(
            ["git", *args], cwd=cwd or self.work, env=ENV, capture_output=True, text=True
        )
        if check and done.returncode != 0:
            raise AssertionError(f"git {args} failed: {done.stderr}")
        return done.stdout.strip()

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        """Write (or, with None, delete) files in the scratch tree and commit them."""
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def branch(self, name: str, start: str) -> None:
        self.git("checkout", "-q", "-B", name, start)

    def push(self, *refs: str) -> None:
        self.git("push", "-q", "-f", "origin", *refs)

    def target(self) -> str:
        return self.git("rev-parse", "main", cwd=self.bare)
