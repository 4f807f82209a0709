"""Builds ``ulinit`` (``compute/init/ulinit.c``) on demand, once per source version.

The binary is static, so it runs in any sandbox root filesystem. It is cached as
``<cache_dir>/ulinit-<first 16 hex of sha256(source)>``; a changed source gets a new
name, an unchanged one is never rebuilt. Building writes a unique temporary file and
renames it into place, so concurrent builders (threads or processes) are safe: each
rename installs a complete binary and the last one wins.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from underlay.errors import Unavailable

CFLAGS = ["-std=c11", "-O2", "-static", "-Wall", "-Wextra", "-Werror"]
_BUILD_TIMEOUT_S = 120
_NEEDS = "building the sandbox supervisor needs gcc and a static libc (libc.a; Debian: libc6-dev)"


def ulinit_source() -> bytes:
    """The C source shipped in the package."""
    return _source("ulinit")


def _source(name: str) -> bytes:
    return resources.files("underlay.compute.init").joinpath(f"{name}.c").read_bytes()


def ulinit_path(cache_dir: Path) -> Path:
    """Path of the compiled ulinit for the current source (mode 0755), building it if needed.

    Raises ``Unavailable`` naming gcc when the compiler or static libc is missing.
    """
    return static_binary("ulinit", cache_dir)


def static_binary(name: str, cache_dir: Path) -> Path:
    """Path of the static binary built from ``compute/init/<name>.c``, built if needed."""
    source = _source(name)
    target = cache_dir / f"{name}-{hashlib.sha256(source).hexdigest()[:16]}"
    if os.access(target, os.X_OK):
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise Unavailable(f"gcc not found: {_NEEDS}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cache_dir, 0o755)  # sandbox uids read the binaries through bind mounts
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=cache_dir)
    os.close(fd)
    try:
        _compile(gcc, source, Path(tmp))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _compile(gcc: str, source: bytes, out: Path) -> None:
    """Runs gcc on ``source`` (fed on stdin) and writes the binary to ``out``."""
    argv = [gcc, *CFLAGS, "-o", str(out), "-x", "c", "-"]
    try:
        done = subprocess.run(
            argv, input=source, capture_output=True, timeout=_BUILD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"gcc failed to run ({exc}): {_NEEDS}") from exc
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip()[-800:]
        raise Unavailable(f"gcc could not build a sandbox binary ({detail}): {_NEEDS}")
