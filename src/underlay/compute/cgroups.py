"""Per-sandbox cgroups: memory, pids and CPU limits, usage, freezing, killing.

Two implementations behind one small interface: cgroup v1 (one hierarchy per
controller, as on this project's CI machines) and v2 (the unified hierarchy, where
present). ``detect()`` picks the one the host has, or returns ``None`` when the host
offers neither in a writable form (the driver then refuses limits it cannot enforce).

Guarantees: ``create`` applies every limit before any process of the sandbox runs (the
launcher joins the cgroup with ``join_paths`` before exec); ``kill_all`` returns only when
no process is left; ``remove`` leaves nothing behind in the hierarchy.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from underlay.compute.models import Limits

ROOT = Path("/sys/fs/cgroup")
PARENT = "underlay"
_PERIOD_US = 100_000


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _wait_empty(procs_files: list[Path], deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        pids = _pids(procs_files)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def _pids(procs_files: list[Path]) -> set[int]:
    pids: set[int] = set()
    for f in procs_files:
        try:
            pids.update(int(x) for x in f.read_text().split())
        except OSError:
            pass
    return pids


def _names(parent: Path, prefix: str) -> list[str]:
    try:
        return sorted(p.name for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix))
    except OSError:
        return []


class Cgroup:
    """One sandbox's cgroup. Subclasses know the file names of their hierarchy."""

    version = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def create(self, limits: Limits) -> None:
        raise NotImplementedError

    def join_paths(self) -> list[str]:
        """The ``cgroup.procs`` files a launcher writes its own pid into before exec."""
        raise NotImplementedError

    @classmethod
    def existing(cls, prefix: str) -> list[str]:
        """Names of the cgroups under underlay's parent that start with ``prefix``."""
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        raise NotImplementedError

    def memory(self) -> tuple[int, int]:
        """(current, peak) memory use in bytes."""
        raise NotImplementedError

    def pid_count(self) -> int:
        raise NotImplementedError

    def kill_all(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


class CgroupV1(Cgroup):
    """cgroup v1: one directory per controller under ``/sys/fs/cgroup/<ctrl>/underlay``."""

    version = 1
    CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")

    def _dir(self, ctrl: str) -> Path:
        return ROOT / ctrl / PARENT / self.name

    def create(self, limits: Limits) -> None:
        for ctrl in self.CONTROLLERS:
            self._dir(ctrl).mkdir(parents=True, exist_ok=True)
        mem = self._dir("memory")
        _write(mem / "memory.limit_in_bytes", str(limits.memory_mb << 20))
        if (mem / "memory.memsw.limit_in_bytes").exists():
            _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory_mb << 20))
        _write(self._dir("pids") / "pids.max", str(limits.pids))
        cpu = self._dir("cpu")
        _write(cpu / "cpu.cfs_period_us", str(_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(int(limits.cpus * _PERIOD_US)))

    def join_paths(self) -> list[str]:
        return [str(self._dir(c) / "cgroup.procs") for c in self.CONTROLLERS]

    @classmethod
    def existing(cls, prefix: str) -> list[str]:
        return _names(ROOT / "memory" / PARENT, prefix)

    def _freezer(self, state: str) -> None:
        path = self._dir("freezer") / "freezer.state"
        _write(path, state)
        end = time.monotonic() + 5
        while path.read_text().strip() != state and time.monotonic() < end:
            time.sleep(0.001)

    def freeze(self) -> None:
        self._freezer("FROZEN")

    def thaw(self) -> None:
        self._freezer("THAWED")

    def cpu_seconds(self) -> float:
        return _read_int(self._dir("cpuacct") / "cpuacct.usage") / 1e9

    def memory(self) -> tuple[int, int]:
        mem = self._dir("memory")
        return _read_int(mem / "memory.usage_in_bytes"), _read_int(
            mem / "memory.max_usage_in_bytes"
        )

    def pid_count(self) -> int:
        return _read_int(self._dir("pids") / "pids.current")

    def kill_all(self) -> None:
        if self._dir("freezer").exists():
            self.thaw()  # frozen tasks cannot die in v1
        _wait_empty([self._dir(c) / "cgroup.procs" for c in self.CONTROLLERS])

    def remove(self) -> None:
        self.kill_all()
        for ctrl in self.CONTROLLERS:
            try:
                self._dir(ctrl).rmdir()
            except FileNotFoundError:
                pass


class CgroupV2(Cgroup):
    """cgroup v2: one directory ``/sys/fs/cgroup/underlay/<name>`` for every controller."""

    version = 2

    @property
    def _dir(self) -> Path:
        return ROOT / PARENT / self.name

    def create(self, limits: Limits) -> None:
        parent = ROOT / PARENT
        parent.mkdir(exist_ok=True)
        _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
        self._dir.mkdir(exist_ok=True)
        _write(self._dir / "memory.max", str(limits.memory_mb << 20))
        if (self._dir / "memory.swap.max").exists():
            _write(self._dir / "memory.swap.max", "0")
        _write(self._dir / "pids.max", str(limits.pids))
        _write(self._dir / "cpu.max", f"{int(limits.cpus * _PERIOD_US)} {_PERIOD_US}")

    def join_paths(self) -> list[str]:
        return [str(self._dir / "cgroup.procs")]

    @classmethod
    def existing(cls, prefix: str) -> list[str]:
        return _names(ROOT / PARENT, prefix)

    def _freeze(self, value: str) -> None:
        _write(self._dir / "cgroup.freeze", value)
        end = time.monotonic() + 5
        while f"frozen {value}" not in (self._dir / "cgroup.events").read_text():
            if time.monotonic() > end:
                break
            time.sleep(0.001)

    def freeze(self) -> None:
        self._freeze("1")

    def thaw(self) -> None:
        self._freeze("0")

    def cpu_seconds(self) -> float:
        for line in (self._dir / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec"):
                return int(line.split()[1]) / 1e6
        return 0.0

    def memory(self) -> tuple[int, int]:
        current = _read_int(self._dir / "memory.current")
        return current, _read_int(self._dir / "memory.peak", current)

    def pid_count(self) -> int:
        return _read_int(self._dir / "pids.current")

    def kill_all(self) -> None:
        if (self._dir / "cgroup.kill").exists():
            _write(self._dir / "cgroup.kill", "1")
        _wait_empty([self._dir / "cgroup.procs"])

    def remove(self) -> None:
        self.kill_all()
        try:
            self._dir.rmdir()
        except FileNotFoundError:
            pass


def detect() -> type[Cgroup] | None:
    """The cgroup flavour this host offers writably, or ``None``."""
    if (ROOT / "cgroup.controllers").exists():
        return CgroupV2 if os.access(ROOT, os.W_OK) else None
    if all((ROOT / c).is_dir() for c in CgroupV1.CONTROLLERS):
        return CgroupV1 if os.access(ROOT / "memory", os.W_OK) else None
    return None
