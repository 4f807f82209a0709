"""Launchers started ahead of their sandboxes, each waiting inside a fresh cgroup.

A cold create spent two things before its sandbox existed at all: spawning the
launcher (~2 ms: a process, its pipes, an exec) and, on cgroup v1, moving it into the
sandbox's cgroup — which takes the kernel's threadgroup lock for writing and, after an
idle moment, waits for an RCU grace period (5 ms at the median on the reference VM,
with a long tail; see docs/benchmarks.md). A launcher (``ulseed``, compute/init/ulseed.c)
pays both in the background: it is spawned with the sandbox's stdin and stdout pipes,
moved into a new empty cgroup, and waits (in new network, IPC and UTS namespaces of
its own, an empty network with the loopback up, which bwrap then need not make). A
create takes one, sets its cgroup's limits
and sends it one instruction; it opens the sandbox's paths, drops to the sandbox's uid
and execs bwrap, so the sandbox's processes are born inside their cgroup. The sandbox
itself — workspace, namespaces, mounts, seccomp, init — is made for the create, from
nothing, as before: only an empty cgroup and a waiting process were ready.

Guarantees: a launcher is used at most once; taking one never waits (None when none is
ready, and the driver launches the usual way); filling starts with the first take, so
a kernel that never creates a sandbox starts none; a launcher dies with the host
(parent-death signal) and stands down, doing nothing, when its instruction pipe closes
unused; ``close`` kills the unused ones and removes their cgroups, and cgroups left by
a host that died are removed when the next one starts filling (those of a host that is
alive, another installation on the same machine, are left alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from underlay import errors
from underlay.compute import cgroups, seccomp
from underlay.compute.models import Limits
from underlay.types import new_id

log = logging.getLogger("underlay.compute.launchers")
PREFIX = "launcher-"
FIRST_FD = 10  # descriptor numbers the instruction places paths on start here
REFILL_DELAY_S = 0.05
SETUP_FAILED = 125  # ulseed's exit code for a setup error (--isolate refused, say)


@dataclass
class Launcher:
    process: asyncio.subprocess.Process
    cgroup: cgroups.Cgroup
    control: int  # the write end of its instruction pipe
    seccomp_fd: int  # the filter's number in the launcher (a sealed memfd of its own)
    isolated: bool  # it waits in network, IPC and UTS namespaces of its own
    limits: Limits = field(default_factory=Limits)  # its cgroup's, until a create's own

    def targets(self, names: list[str]) -> dict[str, int]:
        """Free descriptor numbers in the launcher for ``names``."""
        numbers = (n for n in range(FIRST_FD, FIRST_FD + 64) if n != self.seccomp_fd)
        return dict(zip(names, numbers, strict=False))

    def instruct(
        self, uid: str, gid: str, log_path: Path, opens: dict[int, Path], argv: list[str]
    ) -> None:
        """Send the one instruction and close the pipe: the launcher execs ``argv``."""
        fields = [uid, gid, str(log_path), str(len(opens))]
        for number, path in opens.items():
            fields += [str(number), str(path)]
        data = b"".join(f.encode() + b"\0" for f in [*fields, *argv])
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.control, view) :]
        finally:
            os.close(self.control)
            self.control = -1


class Launchers:
    def __init__(
        self,
        binary: Path,
        cgroup_cls: type[cgroups.Cgroup],
        program: bytes,
        size: int,
        *,
        isolate: bool = True,
    ) -> None:
        self.binary, self.cgroup_cls, self.program, self.size = binary, cgroup_cls, program, size
        self.isolate = isolate  # launchers make their sandbox's network, IPC and UTS
        self.ready: list[Launcher] = []
        self._filler: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self.taken = 0

    def take(self) -> Launcher | None:
        """A waiting launcher, or None; either way the set refills in the background."""
        if self.size <= 0 or self._closed:
            return None
        self._start()
        # refill soon, not now: a spawn on the event loop would slow the create under way
        asyncio.get_running_loop().call_later(REFILL_DELAY_S, self._wake.set)
        if not self.ready:
            return None
        self.taken += 1
        return self.ready.pop(0)

    async def wait_ready(self, timeout: float = 30) -> None:
        """Until ``size`` launchers wait (tests and benchmarks use this)."""
        self._start()
        async with asyncio.timeout(timeout):
            while len(self.ready) < self.size:
                await asyncio.sleep(0.005)

    def _start(self) -> None:
        if self._filler is None and not self._closed:
            self._filler = asyncio.create_task(self._fill_forever())

    async def _fill_forever(self) -> None:
        await asyncio.to_thread(self._remove_stale)
        while not self._closed:
            while len(self.ready) < self.size and not self._closed:
                try:
                    launcher = await self._make()
                except Exception as exc:
                    refused = isinstance(exc, LauncherFailed) and exc.exit_code == SETUP_FAILED
                    if self.isolate and refused:  # no root namespaces here: bwrap makes them
                        log.warning("sandbox launchers cannot make namespaces here (%s); "
                                    "bwrap will make them", exc)  # fmt: skip
                        self.isolate = False
                        continue
                    log.exception("starting a sandbox launcher failed; retrying later")
                    await asyncio.sleep(5)
                    break
                if self._closed:
                    await discard(launcher)
                else:
                    self.ready.append(launcher)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await self._wake.wait()

    async def _make(self) -> Launcher:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        filter_fd = seccomp.seccomp_fd(self.program)
        try:
            process = await asyncio.create_subprocess_exec(
                str(self.binary), str(read_end), *(["--isolate"] if self.isolate else []),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env={}, pass_fds=[read_end, filter_fd],
            )  # fmt: skip
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
            os.close(filter_fd)
        name = f"{PREFIX}{os.getpid()}-{new_id('l')}"
        launcher = Launcher(process, self.cgroup_cls(name), write_end, filter_fd, self.isolate)
        if not await _said_ready(process):
            await discard(launcher, made=False)  # stands it down, killed if need be
            raise LauncherFailed(process.returncode)
        try:
            await asyncio.to_thread(_enter, launcher)
        except BaseException:
            await discard(launcher)
            raise
        return launcher

    def _remove_stale(self) -> None:
        """Remove launcher cgroups whose host died: its pid (in the cgroup's name) is gone
        and nothing runs in them (its launchers and sandboxes died with it). Another
        live installation's are never touched, even one in another pid namespace."""
        for name in self.cgroup_cls.existing(PREFIX):
            host = name[len(PREFIX) :].split("-", 1)[0]
            if host.isdigit() and _alive(int(host)):
                continue
            cg = self.cgroup_cls(name)
            with contextlib.suppress(OSError):
                if cg.pid_count() == 0:
                    cg.remove()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._filler is not None:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
        while self.ready:
            await discard(self.ready.pop())


class LauncherFailed(errors.Unavailable):
    """A launcher exited (or hung) before it said ready; ``exit_code`` is its exit code."""

    def __init__(self, exit_code: int | None) -> None:
        super().__init__(f"a sandbox launcher failed at start (exit {exit_code})")
        self.exit_code = exit_code


async def _said_ready(process: asyncio.subprocess.Process) -> bool:
    """Read the launcher's one-byte "ready" (so the sandbox's supervisor never sees it)."""
    assert process.stdout is not None
    try:
        async with asyncio.timeout(10):
            return await process.stdout.readexactly(1) == b"R"
    except (asyncio.IncompleteReadError, TimeoutError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _enter(launcher: Launcher) -> None:
    """Make the launcher's cgroup (default limits until a create sets its own) and move
    the launcher in."""
    launcher.cgroup.create(launcher.limits)
    for procs in launcher.cgroup.join_paths():
        with open(procs, "w") as f:
            f.write(str(launcher.process.pid))


async def discard(launcher: Launcher, *, made: bool = True) -> None:
    """Stand a launcher down (unused, or dead) and remove its cgroup (``made``: it has
    one already)."""
    if launcher.control >= 0:
        os.close(launcher.control)  # EOF with no instruction: it exits
        launcher.control = -1
    try:  # its own exit, reaped by asyncio's child watcher (a kill() now would race it)
        async with asyncio.timeout(1):
            await launcher.process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            launcher.process.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await launcher.process.wait()
    if made:
        await asyncio.to_thread(launcher.cgroup.remove)
