"""Root file system templates.

- ``default``: the host's ``/usr`` mounted read-only, with a small generated ``/etc``
  (a ``user`` account, no host secrets: only a short allow-list of host ``/etc`` entries
  that programs need to run, such as the dynamic linker cache and CA certificates).
- any other name: a prepared directory ``<home>/compute/templates/<name>/rootfs`` (for
  example one made by ``underlay sandbox template build NAME`` with debootstrap),
  mounted read-only as ``/``.

Guarantees: a template is immutable while sandboxes use it (it is mounted read-only);
an unknown name is a ``NotFound`` naming it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from underlay import errors

DEFAULT = "default"
SANDBOX_USER = ("user", 1000, 1000, "/workspace")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_HOST_ETC = (
    "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "ca-certificates",
    "ca-certificates.conf", "localtime", "timezone", "mime.types", "bash.bashrc", "profile",
    "inputrc", "os-release", "debian_version", "python3", "python3.11", "gitconfig",
    "perl", "login.defs", "shells",
)  # fmt: skip


@dataclass(frozen=True)
class Template:
    name: str
    rootfs: Path | None  # None: the host's /usr with the generated etc
    etc: Path | None


class TemplateStore:
    """Where templates live (``<runtime dir>/templates``) and how to find one by name."""

    def __init__(self, runtime: Path, etc_dir: Path) -> None:
        self.dir = runtime / "templates"
        self.etc_dir = etc_dir

    def get(self, name: str) -> Template:
        if name == DEFAULT:
            return Template(name, None, self._default_etc())
        if not _NAME.match(name):
            raise errors.InvalidInput(f"invalid template name {name!r}", field="template")
        rootfs = self.dir / name / "rootfs"
        if not (rootfs / "usr").is_dir():
            known = ", ".join(self.names())
            raise errors.NotFound(f"no template {name!r} (known: {known})", field="template")
        return Template(name, rootfs, None)

    def names(self) -> list[str]:
        found = [DEFAULT]
        if self.dir.is_dir():
            found += sorted(p.name for p in self.dir.iterdir() if (p / "rootfs" / "usr").is_dir())
        return found

    def path_for(self, name: str) -> Path:
        if name == DEFAULT or not _NAME.match(name):
            raise errors.InvalidInput(f"invalid template name {name!r}", field="template")
        return self.dir / name / "rootfs"

    def _default_etc(self) -> Path:
        etc = self.etc_dir  # world-readable copies only
        if (etc / ".complete").exists():
            return etc
        tmp = etc.with_name(f"default-etc.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in _HOST_ETC:
            src = Path("/etc") / name
            if src.is_symlink() or src.is_file():
                shutil.copy2(src, tmp / name, follow_symlinks=False)
            elif src.is_dir():
                shutil.copytree(src, tmp / name, symlinks=True)
        user, uid, gid, home = SANDBOX_USER
        (tmp / "passwd").write_text(
            f"root:x:0:0:root:/root:/bin/sh\n{user}:x:{uid}:{gid}:{user}:{home}:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        (tmp / "group").write_text(f"root:x:0:\n{user}:x:{gid}:\nnogroup:x:65534:\n")
        (tmp / "hostname").write_text("sandbox\n")
        (tmp / "hosts").write_text("127.0.0.1 localhost sandbox\n::1 localhost\n")
        (tmp / "resolv.conf").write_text("")
        (tmp / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
        (tmp / ".complete").write_text("")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, etc)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
        return etc
