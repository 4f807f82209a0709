"""Launchers waiting in fresh cgroups (compute/launchers.py, init/ulseed.c): a cold create
takes one and its sandbox is born inside its cgroup, with its own limits; unused ones
are stood down, with the host or at close, and nothing of theirs is left behind."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from underlay.compute import cgroups
from underlay.compute.drivers.bwrap import BwrapDriver
from underlay.compute.launchers import PREFIX, Launchers
from underlay.compute.models import Limits
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay

from .escape_helpers import alive, cgroup_pids, instance

ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(not ROOT, reason="launchers wait in cgroups: root only")


async def launchers_of(kernel: Kernel) -> Launchers:
    driver = (await kernel.compute()).driver
    assert isinstance(driver, BwrapDriver) and driver.launchers is not None
    return driver.launchers


def cgroup_names() -> set[str]:
    cls = cgroups.detect()
    assert cls is not None
    return set(cls.existing(PREFIX))


async def test_a_cold_create_is_born_in_a_waiting_launchers_cgroup_with_its_limits(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    launchers = await launchers_of(kernel)
    await launchers.wait_ready()
    waiting = {launcher.process.pid for launcher in launchers.ready}
    sbx = await ul.sandbox.create(limits={"memory_mb": 192, "pids": 64})
    assert launchers.taken == 1
    inst = await instance(kernel, sbx.id)
    assert inst.handle.process.pid in waiting  # the launcher became the sandbox's bwrap
    out = await ul.sandbox.commands.run(sbx.id, "sleep 30 & cat /proc/self/cgroup")
    assert out.exit_code == 0 and "underlay" not in out.stdout  # a cgroup namespace of its own
    pids = cgroup_pids(inst)
    assert inst.handle.process.pid in pids and len(pids) >= 3  # bwrap, init, the sleep
    cg = inst.handle.cgroup
    assert cg is not None and cg.name.startswith(PREFIX)
    if cg.version == 1:
        memory = Path(f"/sys/fs/cgroup/memory/underlay/{cg.name}/memory.limit_in_bytes")
        pids_max = Path(f"/sys/fs/cgroup/pids/underlay/{cg.name}/pids.max")
    else:
        memory = Path(f"/sys/fs/cgroup/underlay/{cg.name}/memory.max")
        pids_max = Path(f"/sys/fs/cgroup/underlay/{cg.name}/pids.max")
    assert memory.read_text().strip() == str(192 << 20)
    assert pids_max.read_text().strip() == "64"
    await ul.sandbox.destroy(sbx.id)
    assert not any(alive(p) for p in pids) and cg.name not in cgroup_names()


async def test_a_default_create_keeps_the_limits_its_launcher_waited_with(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    launchers = await launchers_of(kernel)
    await launchers.wait_ready()
    sbx = await ul.sandbox.create()
    assert launchers.taken == 1
    cg = (await instance(kernel, sbx.id)).handle.cgroup
    assert cg is not None and cg.name.startswith(PREFIX)
    base = "/sys/fs/cgroup/memory/underlay" if cg.version == 1 else "/sys/fs/cgroup/underlay"
    name = "memory.limit_in_bytes" if cg.version == 1 else "memory.max"
    assert Path(f"{base}/{cg.name}/{name}").read_text().strip() == str(Limits().memory_mb << 20)


PROBE_NETWORK = r"""
import errno, fcntl, json, os, socket, struct
server = socket.socket()
server.bind(("127.0.0.1", 0))  # the loopback is up
server.listen()
client = socket.create_connection(server.getsockname(), timeout=2)
try:  # SIOCSIFFLAGS on lo, flags 0: down
    fcntl.ioctl(socket.socket(), 0x8914, struct.pack("16sh", b"lo", 0) + bytes(22))
    down = "allowed"
except OSError as exc:
    down = errno.errorcode[exc.errno]
links = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:])
print(json.dumps({"host": socket.gethostname(), "net": os.readlink("/proc/self/ns/net"),
                  "ipc": os.readlink("/proc/self/ns/ipc"), "links": links, "down": down}))
