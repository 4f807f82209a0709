"""Launchers waiting in fresh cgroups (compute/launchers.py, init/ulseed.c): a cold create
takes one and its sandbox is born inside its cgroup, with its own limits; unused ones
are stood down, with the host or at close, and nothing of theirs is left behind."""

from __future__ import annotations

import asyncio
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
