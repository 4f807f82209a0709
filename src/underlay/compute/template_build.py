"""Building a root file system template with debootstrap.

``build`` runs ``debootstrap --variant=minbase`` for a Debian suite into a temporary
directory next to the templates, adds what a sandbox needs (the ``user`` account,
``/workspace`` and ``/.ul`` mount points), and renames it into place: a template is
either complete or absent, never half-built. The mirror is the one this host's apt is
configured with (so it works wherever apt works), unless one is given.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from underlay import errors
from underlay.compute.templates import SANDBOX_USER, TemplateStore

_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
BUILD_TIMEOUT_S = 1800


def host_mirror() -> str:
    """The Debian mirror of this host's apt sources (deb822 or one-line format)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if uri.rstrip("/").endswith("/debian"):
                        return uri
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[1].rstrip("/").endswith("/debian"):
                return parts[1]
    raise errors.Unavailable("no Debian mirror in this host's apt sources; pass mirror=")


def build(
    store: TemplateStore,
    name: str,
    *,
    suite: str = "bookworm",
    include: list[str] | None = None,
    mirror: str | None = None,
) -> Path:
    """Build template ``name``; return its rootfs. Conflict if it exists already."""
    target = store.path_for(name)
    if target.exists():
        raise errors.Conflict(f"template {name!r} exists; delete it first", field="name")
    for pkg in include or []:
        if not _PACKAGE.match(pkg):
            raise errors.InvalidInput(f"invalid package name {pkg!r}", field="include")
    if shutil.which("debootstrap") is None:
        raise errors.Unavailable("debootstrap is not installed (Debian package debootstrap)")
    work = target.parent.with_name(f".{name}.building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rootfs = work / "rootfs"
    argv = ["debootstrap", "--variant=minbase"]
    if include:
        argv.append("--include=" + ",".join(include))
    argv += [suite, str(rootfs), mirror or host_mirror()]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=BUILD_TIMEOUT_S, check=False)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-600:]
            raise errors.Unavailable(f"debootstrap failed: {tail}")
        _finish(rootfs)
        target.parent.parent.mkdir(parents=True, exist_ok=True)
        work.rename(target.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _finish(rootfs: Path) -> None:
    """Add the sandbox user and the mount points bubblewrap binds onto."""
    user, uid, gid, home = SANDBOX_USER
    for d in ("workspace", ".ul", "proc", "dev", "tmp", "run"):
        (rootfs / d).mkdir(exist_ok=True)
    with open(rootfs / "etc" / "passwd", "a") as fh:
        fh.write(f"{user}:x:{uid}:{gid}:{user}:{home}:/bin/bash\n")
    with open(rootfs / "etc" / "group", "a") as fh:
        fh.write(f"{user}:x:{gid}:\n")
    (rootfs / "etc" / "hostname").write_text("sandbox\n")
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (rootfs / cache).glob("*.deb"):
            f.unlink()
    (rootfs / ".ul" / ".keep").write_text("")
