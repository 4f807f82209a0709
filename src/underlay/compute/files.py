"""The files API of a sandbox, done on the host without ever following a symlink.

Sandboxed code controls the workspace and may plant symlinks (or swap a directory for
one between two calls) to trick the host into reading or writing outside it. So no
path is ever handed to the kernel whole: ``WorkspaceFiles`` walks from a descriptor of
the workspace root one component at a time with ``O_NOFOLLOW``, and opens the last
component relative to its parent's descriptor. A symlink anywhere on the way is an
error; a FIFO or device where a file is expected is an error (opened non-blocking).

Paths are as the sandbox sees them: ``/workspace/a/b`` or ``a/b`` (relative to the
workspace). ``..`` may not leave the workspace.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from underlay import errors
from underlay.compute.models import WORKSPACE, FileInfo

MAX_READ_BYTES = 64 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_REMOVE_ATTEMPTS = 5


def split(path: str) -> list[str]:
    """The components of ``path`` below the workspace; InvalidInput if it escapes."""
    if not path or "\0" in path:
        raise errors.InvalidInput("the path is empty or contains a NUL byte", field="path")
    full = posixpath.normpath(posixpath.join(WORKSPACE, path))
    if full == WORKSPACE:
        return []
    if not full.startswith(WORKSPACE + "/"):
        raise errors.InvalidInput(f"path {path!r} escapes {WORKSPACE}", field="path")
    return full[len(WORKSPACE) + 1 :].split("/")


def display(parts: list[str]) -> str:
    return "/".join([WORKSPACE, *parts])


def _os_error(exc: OSError, path: str) -> errors.UnderlayError:
    if exc.errno in (40, 20):  # ELOOP, ENOTDIR: a symlink or a file on the way
        return errors.InvalidInput(
            f"{path}: a component is a symlink or not a directory", field="path"
        )
    if exc.errno == 2:
        return errors.NotFound(f"{path}: no such file or directory", field="path")
    if exc.errno == 28:
        return errors.LimitExceeded(f"{path}: the workspace is full (disk_mb)", field="path")
    if exc.errno in (21, 39):
        return errors.Conflict(f"{path}: {exc.strerror}", field="path")
    return errors.InvalidInput(f"{path}: {exc.strerror}", field="path")


class WorkspaceFiles:
    """File operations confined to one workspace directory; new files owned by ``uid``."""

    def __init__(self, root: Path, uid: int, gid: int) -> None:
        self.root = root
        self.uid = uid
        self.gid = gid

    @contextmanager
    def _dir(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for name in parts:
                if create:
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                        os.chown(name, self.uid, self.gid, dir_fd=fd, follow_symlinks=False)
                    except FileExistsError:
                        pass
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def read(self, path: str) -> tuple[bytes, str]:
        parts = split(path)
        if not parts:
            raise errors.InvalidInput(f"{path}: is a directory", field="path")
        try:
            with self._dir(parts[:-1]) as dfd:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
                try:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        raise errors.InvalidInput(f"{path}: not a regular file", field="path")
                    if st.st_size > MAX_READ_BYTES:
                        raise errors.PayloadTooLarge(
                            f"{path}: {st.st_size} bytes; the files API reads at most "
                            f"{MAX_READ_BYTES}",
                            field="path",
                        )
                    with os.fdopen(os.dup(fd), "rb") as fh:
                        return fh.read(MAX_READ_BYTES + 1)[:MAX_READ_BYTES], display(parts)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise _os_error(exc, path) from exc

    def write(self, path: str, data: bytes, mode: int = 0o644) -> str:
        parts = split(path)
        if not parts:
            raise errors.InvalidInput(f"{path}: is a directory", field="path")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            with self._dir(parts[:-1], create=True) as dfd:
                fd = os.open(parts[-1], flags, mode, dir_fd=dfd)
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise errors.InvalidInput(f"{path}: not a regular file", field="path")
                    os.fchown(fd, self.uid, self.gid)
                    os.fchmod(fd, mode)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise _os_error(exc, path) from exc
        return display(parts)

    def list(self, path: str, depth: int = 1) -> builtins.list[FileInfo]:
        parts = split(path)
        out: list[FileInfo] = []
        try:
            with self._dir(parts) as dfd:
                self._scan(dfd, parts, depth, out)
        except OSError as exc:
            raise _os_error(exc, path) from exc
        return out

    def _scan(
        self, dfd: int, parts: builtins.list[str], depth: int, out: builtins.list[FileInfo]
    ) -> None:
        for entry in sorted(os.scandir(dfd), key=lambda e: e.name):
            st = entry.stat(follow_symlinks=False)
            out.append(_info([*parts, entry.name], st))
            if depth > 1 and stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
                except OSError:
                    continue  # replaced under us: skip, never follow
                try:
                    self._scan(sub, [*parts, entry.name], depth - 1, out)
                finally:
                    os.close(sub)

    def remove(self, path: str, recursive: bool = False) -> None:
        parts = split(path)
        if not parts:
            raise errors.InvalidInput("cannot remove the workspace itself", field="path")
        try:
            with self._dir(parts[:-1]) as dfd:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if not recursive:
                        raise errors.Conflict(
                            f"{path}: is a directory; pass recursive=true", field="path"
                        )
                    remove_tree(dfd, parts[-1])
                else:
                    os.unlink(parts[-1], dir_fd=dfd)
        except OSError as exc:
            raise _os_error(exc, path) from exc

    def state(self, path: str) -> dict[str, tuple[int, int, int]]:
        """Every entry below ``path`` with (type bits, size, mtime_ns): for watching."""
        return {
            f.path: (f.mode, f.size, int(f.modified_at * 1e9)) for f in self.list(path, depth=16)
        }


def remove_tree(parent_fd: int, name: str) -> None:
    """Remove directory ``name`` under ``parent_fd`` and all it holds, never following a
    symlink and never opening anything but a directory (``shutil.rmtree`` opens what it
    just checked by name, so a sandbox that swaps in a symlink to a FIFO can block it).
    An entry that changes type under us is handled as what it has become."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        clear_dir(fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def clear_dir(fd: int) -> None:
    """Remove everything inside the open directory ``fd`` (see ``remove_tree``)."""
    for _ in range(_REMOVE_ATTEMPTS):
        names = os.listdir(fd)
        if not names:
            return
        for name in names:
            try:
                os.unlink(name, dir_fd=fd)
            except IsADirectoryError:
                with contextlib.suppress(NotADirectoryError, FileNotFoundError, OSError):
                    remove_tree(fd, name)
            except FileNotFoundError:
                pass
    if os.listdir(fd):
        raise errors.Conflict("the directory kept changing while it was removed; retry")


def _info(parts: list[str], st: os.stat_result) -> FileInfo:
    mode = st.st_mode
    kind = (
        "dir"
        if stat.S_ISDIR(mode)
        else "file"
        if stat.S_ISREG(mode)
        else "symlink"
        if stat.S_ISLNK(mode)
        else "other"
    )
    return FileInfo(
        path=display(parts),
        name=parts[-1],
        type=kind,
        size=st.st_size,
        mode=stat.S_IMODE(mode),
        modified_at=st.st_mtime,
    )


def encode(data: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """Text when the bytes are UTF-8, else base64: (content, encoding)."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"
