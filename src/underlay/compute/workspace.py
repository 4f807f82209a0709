"""A sandbox's writable workspace: a size-capped file system on the host.

- ``tmpfs``: ephemeral sandboxes. A tmpfs mounted with ``size=``; creating one costs a
  single ``mount(2)``. Gone when unmounted.
- ``ext4``: persistent sandboxes. A sparse image file formatted once and loop-mounted;
  it survives restarts of the host process and of the machine.
- ``dir``: a plain directory, used only when the host cannot mount (not root); its size
  is then not capped, which ``capped`` reports.

Guarantees: after ``prepare`` the mount point exists, is owned by the sandbox's host uid
and is capped (for tmpfs and ext4) at ``disk_mb``; ``release`` unmounts; ``purge`` also
deletes what was stored. Both are safe to call twice.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

from underlay import errors

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2
_MS_NOSUID, _MS_NODEV = 2, 4


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise errors.Unavailable(f"cannot mount the workspace: {os.strerror(err)}")


def is_mounted(path: Path) -> bool:
    return os.path.ismount(path)


def can_mount() -> bool:
    return os.geteuid() == 0


class Workspace:
    """The workspace of one sandbox, kept in ``root`` (``root/ws`` is the mount point)."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root = root
        self.kind = kind
        self.path = root / "ws"
        self.image = root / "disk.img"

    @property
    def capped(self) -> bool:
        return self.kind in ("tmpfs", "ext4")

    def prepare(self, disk_mb: int, uid: int, gid: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # the sandbox's uid passes through to its mount point
        self.path.mkdir(exist_ok=True, mode=0o700)
        if is_mounted(self.path):
            return
        if self.kind == "tmpfs":
            opts = f"size={disk_mb}m,mode=0700,uid={uid},gid={gid},nr_inodes={disk_mb * 256}"
            _mount("underlay-ws", str(self.path), "tmpfs", _MS_NOSUID | _MS_NODEV, opts)
        elif self.kind == "ext4":
            if not self.image.exists():
                self._format(disk_mb, uid, gid)
            _run(["mount", "-o", "loop,nosuid,nodev", str(self.image), str(self.path)])
            os.chmod(self.path, 0o700)
        else:
            os.chown(self.path, uid, gid)
            os.chmod(self.path, 0o700)

    def _format(self, disk_mb: int, uid: int, gid: int) -> None:
        tmp = self.image.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.truncate(disk_mb << 20)
        _run(
            [
                "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
                "-E", f"root_owner={uid}:{gid},lazy_itable_init=1", str(tmp),
            ]
        )  # fmt: skip
        os.replace(tmp, self.image)

    def release(self) -> None:
        """Unmount (processes using it must be gone); what ext4 stored stays on disk."""
        if self.path.exists() and is_mounted(self.path):
            if _libc.umount2(str(self.path).encode(), _MNT_DETACH) != 0:
                err = ctypes.get_errno()
                raise errors.Unavailable(f"cannot unmount the workspace: {os.strerror(err)}")

    def purge(self) -> None:
        self.release()
        shutil.rmtree(self.root, ignore_errors=True)

    def used_bytes(self) -> int:
        if self.capped:
            st = os.statvfs(self.path)
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        total = 0
        for dirpath, _dirs, files in os.walk(self.path):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
                except OSError:
                    pass
        return total


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    except FileNotFoundError as exc:
        raise errors.Unavailable(f"{argv[0]} is not installed") from exc
    except subprocess.CalledProcessError as exc:
        msg = exc.stderr.decode(errors="replace").strip()
        raise errors.Unavailable(f"{argv[0]} failed: {msg}") from exc
