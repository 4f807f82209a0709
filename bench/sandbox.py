"""Sandboxes: create → first command's output, cold and warm, next to plain bwrap and podman.

Run from the project root, as root (like the compute tests):

    .venv/bin/python bench/sandbox.py [--runs 200] [--podman-runs 50] [--seconds 5]
                                      [--creators 4] [--pool 4] [--profile]

Everything runs on one root file system directory: the template ``bench`` (Debian
bookworm minbase plus python3), built once with underlay's own builder (debootstrap)
in a dedicated home (default /tmp/underlay-bench/home) and reused by later runs.
underlay is measured in-process, as an embedded SDK user sees it (``AsyncUnderlay``
over ``LocalTransport``, every call through the whole ``Kernel.invoke`` chain):

- cold: ``sandbox.create`` then ``commands.run(id, "echo hi")`` with no warm pool;
  timed from just before create until the output is back; destroyed after (not timed);
- warm: the same with a warm pool of ``--pool`` sandboxes of the template, waited full
  before each timed create (so create is a hand-out);
- plain bwrap: one ``bwrap`` with the same namespaces on the same root running
  ``/bin/echo hi``, timed from spawn to output (asyncio subprocess, like the driver);
- podman: ``podman run --rm --network none --rootfs DIR /bin/echo hi``, spawn to output,
  with whatever workaround this host needs (installed with apt-get when missing);
- round-trip: ``commands.run(id, "true")`` into one persistent sandbox;
- creates/s: ``--creators`` concurrent loops of create + destroy for ``--seconds``,
  without and with the warm pool; the better sustained rate is reported.

Prints a table, then one JSON line. ``--profile`` instead prints where the cold path's
time goes (driver phases and the kernel chain around them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from underlay.config import Config  # noqa: E402
from underlay.kernel.kernel import Kernel  # noqa: E402
from underlay.sdk.client import AsyncUnderlay  # noqa: E402
from underlay.sdk.transports import LocalTransport  # noqa: E402

TEMPLATE = "bench"
CGROUP = Path("/sys/fs/cgroup")
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float], q: float) -> float:
    return round(pct(values, q) * 1000, 2)


def say(*args: Any) -> None:
    print(*args, flush=True)


# -- underlay, in-process ------------------------------------------------------------------


LAUNCHERS: list[int] = []  # --launchers, when given (else the configuration's default)


async def open_sdk(home: Path, pool: int) -> tuple[Kernel, AsyncUnderlay]:
    settings: dict[str, Any] = {"pool_size": pool, "pool_template": TEMPLATE}
    if LAUNCHERS:
        settings["launchers"] = LAUNCHERS[0]
    kernel = await Kernel.open(Config.load(home=home, compute=settings))
    return kernel, AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))


async def ensure_template(home: Path) -> Path:
    """The rootfs of template ``bench``, built with underlay's builder when missing."""
    kernel, ul = await open_sdk(home, 0)
    try:
        driver = (await kernel.compute()).driver
        if TEMPLATE not in driver.templates():
            say(f"building template {TEMPLATE!r} with debootstrap (1-3 minutes, once) ...")
            t0 = time.perf_counter()
            build = asyncio.create_task(
                ul.sandbox.template_build(name=TEMPLATE, include=["python3"])
            )
            while not build.done():
                await asyncio.wait({build}, timeout=15)
                if not build.done():
                    say(f"  ... still building ({time.perf_counter() - t0:.0f} s)")
            build.result()
            say(f"  built in {time.perf_counter() - t0:.0f} s")
        return Path(driver.store.path_for(TEMPLATE))
    finally:
        await kernel.close()


async def create_first_exec(ul: AsyncUnderlay) -> tuple[float, float]:
    """Seconds from just before ``sandbox.create`` until ``echo hi``'s output is back,
    and the part of it that ``sandbox.create`` took."""
    t0 = time.perf_counter()
    sbx = await ul.sandbox.create(template=TEMPLATE)
    t1 = time.perf_counter()
    res = await ul.sandbox.commands.run(sbx.id, "echo hi")
    t2 = time.perf_counter()
    if res.stdout != "hi\n" or res.exit_code != 0:
        raise SystemExit(f"unexpected result of echo hi: {res!r}")
    await ul.sandbox.destroy(sbx.id)
    return t2 - t0, t1 - t0


