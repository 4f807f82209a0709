"""Host uids for sandboxes, unique across every installation on the host.

Each running or persistent sandbox gets its own unprivileged host uid, so an escape
from one lands in no other's files or processes. Several installations (or test runs)
may share a host: a uid is claimed by creating ``<dir>/<uid>`` exclusively, holding the
owning runtime directory and sandbox id, and released by deleting it. On start an
installation releases the claims it left behind that no longer belong to a sandbox.
"""

from __future__ import annotations

import os
from pathlib import Path

from underlay import errors

SPAN = 1_000_000


class UidRegistry:
    def __init__(self, directory: Path, base: int, owner: str) -> None:
        self.dir = directory
        self.base = base
        self.owner = owner
        self.dir.mkdir(parents=True, exist_ok=True)
        self._next = base  # where the next search starts: claims are rarely released in order

    def claim(self, sandbox: str) -> int:
        """A uid no other sandbox on this host holds, claimed for ``sandbox``."""
        start = self._next - self.base
        for offset in range(SPAN):
            uid = self.base + (start + offset) % SPAN
            try:
                fd = os.open(f"{self.dir}/{uid}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{self.owner}\n{sandbox}\n")
            self._next = uid + 1
            return uid
        raise errors.LimitExceeded("no free sandbox uid on this host")

    def release(self, uid: int) -> None:
        path = self.dir / str(uid)
        try:
            if path.read_text().split("\n")[0] == self.owner:
                path.unlink()
        except FileNotFoundError:
            pass

    def reconcile(self, keep: set[int]) -> None:
        """Release this installation's claims except those in ``keep``."""
        for path in self.dir.iterdir():
            try:
                mine = path.read_text().split("\n")[0] == self.owner
            except OSError:
                continue
            if mine and path.name.isdigit() and int(path.name) not in keep:
                path.unlink(missing_ok=True)