"""


async def test_a_launcher_made_sandbox_has_its_own_network_ipc_and_uts(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    """The launcher made them before the create (so bwrap did not): still a network of
    the loopback only, up, that the sandbox cannot reconfigure, and one per sandbox."""
    launchers = await launchers_of(kernel)
    await launchers.wait_ready()
    seen = []
    for _ in range(2):
        sbx = await ul.sandbox.create()
        out = await ul.sandbox.commands.run(sbx.id, ["python3", "-c", PROBE_NETWORK])
        assert out.exit_code == 0, out.stderr
        seen.append(json.loads(out.stdout))
    assert launchers.taken == 2
    host = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("net", "ipc")}
    for probe in seen:
        assert (probe["host"], probe["links"], probe["down"]) == ("sandbox", ["lo"], "EPERM")
        assert probe["net"] != host["net"] and probe["ipc"] != host["ipc"]
    assert seen[0]["net"] != seen[1]["net"] and seen[0]["ipc"] != seen[1]["ipc"]


async def test_a_launcher_that_died_waiting_is_dropped_and_the_sandbox_spawned(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    launchers = await launchers_of(kernel)
    await launchers.wait_ready()
    dead = list(launchers.ready)
    for launcher in dead:
        os.kill(launcher.process.pid, 9)
    for launcher in dead:
        await launcher.process.wait()
    sbx = await ul.sandbox.create()
    assert (await ul.sandbox.commands.run(sbx.id, "echo spawned")).stdout == "spawned\n"
    cg = (await instance(kernel, sbx.id)).handle.cgroup
    assert cg is not None and cg.name == sbx.id  # the usual way: a cgroup of its own
    assert dead[0].cgroup.name not in cgroup_names()  # the dead one's is gone


async def test_where_launchers_cannot_make_namespaces_bwrap_makes_them(
    ul: AsyncUnderlay, kernel: Kernel, tmp_path: Path
) -> None:
    """A host that refuses a root process new namespaces: the launcher says so by
    exiting before it is ready, and launchers go on without making them."""
    driver = (await kernel.compute()).driver
    assert isinstance(driver, BwrapDriver) and driver.launchers is not None
    refusing = tmp_path / "ulseed-refusing"
    refusing.write_text(
        f'#!/bin/sh\n[ "$2" = --isolate ] && exit 125\nexec {driver.launchers.binary} "$@"\n'
    )
    refusing.chmod(0o755)
    await driver.launchers.close()
    driver.launchers = Launchers(refusing, driver.cgroup_cls, driver.filter, 1)  # type: ignore[arg-type]
    await driver.launchers.wait_ready()
    assert not driver.launchers.isolate and not driver.launchers.ready[0].isolated
    sbx = await ul.sandbox.create()
    out = await ul.sandbox.commands.run(sbx.id, ["python3", "-c", PROBE_NETWORK])
    assert driver.launchers.taken == 1 and out.exit_code == 0, out.stderr
    probe = json.loads(out.stdout)
    assert (probe["host"], probe["links"], probe["down"]) == ("sandbox", ["lo"], "EPERM")


async def test_unused_launchers_are_stood_down_at_close(kernel: Kernel) -> None:
    launchers = await launchers_of(kernel)
    await launchers.wait_ready()
    pids = [launcher.process.pid for launcher in launchers.ready]
    names = {launcher.cgroup.name for launcher in launchers.ready}
    assert len(pids) == launchers.size and names <= cgroup_names()
    await launchers.close()
    assert not any(alive(p) for p in pids)
    assert not names & cgroup_names()
    assert launchers.take() is None  # closed: the driver spawns the usual way


@pytest.mark.parametrize("compute_settings", [{"pool_size": 0, "launchers": 0}])
async def test_no_launchers_when_configured_off(ul: AsyncUnderlay, kernel: Kernel) -> None:
    launchers = await launchers_of(kernel)
    for _ in range(2):
        sbx = await ul.sandbox.create()
        assert (await ul.sandbox.commands.run(sbx.id, "echo hi")).stdout == "hi\n"
    assert launchers.taken == 0 and launchers.ready == []


async def test_cgroups_left_by_a_dead_host_are_removed(kernel: Kernel) -> None:
    cls = cgroups.detect()
    assert cls is not None
    stale = cls(PREFIX + "stale-test")
    stale.create(Limits())
    assert stale.name in cgroup_names()
    launchers = await launchers_of(kernel)
    await launchers.wait_ready()
    assert stale.name not in cgroup_names()


async def test_another_live_hosts_launcher_cgroups_are_left_alone(kernel: Kernel) -> None:
    """Two installations on one machine: the one that starts filling must not take the
    other's waiting launchers (or sandboxes born from them) for a dead host's."""
    cls = cgroups.detect()
    assert cls is not None
    other_host = await asyncio.create_subprocess_exec("sleep", "60")
    theirs = cls(f"{PREFIX}{other_host.pid}-l_theirs")
    try:
        theirs.create(Limits())
        for procs in theirs.join_paths():
            Path(procs).write_text(str(other_host.pid))
        launchers = await launchers_of(kernel)
        await launchers.wait_ready()
        assert theirs.name in cgroup_names() and alive(other_host.pid)
        other_host.kill()
        await other_host.wait()
        await asyncio.to_thread(launchers._remove_stale)  # as the next host to start would
        assert theirs.name not in cgroup_names()
        assert {ln.cgroup.name for ln in launchers.ready} <= cgroup_names()  # its own kept
    finally:
        if other_host.returncode is None:
            other_host.kill()
            await other_host.wait()
        theirs.remove()


async def test_a_cgroup_with_processes_is_never_taken_for_stale(kernel: Kernel) -> None:
    """Another installation in another pid namespace: the pid in its cgroups' names
    means nothing here, but its processes in them do."""
    cls = cgroups.detect()
    assert cls is not None
    elsewhere = await asyncio.create_subprocess_exec("sleep", "60")
    theirs = cls(f"{PREFIX}999999999-l_elsewhere")  # no such pid here
    try:
        theirs.create(Limits())
        for procs in theirs.join_paths():
            Path(procs).write_text(str(elsewhere.pid))
        launchers = await launchers_of(kernel)
        await asyncio.to_thread(launchers._remove_stale)
        assert theirs.name in cgroup_names() and alive(elsewhere.pid)
    finally:
        elsewhere.kill()
        await elsewhere.wait()
        theirs.remove()


async def test_a_bad_instruction_fails_with_its_reason_in_the_log(
    kernel: Kernel, tmp_path: Path
) -> None:
    launchers = await launchers_of(kernel)
    await launchers.wait_ready()
    launcher = launchers.take()
    assert launcher is not None
    log = tmp_path / "launch.log"
    missing = tmp_path / "no-such-dir"
    launcher.instruct("-", "-", log, {20: missing}, ["/bin/true"])
    assert await asyncio.wait_for(launcher.process.wait(), 10) == 125
    assert f"ulseed: {missing}: No such file or directory" in log.read_text()
    await asyncio.to_thread(launcher.cgroup.remove)


def test_launchers_die_with_their_host(tmp_path: Path) -> None:
    """A host that dies without closing anything (os._exit) takes its launchers along:
    no root process is left waiting for an instruction that will never come."""
    script = textwrap.dedent(f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2] / "src")!r})
        from underlay.compute import cgroups, seccomp
        from underlay.compute.initbin import static_binary
        from underlay.compute.launchers import Launchers

        async def main():
            seed = static_binary("ulseed", __import__("pathlib").Path({str(tmp_path)!r}))
            ls = Launchers(seed, cgroups.detect(), seccomp.build_filter(), 2)
            await ls.wait_ready()
            print(" ".join(str(l.process.pid) for l in ls.ready), flush=True)
            os._exit(0)

        asyncio.run(main())
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2
    for _ in range(500):
        if not any(alive(p) for p in pids):
            break
        time.sleep(0.01)
    assert not any(alive(p) for p in pids)
    cls = cgroups.detect()
    assert cls is not None
    for name in cgroup_names():  # their cgroups, empty now: the next host removes them
        cls(name).remove()
