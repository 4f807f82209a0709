"""The sandbox driver interface.

A driver turns an ``InstanceSpec`` into a running, isolated ``Instance``: a supervisor
inside the sandbox that starts commands on request, a workspace the host can reach
(for the files API), and resource accounting. It holds no database state, does no
metering, auditing or retrying: the compute manager and the kernel do that.

Guarantees every driver gives (checked by ``tests/compute`` against each driver):
- ``start`` returns only once the supervisor answered; no process of the sandbox runs
  outside its limits, and nothing of the caller's environment reaches it;
- ``stop`` kills every process of the instance and releases its workspace mount, keeping
  what a persistent workspace stored; ``destroy`` also deletes the workspace;
- ``pause`` freezes every process (no CPU used) until ``resume``;
- both ``stop`` and ``destroy`` are safe to call twice.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from underlay.compute.files import WorkspaceFiles
from underlay.compute.models import Limits
from underlay.compute.supervisor import Supervisor


@dataclass(frozen=True)
class InstanceSpec:
    id: str
    template: str
    limits: Limits
    persistent: bool
    uid: int
    gid: int
    egress: bool = False  # bind the egress proxy's socket and ulfwd into the sandbox


@dataclass
class Usage:
    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    disk_used_bytes: int = 0
    pids: int = 0


@dataclass
class Instance:
    """A running sandbox as its driver hands it out."""

    spec: InstanceSpec
    supervisor: Supervisor
    files: WorkspaceFiles
    workspace_dir: Path
    started_at: float
    enforced: bool  # whether cgroup limits apply (False only on hosts without cgroups)
    handle: Any = field(default=None, repr=False)  # the driver's own state

    @property
    def id(self) -> str:
        return self.spec.id


class SandboxDriver(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    async def start(self, spec: InstanceSpec) -> Instance: ...

    @abc.abstractmethod
    async def stop(self, inst: Instance) -> None: ...

    @abc.abstractmethod
    async def destroy(self, inst: Instance) -> None: ...

    @abc.abstractmethod
    async def purge(self, spec: InstanceSpec) -> None:
        """Delete what a stopped instance left on disk (its persistent workspace)."""

    @abc.abstractmethod
    async def pause(self, inst: Instance) -> None: ...

    @abc.abstractmethod
    async def resume(self, inst: Instance) -> None: ...

    @abc.abstractmethod
    def usage(self, inst: Instance) -> Usage: ...

    def cpu_seconds(self, inst: Instance) -> float:
        """CPU time the instance used so far: what metering needs, and only that (cheaper
        than ``usage``, which also reads memory and the workspace's size)."""
        return self.usage(inst).cpu_seconds

    @abc.abstractmethod
    def egress_socket(self, spec: InstanceSpec) -> Path:
        """Where the host's egress proxy for ``spec`` listens (bound into the sandbox)."""

    @abc.abstractmethod
    def templates(self) -> list[str]:
        """Names of the root file system templates this driver can start."""

    def keep_launchers(self, count: int) -> None:  # noqa: B027 - optional hook
        """How many launchers to keep ready for cold creates (compute.launchers); drivers
        without launchers ignore it."""

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the driver itself holds (not its instances)."""
