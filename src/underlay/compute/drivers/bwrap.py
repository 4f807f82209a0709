"""The default sandbox driver: bubblewrap namespaces, seccomp, cgroups, a static init.

Each sandbox is one ``bwrap`` process with new user, PID, mount, network, IPC and UTS
namespaces (and cgroup namespace where the kernel has it), all capabilities dropped,
a cleared environment, nested user namespaces disabled, a new session (no terminal
injection), and death with its parent. Its root is read-only (the template), with a
size-capped writable ``/workspace`` and ``/tmp``; ``/proc`` shows only its own
processes and ``/dev`` only the harmless nodes. A seccomp filter (``compute.seccomp``)
denies the kernel interfaces sandboxed code has no business using.

Inside runs ``ulinit``, a small static supervisor that starts commands on request over
a pipe (``compute.supervisor``). When the host runs as root, every sandbox also gets
its own unprivileged host uid (so an escape lands nowhere) and a cgroup with memory,
pids and CPU limits, joined before ``bwrap`` starts (by ``ullaunch``, a static helper,
so that the host process can spawn with vfork instead of copying itself). bwrap's own
file descriptors bind the workspace, ``/etc`` and ``ulinit``, so the uid needs no
access to the host's paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from underlay import errors
from underlay.compute import cgroups, seccomp
from underlay.compute.files import WorkspaceFiles
from underlay.compute.initbin import static_binary, ulinit_path
from underlay.compute.interface import Instance, InstanceSpec, SandboxDriver, Usage
from underlay.compute.launchers import Launcher, Launchers, discard
from underlay.compute.models import WORKSPACE
from underlay.compute.supervisor import Supervisor
from underlay.compute.templates import SANDBOX_USER, Template, TemplateStore
from underlay.compute.workspace import Workspace, can_mount

T = TypeVar("T")
log = logging.getLogger("underlay.compute.bwrap")
READY_TIMEOUT_S = 10.0
DEFAULT_LAUNCHERS = 2  # compute.launchers


@dataclass
class _Handle:
    process: asyncio.subprocess.Process
    cgroup: cgroups.Cgroup | None
    workspace: Workspace


class BwrapDriver(SandboxDriver):
    name = "bwrap"

    def __init__(self, home: Path, *, bwrap: str = "bwrap") -> None:
        self.root = can_mount()
        self.dir = runtime_dir(home, self.root)
        self.bwrap = bwrap
        shared = self.dir.parent if self.root else self.dir
        self.store = TemplateStore(self.dir, shared / "default-etc")
        self.cgroup_cls = cgroups.detect()
        self.init = ulinit_path(shared / "bin")
        self.fwd = static_binary("ulfwd", shared / "bin")
        self.launcher = static_binary("ullaunch", shared / "bin")
        self.filter = seccomp.build_filter()
        self.launchers: Launchers | None = None
        if self.root and self.cgroup_cls is not None:
            seed = static_binary("ulseed", shared / "bin")
            self.launchers = Launchers(seed, self.cgroup_cls, self.filter, DEFAULT_LAUNCHERS)

    def keep_launchers(self, count: int) -> None:
        if self.launchers is not None:
            self.launchers.size = count

    def templates(self) -> list[str]:
        return self.store.names()

    def _workspace(self, spec: InstanceSpec) -> Workspace:
        kind = ("ext4" if spec.persistent else "tmpfs") if self.root else "dir"
        return Workspace(self.dir / "sandboxes" / spec.id, kind)

    def egress_socket(self, spec: InstanceSpec) -> Path:
        root = self._workspace(spec).root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o711)
        return root / "egress.sock"

    async def start(self, spec: InstanceSpec) -> Instance:
        template = self.store.get(spec.template)
        ws = self._workspace(spec)
        if ws.kind == "ext4":
            await asyncio.to_thread(ws.prepare, spec.limits.disk_mb, spec.uid, spec.gid)
        else:
            ws.prepare(spec.limits.disk_mb, spec.uid, spec.gid)
        try:
            process, cg = await self._begin(spec, template, ws)
        except BaseException:
            ws.release()
            raise
        handle = _Handle(process, cg, ws)
        assert process.stdout is not None and process.stdin is not None
        sup = Supervisor(process.stdout, process.stdin)
        inst = Instance(
            spec=spec,
            supervisor=sup,
            files=WorkspaceFiles(ws.path, spec.uid, spec.gid),
            workspace_dir=ws.path,
            started_at=time.time(),
            enforced=cg is not None,
            handle=handle,
        )
        try:
            await sup.wait_ready(READY_TIMEOUT_S)
        except BaseException as exc:
            said = (ws.root / "bwrap.log").read_text(errors="replace").strip()[-500:]
            await self.stop(inst)
            if isinstance(exc, errors.UnderlayError | Exception):
                raise errors.Unavailable(f"the sandbox did not start: {said or exc}") from exc
            raise
        return inst

    async def _begin(
        self, spec: InstanceSpec, template: Template, ws: Workspace
    ) -> tuple[asyncio.subprocess.Process, cgroups.Cgroup | None]:
        """bwrap started for ``spec``, with its cgroup: by a waiting launcher when one is
        ready, else spawned. A launcher that died waiting (killed by hand, say) is
        dropped and the sandbox spawned instead; on any failure no cgroup is left."""
        launcher = self.launchers.take() if self.launchers is not None else None
        if launcher is not None:
            try:
                if launcher.limits != spec.limits:  # its cgroup gets the sandbox's limits
                    await _finished(launcher.cgroup.create, spec.limits)
                return self._launch(launcher, spec, template, ws), launcher.cgroup
            except BrokenPipeError:
                log.warning("a sandbox launcher had died; starting %s without one", spec.id)
                await discard(launcher)
            except BaseException:
                await asyncio.shield(discard(launcher))
                raise
        cg = self.cgroup_cls(spec.id) if self.cgroup_cls else None
        try:
            if cg:  # off the event loop: on cgroup v1 a new cgroup is five mkdirs, ~2.5 ms
                await _finished(cg.create, spec.limits)
            return await self._spawn(spec, template, ws, cg), cg
        except BaseException:
            if cg:
                await asyncio.shield(asyncio.to_thread(cg.remove))
            raise

    async def _spawn(
        self, spec: InstanceSpec, template: Template, ws: Workspace, cg: cgroups.Cgroup | None
    ) -> asyncio.subprocess.Process:
        with self._fds(template, ws, spec.egress) as fds:
            argv = self._argv(spec, template, fds)
            ids = self._ids(spec)
            launch = [str(self.launcher), *ids, *(cg.join_paths() if cg else []), "--"]
            with open(ws.root / "bwrap.log", "wb") as log_file:  # noqa: ASYNC230 - local, tiny
                spawn = asyncio.ensure_future(
                    asyncio.create_subprocess_exec(
                        *launch,
                        *argv,
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=log_file,
                        env={},
                        pass_fds=list(fds.values()),
                    )
                )
                try:
                    return await asyncio.shield(spawn)
                except asyncio.CancelledError:
                    # CPython 3.11 never finishes a subprocess cancelled while its pipes
                    # connect: let the spawn complete, then kill it and drop its pipes
                    # (the caller removes the cgroup, which kills anything left).
                    _abandon(await spawn)
                    raise

    def _launch(
        self, launcher: Launcher, spec: InstanceSpec, template: Template, ws: Workspace
    ) -> asyncio.subprocess.Process:
        """Have a waiting launcher exec bwrap: it opens the same paths ``_fds`` would,
        onto the numbers the arguments name."""
        paths = self._paths(template, ws, spec.egress)
        fds = launcher.targets(list(paths))
        argv = self._argv(
            spec, template, {**fds, "seccomp": launcher.seccomp_fd}, made=launcher.isolated
        )
        opens = {fds[name]: path for name, path in paths.items()}
        uid, gid = self._ids(spec)
        launcher.instruct(uid, gid, ws.root / "bwrap.log", opens, argv)
        return launcher.process

    def _ids(self, spec: InstanceSpec) -> tuple[str, str]:
        return (str(spec.uid), str(spec.gid)) if self.root else ("-", "-")

    def _paths(self, template: Template, ws: Workspace, egress: bool) -> dict[str, Path]:
        """What bwrap binds from descriptors: only what some argument consumes (others
        would leak into the sandbox's init)."""
        paths = {"ws": ws.path, "init": self.init}
        if egress:
            paths["fwd"] = self.fwd
        if template.rootfs is not None:
            paths["root"] = template.rootfs
        if template.etc is not None:
            paths["etc"] = template.etc
        return paths

    @contextlib.contextmanager
    def _fds(self, template: Template, ws: Workspace, egress: bool) -> Iterator[dict[str, int]]:
        """The descriptors of ``_paths`` and the seccomp filter, open for a spawn."""
        fds: dict[str, int] = {}
        try:
            for name, path in self._paths(template, ws, egress).items():
                fds[name] = os.open(path, os.O_PATH)
            fds["seccomp"] = seccomp.seccomp_fd(self.filter)
            yield fds
        finally:
            for fd in fds.values():
                os.close(fd)

    def _argv(
        self, spec: InstanceSpec, template: Template, fds: dict[str, int], made: bool = False
    ) -> list[str]:
        """bwrap's arguments; ``made``: the launcher already made the network, IPC and
        UTS namespaces (hostname ``sandbox``), which bwrap then inherits."""
        uid, gid = SANDBOX_USER[1], SANDBOX_USER[2]
        tmp_bytes = str(min(spec.limits.disk_mb, spec.limits.memory_mb) << 20)
        argv = [
            self.bwrap, "--unshare-user", "--unshare-pid", "--unshare-cgroup-try",
            *(() if made else ("--unshare-net", "--unshare-ipc", "--unshare-uts")),
            "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--clearenv", "--uid", str(uid), "--gid", str(gid),
            *(() if made else ("--hostname", "sandbox")),
        ]  # fmt: skip
        if template.rootfs is None:
            argv += ["--ro-bind", "/usr", "/usr"]
            for link in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
                if os.path.islink(f"/{link}"):
                    argv += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
            argv += ["--ro-bind-fd", str(fds["etc"]), "/etc"]
        else:
            argv += ["--ro-bind-fd", str(fds["root"]), "/"]
        argv += [
            "--proc", "/proc", "--dev", "/dev",
            "--size", tmp_bytes, "--tmpfs", "/dev/shm",
            "--size", tmp_bytes, "--tmpfs", "/tmp",
            "--dir", "/run", "--tmpfs", "/.ul",
            "--bind-fd", str(fds["ws"]), WORKSPACE,
            "--ro-bind-fd", str(fds["init"]), "/.ul/init",
            "--remount-ro", "/.ul", "--remount-ro", "/",
            "--seccomp", str(fds["seccomp"]),
            "--chdir", WORKSPACE,
            "--", "/.ul/init",
        ]  # fmt: skip
        if spec.egress:
            at = argv.index("--remount-ro")
            argv[at:at] = [
                "--ro-bind-fd", str(fds["fwd"]), "/.ul/fwd",
                "--bind", str(self.egress_socket(spec)), "/.ul/egress.sock",
            ]  # fmt: skip
        return argv

    async def close(self) -> None:
        """Stop the waiting launchers; remove the runtime directory when nothing in it
        needs keeping."""
        if self.launchers is not None:
            await self.launchers.close()
        sandboxes = self.dir / "sandboxes"
        keep = [p for p in (sandboxes, self.dir / "templates") if p.is_dir() and any(p.iterdir())]
        if self.root and not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    async def stop(self, inst: Instance) -> None:
        h: _Handle = inst.handle
        await inst.supervisor.close()
        if h.cgroup:
            # bwrap is in the cgroup too: its exit is left to asyncio's child watcher to
            # reap (a kill now would poll, reap it first, and have the watcher warn)
            await asyncio.to_thread(h.cgroup.kill_all)
        elif h.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                h.process.kill()
        try:
            await asyncio.wait_for(h.process.wait(), 5)
        except TimeoutError:  # a pipe still held open somewhere: stop waiting for it
            _abandon(h.process)
        # off the event loop, as the cgroup's removal: it reads the mount table and
        # unmounts, which other sandboxes' creates should not wait behind
        await asyncio.to_thread(h.workspace.release)
        if h.cgroup:
            await asyncio.to_thread(h.cgroup.remove)

    async def destroy(self, inst: Instance) -> None:
        await self.stop(inst)
        await asyncio.to_thread(inst.handle.workspace.purge)

    async def purge(self, spec: InstanceSpec) -> None:
        self._workspace(spec).purge()

    async def pause(self, inst: Instance) -> None:
        h: _Handle = inst.handle
        if not h.cgroup:
            raise errors.Unavailable("pausing needs cgroups (run underlay as root)")
        await asyncio.to_thread(h.cgroup.freeze)

    async def resume(self, inst: Instance) -> None:
        h: _Handle = inst.handle
        if h.cgroup:
            await asyncio.to_thread(h.cgroup.thaw)

    def cpu_seconds(self, inst: Instance) -> float:
        h: _Handle = inst.handle
        return h.cgroup.cpu_seconds() if h.cgroup else 0.0

    def usage(self, inst: Instance) -> Usage:
        h: _Handle = inst.handle
        used = h.workspace.used_bytes()
        if not h.cgroup:
            return Usage(disk_used_bytes=used)
        mem, peak = h.cgroup.memory()
        return Usage(
            cpu_seconds=h.cgroup.cpu_seconds(),
            memory_bytes=mem,
            memory_peak_bytes=peak,
            disk_used_bytes=used,
            pids=h.cgroup.pid_count(),
        )


def runtime_dir(home: Path, as_root: bool) -> Path:
    """Where this installation keeps sandboxes, templates and the supervisor binary.

    As root, sandboxes run under their own uids, and bubblewrap resolves every path it
    binds as that uid: so the directory is ``/var/lib/underlay/<digest of home>``, whose
    parents only let others pass through (mode 0711), never list. Each workspace mount
    itself is mode 0700 and owned by its sandbox's uid. Otherwise: ``home/compute``.
    """
    if not as_root:
        return home / "compute"
    base = Path(os.environ.get("UNDERLAY_COMPUTE_DIR", "/var/lib/underlay"))
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    path = base / digest
    path.mkdir(parents=True, exist_ok=True)
    for p in (base, path):
        os.chmod(p, 0o711)
    (path / "home").write_text(str(home.resolve()) + "\n")  # which installation owns it
    return path


async def _finished(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread. A cancelled caller still waits until it finished, so
    that what it made is cleaned up after it, never while it is being made."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise


def _abandon(process: asyncio.subprocess.Process) -> None:
    """Kill ``process`` and close its pipes without waiting for them to drain."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    transport = getattr(process, "_transport", None)  # no public way to drop the pipes
    if transport is not None:
        transport.close()
