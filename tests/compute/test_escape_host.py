"""Escape suite, part two: signals and loopback services of the host, environment and
host uids, resource bombs (memory, processes, disk, /dev/shm, CPU) and races on the files
API. Part one (``test_escape.py``) surveys what a sandbox sees; the method is the same:
every check proves its bait is real, then that the sandbox cannot reach it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import stat
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay

from .escape_helpers import (
    FIFO_SWAPPER,
    SWAPPER,
    UID_BASE,
    alive,
    caps,
    cgroup_pids,
    host_cmdline,
    instance,
    run_json,
    sh,
    status_fields,
)


@pytest.mark.parametrize("target", ["root_process", "same_host_uid_process", "kill_minus_one"])
async def test_signals_cannot_reach_host_processes(
    ul: AsyncUnderlay, sbx: Any, kernel: Kernel, target: str
) -> None:
    uid = (await instance(kernel, sbx.id)).spec.uid
    argv = ["sleep", "300"]
    if target != "root_process":  # the very host uid the sandbox runs as: only the pid ns
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
    host = await asyncio.create_subprocess_exec(*argv)
    try:
        await asyncio.sleep(0.05)
        want_uid = 0 if target == "root_process" else uid
        assert status_fields(Path(f"/proc/{host.pid}/status").read_text())["Uid"].split()[0] == str(
            want_uid
        )
        if target == "kill_minus_one":
            with contextlib.suppress(errors.UnderlayError):  # it may kill its own supervisor
                await sh(ul, sbx.id, "kill -KILL -1", timeout=10)
        else:
            out = await sh(
                ul,
                sbx.id,
                f"kill -0 {host.pid}; echo $?; kill -KILL {host.pid}; "
                f"echo $?; kill -STOP {host.pid}; echo $?",
            )
            assert out.stdout.split() == ["1", "1", "1"], out
            assert out.stderr.count("No such process") == 3, out.stderr
        await asyncio.sleep(0.2)
        assert host.returncode is None
        assert status_fields(Path(f"/proc/{host.pid}/status").read_text())["State"][0] == "S"
    finally:
        host.kill()
        await host.wait()


CONNECT = r"""
import json, socket, sys
kind, where = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET if kind == "tcp" else socket.AF_UNIX)
s.settimeout(3)
try:
    s.connect(("127.0.0.1", int(where)) if kind == "tcp" else "\0" + where)
    e = 0
except OSError as exc:
    e = exc.errno