async def creates_per_s(ul: AsyncUnderlay, seconds: float, creators: int) -> float:
    """Creates completed within the window by ``creators`` create+destroy loops."""
    done = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            sbx = await ul.sandbox.create(template=TEMPLATE)
            if time.perf_counter() <= stop:
                done += 1
            await ul.sandbox.destroy(sbx.id)

    await asyncio.gather(*(loop() for _ in range(creators)))
    return done / seconds


async def underlay_cold(home: Path, runs: int, seconds: float, creators: int) -> dict[str, Any]:
    kernel, ul = await open_sdk(home, 0)
    try:
        for _ in range(5):  # warm-up: imports, caches, first cgroup and mount
            await create_first_exec(ul)
        driver: Any = (await kernel.compute()).driver
        taken = driver.launchers.taken if driver.launchers else 0
        cold, create = zip(*[await create_first_exec(ul) for _ in range(runs)], strict=True)
        taken = (driver.launchers.taken if driver.launchers else 0) - taken
        say(f"  cold: {runs} runs done ({taken} took a waiting launcher)")
        sbx = await ul.sandbox.create(template=TEMPLATE, persistent=True)
        try:
            rtt = []
            for i in range(runs + 20):
                t0 = time.perf_counter()
                res = await ul.sandbox.commands.run(sbx.id, "true")
                if i >= 20:
                    rtt.append(time.perf_counter() - t0)
                if res.exit_code != 0:
                    raise SystemExit(f"true failed: {res!r}")
        finally:
            await ul.sandbox.destroy(sbx.id)
        say(f"  round-trip: {runs} runs done")
        rate = await creates_per_s(ul, seconds, creators)
        say(f"  creates/s without pool: {rate:.1f}")
        return {"cold": list(cold), "create": list(create), "rtt": rtt, "rate": rate,
                "launched": taken}  # fmt: skip
    finally:
        await kernel.close()


async def underlay_warm(
    home: Path, runs: int, seconds: float, creators: int, pool: int
) -> dict[str, Any]:
    kernel, ul = await open_sdk(home, pool)
    try:
        wp = (await kernel.compute()).pool
        await wp.wait_full(120)
        for _ in range(3):
            await wp.wait_full()
            await create_first_exec(ul)
        handed = wp.handed_out
        warm, create = [], []
        for _ in range(runs):
            await wp.wait_full()
            total, part = await create_first_exec(ul)
            warm.append(total)
            create.append(part)
        if wp.handed_out - handed != runs:
            raise SystemExit(f"only {wp.handed_out - handed} of {runs} creates hit the pool")
        say(f"  warm: {runs} runs done, every create a hand-out")
        await wp.wait_full()
        handed = wp.handed_out
        rate = await creates_per_s(ul, seconds, creators)
        say(f"  creates/s with a pool of {pool}: {rate:.1f} ({wp.handed_out - handed} hand-outs)")
        return {"warm": warm, "create": create, "rate": rate}
    finally:
        await kernel.close()


# -- plain processes: bwrap and podman -----------------------------------------------------


async def spawn_to_output(
    argv: list[str], runs: int, warmup: int
) -> tuple[list[float], list[float]]:
    """(spawn → ``hi`` read, spawn → exit) for ``runs`` runs of ``argv`` (prints ``hi``)."""
    outs, exits = [], []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            first = await proc.stdout.readexactly(3)
        except asyncio.IncompleteReadError as exc:
            first = exc.partial
        t1 = time.perf_counter()
        rest, err = await proc.communicate()
        t2 = time.perf_counter()
        if first + rest != b"hi\n" or proc.returncode != 0:
            raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {redact(err.decode())}")
        if i >= warmup:
            outs.append(t1 - t0)
            exits.append(t2 - t0)
    return outs, exits


def bwrap_argv(rootfs: Path) -> list[str]:
    """The driver's namespaces and mounts, minus seccomp, cgroup, workspace and uid."""
    return [
        "bwrap",
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
        "--unshare-uts", "--unshare-cgroup-try", "--disable-userns",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv",
        "--uid", "1000", "--gid", "1000", "--hostname", "sandbox",
        "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev",
        "--tmpfs", "/tmp", "--remount-ro", "/",
        "--", "/bin/echo", "hi",
    ]  # fmt: skip


def redact(text: str, hosts: bool = False) -> str:
    """The tail of a tool's output, URLs (and with ``hosts``, host names) removed.

    apt's output names the package mirror: it is never printed.
    """
    lines = [ln for ln in text.strip().splitlines() if not re.match(r"^(Get|Hit|Ign|Err):", ln)]
    tail = re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", "<url>", "\n".join(lines[-3:]))
    return re.sub(r"\b(?:[a-z0-9-]+\.)+[a-z]{2,}\b", "<host>", tail) if hosts else tail