print(json.dumps(e))
"""


@pytest.mark.parametrize("kind", ["tcp", "abstract_unix"])
async def test_host_loopback_services_are_unreachable(
    ul: AsyncUnderlay, sbx: Any, kind: str
) -> None:
    accepted: list[str] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(kind)
        writer.close()

    name = f"ul-escape-{uuid.uuid4().hex}"
    if kind == "tcp":
        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        where = str(server.sockets[0].getsockname()[1])
    else:
        server = await asyncio.start_unix_server(on_connect, path="\0" + name)
        where = name
    async with server:
        assert await run_json(ul, sbx.id, CONNECT, kind, where) == errno.ECONNREFUSED
        await asyncio.sleep(0.2)
        assert accepted == []
        # the bait is real: the host itself reaches the server
        if kind == "tcp":
            _, w = await asyncio.open_connection("127.0.0.1", int(where))
        else:
            _, w = await asyncio.open_unix_connection("\0" + name)
        w.close()
        for _ in range(50):
            if accepted:
                break
            await asyncio.sleep(0.01)
        assert accepted == [kind]


async def test_host_environment_does_not_leak(
    ul: AsyncUnderlay, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = f"ul-env-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("UL_ESCAPE_HOST_SECRET", value)
    sbx = await ul.sandbox.create(timeout=60)
    script = (
        "import json, os\n"
        "envs = {}\n"
        "for p in [p for p in os.listdir('/proc') if p.isdigit()] + ['self']:\n"
        "    envs[p] = open('/proc/%s/environ' % p, 'rb').read().decode()\n"
        "print(json.dumps({'env': dict(os.environ), 'environs': envs}))\n"
    )
    got = await run_json(ul, sbx.id, script)
    dumped = json.dumps(got)
    assert value not in dumped and "UL_ESCAPE_HOST_SECRET" not in dumped
    assert got["environs"]["1"] == "" and "HOME=/workspace" in got["environs"]["self"]


# ======================================================================================
# host uids


async def test_sandbox_files_belong_to_an_unprivileged_host_uid(
    ul: AsyncUnderlay, sbx: Any, kernel: Kernel
) -> None:
    inst = await instance(kernel, sbx.id)
    out = await sh(ul, sbx.id, "id -u; echo hi > made; mkdir dir; ln -s /etc/shadow link")
    assert out.stdout.split() == ["1000"]
    assert inst.spec.uid >= UID_BASE and inst.spec.uid == inst.spec.gid
    for name in ("made", "dir", "link"):
        st = os.lstat(inst.workspace_dir / name)
        assert (st.st_uid, st.st_gid) == (inst.spec.uid, inst.spec.gid), name
    st = os.stat(inst.workspace_dir)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (inst.spec.uid, 0o700)


async def test_sandbox_processes_run_as_the_unprivileged_host_uid(
    ul: AsyncUnderlay, sbx: Any, kernel: Kernel
) -> None:
    inst = await instance(kernel, sbx.id)
    await ul.sandbox.commands.run(sbx.id, "sleep 30", background=True)
    await asyncio.sleep(0.1)
    pids = cgroup_pids(inst)
    cmds = {host_cmdline(p).split()[0] for p in pids}
    assert len(pids) >= 4 and {"bwrap", "/.ul/init", "sleep"} <= cmds, cmds
    for pid in pids:
        st = status_fields(Path(f"/proc/{pid}/status").read_text())
        assert st["Uid"].split() == [str(inst.spec.uid)] * 4, (pid, st["Uid"])
        assert st["Gid"].split() == [str(inst.spec.gid)] * 4 and st["Groups"] == ""
        assert caps(st)["CapEff"] == caps(st)["CapPrm"] == 0, (pid, caps(st))


# ======================================================================================
# resource limits


async def test_memory_bomb_is_killed_inside_its_limit(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(timeout=60, limits={"memory_mb": 64})
    out = await ul.sandbox.commands.run(
        sbx.id, ["python3", "-c", "x = b'\\1' * (512 << 20); print(len(x))"], timeout=30
    )
    assert out.exit_code == 137 or "MemoryError" in out.stderr, out
    assert str(512 << 20) not in out.stdout
    m = await ul.sandbox.metrics(sbx.id)
    assert 32 << 20 < m.memory_peak_bytes <= 64 << 20, m
    assert (await sh(ul, sbx.id, "echo alive")).stdout == "alive\n"


async def test_fork_bomb_hits_the_pids_limit(ul: AsyncUnderlay, kernel: Kernel) -> None:
    sbx = await ul.sandbox.create(timeout=60, limits={"pids": 32})
    inst = await instance(kernel, sbx.id)
    out = await sh(ul, sbx.id, "for i in $(seq 200); do sleep 5 & done; echo all-started", 20)
    assert "all-started" not in out.stdout and "fork" in out.stderr.lower(), out
    assert (await ul.sandbox.metrics(sbx.id)).pids <= 32
    pids = cgroup_pids(inst)
    assert 20 < len(pids) <= 32, len(pids)  # it did fork, up to the limit and no further
    host = await asyncio.create_subprocess_exec("true")  # the host still forks
    assert await host.wait() == 0
    assert (await ul.sandbox.destroy(sbx.id)).state == "destroyed"
    assert not any(alive(p) for p in pids) and cgroup_pids(inst) == set()


@pytest.mark.parametrize("where", ["workspace", "tmp"])
async def test_disk_fill_stops_at_disk_mb(ul: AsyncUnderlay, kernel: Kernel, where: str) -> None:
    sbx = await ul.sandbox.create(timeout=60, limits={"disk_mb": 8})
    path = "/workspace/fill" if where == "workspace" else "/tmp/fill"
    out = await sh(ul, sbx.id, f"head -c 50M /dev/zero > {path}; stat -c %s {path}")
    assert "No space left on device" in out.stderr, out
    assert int(out.stdout.split()[-1]) <= 8 << 20
    ws = (await instance(kernel, sbx.id)).workspace_dir
    vfs = os.statvfs(ws)  # the host-side mount itself is capped
    assert vfs.f_blocks * vfs.f_frsize <= 8 << 20
    assert (await ul.sandbox.metrics(sbx.id)).disk_used_bytes <= 8 << 20
    assert (await sh(ul, sbx.id, f"rm {path}; echo ok > small")).exit_code == 0  # usable again


async def test_dev_shm_fill_is_bounded_by_the_memory_limit(ul: AsyncUnderlay) -> None:
    # /dev is bwrap's own tmpfs: not capped by disk_mb, but its pages are charged to the
    # sandbox's memory cgroup, so filling it ends inside the sandbox, never on the host
    sbx = await ul.sandbox.create(timeout=60, limits={"memory_mb": 64, "disk_mb": 8})
    with contextlib.suppress(errors.Unavailable):
        await sh(ul, sbx.id, "head -c 200M /dev/zero > /dev/shm/fill; echo rc=$?", 20)
    m = await ul.sandbox.metrics(sbx.id)
    assert m.memory_peak_bytes <= 64 << 20, m
    assert (await ul.sandbox.destroy(sbx.id)).state == "destroyed"


async def test_cpu_hog_is_throttled_to_its_quota(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(timeout=60, limits={"cpus": 0.2})
    before = (await ul.sandbox.metrics(sbx.id)).cpu_seconds
    t0 = time.monotonic()
    await sh(
        ul, sbx.id, "for i in 1 2 3 4; do timeout 1.5 sh -c 'while :; do :; done' & done; wait", 15
    )
    wall = time.monotonic() - t0
    used = (await ul.sandbox.metrics(sbx.id)).cpu_seconds - before
    assert 1.4 < wall < 5 and 0.05 < used <= 0.5, (wall, used)


# ======================================================================================
# the files API against symlinks, FIFOs and races planted by the sandbox


def _host_marker_paths(marker: str) -> list[Path]:
    found = []
    for d in ("/", "/tmp", "/etc", "/root", "/var/lib/underlay"):
        found += [p for p in Path(d).iterdir() if marker in p.name]
    return found


async def test_files_api_refuses_planted_symlinks_and_fifos(ul: AsyncUnderlay, sbx: Any) -> None:
    marker = f"ul-plant-{uuid.uuid4().hex}"
    bait = Path(f"/tmp/{marker}-host")
    bait.write_text("HOST-SECRET")
    try:
        await sh(
            ul,
            sbx.id,
            f"ln -s / rootlink; ln -s /etc etclink; ln -s {bait} hostfile; "
            "mkfifo fifo; mkdir d; ln -s /root d/r",
        )
        attempts: list[Awaitable[Any]] = [
            ul.sandbox.files.read(sbx.id, "hostfile"),
            ul.sandbox.files.read(sbx.id, "etclink/shadow"),
            ul.sandbox.files.read(sbx.id, "fifo"),
            ul.sandbox.files.write(sbx.id, "fifo", "x"),
            ul.sandbox.files.write(sbx.id, f"rootlink/tmp/{marker}", "x"),
            ul.sandbox.files.write(sbx.id, f"d/r/{marker}", "x"),
            ul.sandbox.files.write(sbx.id, "hostfile", "overwritten"),
            ul.sandbox.files.list(sbx.id, "etclink"),
            ul.sandbox.files.list(sbx.id, "d/r", depth=3),
        ]
        for attempt in attempts:
            with pytest.raises(errors.InvalidInput):
                await asyncio.wait_for(attempt, 5)  # a FIFO must not hang the host either
        listing = await ul.sandbox.files.list(sbx.id, depth=3)
        assert {f.path: f.type for f in listing.items}["/workspace/rootlink"] == "symlink"
        assert not any(f.name in {"shadow", "passwd", "root"} for f in listing.items)
        await ul.sandbox.files.remove(sbx.id, "hostfile")
        await ul.sandbox.files.remove(sbx.id, "etclink", recursive=True)
        assert bait.read_text() == "HOST-SECRET" and Path("/etc/passwd").is_file()
        assert _host_marker_paths(marker) == [bait]
    finally:
        bait.unlink()


async def test_files_api_survives_a_symlink_swap_race(ul: AsyncUnderlay, sbx: Any) -> None:
    marker = f"ul-race-{uuid.uuid4().hex}"
    decoy, victim = Path(f"/tmp/{marker}-decoy"), Path(f"/tmp/{marker}-victim")
    decoy.write_text("HOST-SECRET")
    victim.write_text("keep me")
    outcomes: dict[str, int] = {}
    try:
        bg = await ul.sandbox.commands.run(
            sbx.id, ["python3", "-c", SWAPPER, marker], background=True
        )
        for _ in range(50):
            if "ready" in (await ul.sandbox.commands.output(sbx.id, bg.id, wait=0.2)).stdout:
                break
        f = ul.sandbox.files
        for _ in range(100):
            ops: list[Awaitable[Any]] = [
                f.write(sbx.id, f"race_tmp/{marker}", "x"),
                f.write(sbx.id, f"race_root/tmp/{marker}", "x"),
                f.write(sbx.id, f"race_root/root/{marker}", "x"),
                f.write(sbx.id, f"race_etc/{marker}", "x"),
                f.read(sbx.id, f"race_tmp/{marker}-decoy"),
                f.list(sbx.id, "race_etc"),
                f.remove(sbx.id, f"race_tmp/{marker}-victim"),
            ]
            for op in ops:
                try:
                    res = await op
                except errors.UnderlayError as exc:
                    outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                    continue
                outcomes["ok"] = outcomes.get("ok", 0) + 1
                dumped = res.model_dump_json() if res is not None else ""
                assert "HOST-SECRET" not in dumped and '"shadow"' not in dumped
        await f.write(sbx.id, "stop", "")
        for _ in range(50):  # a read returns at once while output is pending: pace it
            done = await ul.sandbox.commands.output(sbx.id, bg.id)
            if "swaps" in done.stdout:
                break
            await asyncio.sleep(0.2)
        swaps = int(done.stdout.split("swaps")[1].split()[0])
        assert swaps >= 1000 and outcomes.get("InvalidInput", 0) > 0, (swaps, outcomes)
        assert decoy.read_text() == "HOST-SECRET" and victim.read_text() == "keep me"
        assert sorted(_host_marker_paths(marker)) == sorted([decoy, victim]), outcomes
    finally:
        for p in _host_marker_paths(marker):
            p.unlink()


async def test_recursive_remove_racing_a_fifo_symlink_never_blocks_the_host(
    ul: AsyncUnderlay, sbx: Any
) -> None:
    """files.remove(recursive=True) must not be steerable into open()ing a FIFO.

    The sandbox flips ``victim/dN`` between a directory and a symlink to ``victim/f``, a
    FIFO. A walker that opens entries without O_NOFOLLOW|O_NONBLOCK (shutil.rmtree opens
    ``os.open(name, O_RDONLY, dir_fd=...)`` after its lstat) blocks in open() until a
    writer appears, and the files API runs on the kernel's event loop: every syscall of
    every tenant would stop for as long as the sandbox likes. Here the sandbox releases
    the FIFO after a few seconds so the test ends; a hostile one never would.
    """
    race_for, release_after = 2.5, 3.5
    bg = await ul.sandbox.commands.run(
        sbx.id, ["python3", "-c", FIFO_SWAPPER, str(race_for), str(release_after)], background=True
    )
    for _ in range(50):
        if "ready" in (await ul.sandbox.commands.output(sbx.id, bg.id, wait=0.2)).stdout:
            break
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    slowest, attempts, end = 0.0, 0, time.monotonic() + race_for - 0.5
    try:
        while time.monotonic() < end:
            t0 = time.monotonic()
            with contextlib.suppress(errors.UnderlayError):
                await ul.sandbox.files.remove(sbx.id, "victim", recursive=True)
            attempts += 1
            slowest = max(slowest, time.monotonic() - t0)
            await asyncio.sleep(0)
    finally:
        tick.cancel()
    out = ""
    for _ in range(60):  # each read returns at once when output is pending: pace it
        res = await ul.sandbox.commands.output(sbx.id, bg.id)
        out = res.stdout
        if "swaps" in out or not res.running:
            break
        await asyncio.sleep(0.2)
    assert "swaps" in out, (out, res.stderr, res.exit_code)
    assert "HOST-OPENED-FIFO" not in out, (
        f"the host opened the sandbox's FIFO during files.remove and blocked the kernel's "
        f"event loop for {max(gaps, default=0.0):.1f} s (one remove took {slowest:.1f} s, attempt "
        f"{attempts})"
    )
    assert slowest < 1.0 and max(gaps, default=0.0) < 1.0, (slowest, max(gaps, default=0.0))
    assert attempts >= 10, attempts  # the race was run, not skipped