def apt_install(package: str) -> bool:
    for step in (["apt-get", "install", "-y", package], ["apt-get", "update"],
                 ["apt-get", "install", "-y", package]):  # fmt: skip
        say(f"  running: {' '.join(step)}")
        done = subprocess.run(
            step, capture_output=True, text=True, check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
        why = f": {redact(done.stderr, hosts=True)}" if done.returncode else ""
        say(f"    exit {done.returncode}{why}")
        if done.returncode == 0 and step[1] == "install":
            return True
    return False


def podman_setup(rootfs: Path) -> tuple[list[str] | None, list[str]]:
    """The first podman command line that prints ``hi`` here, and what was tried."""
    notes: list[str] = []
    if shutil.which("podman") is None:
        say("podman is not installed; installing the Debian package")
        if not apt_install("podman"):
            return None, ["podman could not be installed"]
    run = ["run", "--rm", "--network", "none"]
    ulimits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    tail = ["--rootfs", str(rootfs), "/bin/echo", "hi"]
    attempts = [
        ("as documented (crun)", ["podman", *run, *tail]),
        ("crun, --ulimit nofile/nproc", ["podman", *run, *ulimits, *tail]),
        ("crun, ulimits, --cgroups=disabled",
         ["podman", *run, *ulimits, "--cgroups=disabled", *tail]),
        ("runc, cgroupfs, ulimits",
         ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", *run, *ulimits, *tail]),
    ]  # fmt: skip
    for label, argv in attempts:
        if "runc" in argv and shutil.which("runc") is None:
            say("runc is not installed; installing the Debian package")
            if not apt_install("runc"):
                notes.append(f"{label}: runc could not be installed")
                continue
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        ok = done.returncode == 0 and done.stdout == "hi\n"
        why = "ok" if ok else f"exit {done.returncode}: {redact(done.stderr) or '(no stderr)'}"
        say(f"  podman attempt, {label}: {why}")
        notes.append(f"{label}: {why}")
        if ok:
            return argv, notes
    return None, notes


def cgroup_attach_ms() -> float | None:
    """Milliseconds to move an idle process into a fresh cgroup, after 50 ms of quiet.

    On cgroup v1 a migration takes the threadgroup rwsem for writing, which costs one
    RCU grace period unless the host favors dynamic modifications (``favordynmods``);
    this tells the reader which case the machine was in.
    """
    v2 = (CGROUP / "cgroup.controllers").exists()
    probe = CGROUP / ("" if v2 else "pids") / "underlay-bench-probe"
    try:
        probe.mkdir(exist_ok=True)
    except OSError:
        return None
    took = []
    try:
        for _ in range(7):
            proc = subprocess.Popen(["sleep", "10"])
            time.sleep(0.05)
            t0 = time.perf_counter()
            (probe / "cgroup.procs").write_text(str(proc.pid))
            took.append(time.perf_counter() - t0)
            proc.kill()
            proc.wait()
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
    return round(statistics.median(took) * 1000, 3)


# -- profile of the cold path ----------------------------------------------------------------


def _timed(spent: dict[str, float], owner: Any, attr: str, label: str) -> None:
    f = getattr(owner, attr, None)
    if f is None:
        say(f"  (profile: {owner.__name__}.{attr} not found; skipped)")
        return
    if inspect.iscoroutinefunction(f):

        @functools.wraps(f)
        async def wrapped_async(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await f(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0

        setattr(owner, attr, wrapped_async)
    else:

        @functools.wraps(f)
        def wrapped(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0

        setattr(owner, attr, wrapped)


async def profile(home: Path, runs: int, pool: int) -> None:
    """Median wall time of each phase of create → first output, and of destroy; with
    ``pool``, every create is a hand-out from a warm pool of that size."""
    from underlay.compute import cgroups, manager, metering, supervisor
    from underlay.compute.drivers import bwrap
    from underlay.kernel import audit, chain

    spent: dict[str, float] = defaultdict(float)
    phases = [
        (manager.ComputeManager, "create", "  manager.create (the handler)"),
        (bwrap.BwrapDriver, "start", "    driver.start"),
        (bwrap.Workspace, "prepare", "      workspace: mkdir + tmpfs mount"),
        (cgroups.CgroupV1, "create", "      cgroup: mkdir + limits (v1)"),
        (cgroups.CgroupV2, "create", "      cgroup: mkdir + limits (v2)"),
        (bwrap.BwrapDriver, "_spawn", "      spawn bwrap (preexec: cgroup join, uid)"),
        (subprocess.Popen, "__init__", "        Popen(): event loop blocked"),
        (supervisor.Supervisor, "wait_ready", "      bwrap setup → ulinit hello"),
        (manager, "_insert_record", "    record insert (in the audit transaction)"),
        (audit, "append", "    audit: hash-chained append (in its transaction)"),
        (manager.ComputeManager, "row", "  manager.row (read the record)"),
        (supervisor.Supervisor, "start", "  supervisor.start (send the exec)"),
        (chain, "_write_audit", "  audit append (chain)"),
        (bwrap.BwrapDriver, "destroy", "  driver.destroy"),
        (metering.Meter, "charge", "  metering (charge)"),
    ]
    for owner, attr, label in phases:
        _timed(spent, owner, attr, label)
    kernel, ul = await open_sdk(home, pool)
    warm = (await kernel.compute()).pool if pool else None
    db_write, db_read = kernel.db.write, kernel.db.read

    def counted(open_txn: Any, kind: str) -> Any:
        @contextlib.asynccontextmanager
        async def txn() -> Any:
            t0 = time.perf_counter()
            async with open_txn() as conn:
                yield conn
            spent[f"  {kind} transactions: time"] += time.perf_counter() - t0
            spent[f"  {kind} transactions: count"] += 1

        return txn

    kernel.db.write = counted(db_write, "write")  # type: ignore[method-assign]
    kernel.db.read = counted(db_read, "read")  # type: ignore[method-assign]
    steps = {
        "sandbox.create": lambda: ul.sandbox.create(template=TEMPLATE),
        "commands.run echo hi": lambda: ul.sandbox.commands.run(sbx.id, "echo hi"),
        "sandbox.destroy (not in the cold figure)": lambda: ul.sandbox.destroy(sbx.id),
    }
    rows: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in steps}
    try:
        for i in range(runs + 5):
            for step, call in steps.items():
                if warm is not None and step == "sandbox.create":
                    await warm.wait_full()
                spent.clear()
                t0 = time.perf_counter()
                res = await call()
                took = time.perf_counter() - t0
                if step == "sandbox.create":
                    sbx = res
                if i >= 5:
                    rows[step]["TOTAL (SDK call)"].append(took)
                    for key, value in spent.items():
                        rows[step][key].append(value)
    finally:
        await kernel.close()
    order = ["TOTAL (SDK call)", *(label for _, _, label in phases)]
    title = f"phase (warm pool of {pool})" if pool else "phase (cold, no pool)"
    say(f"{title:<52}{'p50 ms':>9}{'mean ms':>9}")
    for step, table in rows.items():
        say(step)
        for key in sorted(table, key=lambda k: (order.index(k) if k in order else 99, k)):
            vals = table[key] + [0.0] * (runs - len(table[key]))
            scale = 1 if key.endswith("count") else 1000
            p50, mean = statistics.median(vals) * scale, statistics.mean(vals) * scale
            say(f"{key:<52}{p50:>9.2f}{mean:>9.2f}")


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--podman-runs", type=int, default=50, help="podman is slow; default 50")
    ap.add_argument("--seconds", type=float, default=5.0, help="window of the creates/s test")
    ap.add_argument("--creators", type=int, default=4, help="concurrent creators")
    ap.add_argument("--pool", type=int, default=4, help="warm pool size of the warm runs")
    ap.add_argument("--home", type=Path, default=Path("/tmp/underlay-bench/home"))
    ap.add_argument("--profile", action="store_true", help="print the cold path's phases")
    ap.add_argument("--warm", action="store_true", help="with --profile: the warm path's")
    ap.add_argument("--launchers", type=int, default=None,
                    help="compute.launchers (default: the configuration's, 2)")  # fmt: skip
    args = ap.parse_args()
    if args.launchers is not None:
        LAUNCHERS.append(args.launchers)
    if os.geteuid() != 0:
        raise SystemExit("run as root: sandboxes need cgroups and mounts, podman needs root")
    home: Path = args.home
    home.mkdir(parents=True, exist_ok=True)

    rootfs = asyncio.run(ensure_template(home))
    say(f"root file system of every contender: {rootfs}")
    if args.profile:
        asyncio.run(profile(home, args.runs, args.pool if args.warm else 0))
        return
    attach = cgroup_attach_ms()
    say(f"cgroup attach after 50 ms idle: {attach} ms")

    say("underlay, no warm pool ...")
    cold = asyncio.run(underlay_cold(home, args.runs, args.seconds, args.creators))
    say(f"underlay, warm pool of {args.pool} ...")
    warm = asyncio.run(underlay_warm(home, args.runs, args.seconds, args.creators, args.pool))
    say("plain bwrap ...")
    bw_out, _ = asyncio.run(spawn_to_output(bwrap_argv(rootfs), args.runs, 5))
    say("podman ...")
    podman_cmd, podman_notes = podman_setup(rootfs)
    pm_out: list[float] = []
    pm_exit: list[float] = []
    if podman_cmd is not None:
        say(f"  {args.podman_runs} runs of: {' '.join(podman_cmd)}")
        pm_out, pm_exit = asyncio.run(spawn_to_output(podman_cmd, args.podman_runs, 3))

    say("")
    na = "n/a"
    rows: list[tuple[str, Any, Any]] = [
        ("underlay cold: create → first output", ms(cold["cold"], 0.5), ms(cold["cold"], 0.95)),
        ("underlay warm: create → first output", ms(warm["warm"], 0.5), ms(warm["warm"], 0.95)),
        ("plain bwrap: spawn → output", ms(bw_out, 0.5), ms(bw_out, 0.95)),
        (
            "podman run --rootfs: spawn → output",
            ms(pm_out, 0.5) if pm_out else na,
            ms(pm_out, 0.95) if pm_out else na,
        ),
        ("round-trip: commands.run(true)", ms(cold["rtt"], 0.5), ms(cold["rtt"], 0.95)),
    ]
    say(f"{'path':<40}{'p50 ms':>10}{'p95 ms':>10}")
    for name, p50, p95 in rows:
        say(f"{name:<40}{p50:>10}{p95:>10}")
    best = "warm pool" if warm["rate"] > cold["rate"] else "no pool"
    rate = max(warm["rate"], cold["rate"])
    say(
        f"creates/s ({args.creators} concurrent creators, {args.seconds:g} s, create + destroy): "
        f"{cold['rate']:.1f} without pool, {warm['rate']:.1f} with a pool of {args.pool}"
    )

    def vs_podman(times: list[float]) -> float | None:
        return round(statistics.median(pm_out) / statistics.median(times), 1) if pm_out else None

    speedup, warm_speedup, bwrap_speedup = (
        vs_podman(t) for t in (cold["cold"], warm["warm"], bw_out)
    )
    say(f"speedup vs podman (podman p50 / underlay cold p50): {speedup}")
    say(f"  from the warm pool: {warm_speedup}; plain bwrap itself: {bwrap_speedup} "
        "(a cold create spawns bwrap: its ceiling)")  # fmt: skip
    say(f"podman runs: {len(pm_out)}; " + "; ".join(podman_notes))
    say(json.dumps({
        "create_first_exec_p50_ms": ms(cold["cold"], 0.5),
        "create_first_exec_p95_ms": ms(cold["cold"], 0.95),
        "warm_p50_ms": ms(warm["warm"], 0.5),
        "roundtrip_p50_ms": ms(cold["rtt"], 0.5),
        "creates_per_s": round(rate, 1),
        "podman_p50_ms": ms(pm_out, 0.5) if pm_out else None,
        "speedup_vs_podman": speedup,
        "speedup_vs_podman_warm": warm_speedup,
        "speedup_vs_podman_plain_bwrap": bwrap_speedup,
        "warm_p95_ms": ms(warm["warm"], 0.95),
        "roundtrip_p95_ms": ms(cold["rtt"], 0.95),
        "bwrap_p50_ms": ms(bw_out, 0.5),
        "bwrap_p95_ms": ms(bw_out, 0.95),
        "podman_p95_ms": ms(pm_out, 0.95) if pm_out else None,
        "podman_exit_p50_ms": ms(pm_exit, 0.5) if pm_exit else None,
        "podman_runs": len(pm_out),
        "cold_create_p50_ms": ms(cold["create"], 0.5),
        "warm_create_p50_ms": ms(warm["create"], 0.5),
        "creates_per_s_cold": round(cold["rate"], 1),
        "creates_per_s_warm": round(warm["rate"], 1),
        "creates_per_s_best": best,
        "cgroup_attach_ms": attach,
        "cold_runs_with_launcher": cold["launched"],
        "launchers": LAUNCHERS[0] if LAUNCHERS else "default",
        "runs": args.runs,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
