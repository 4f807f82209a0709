"""Orchestration: durable task throughput, recovery after a worker's death, step overhead.

Run from the project root:

    .venv/bin/python bench/orchestration.py [--tasks 2000] [--steps 100]

Method.

- **tasks_per_s_sqlite / tasks_per_s_postgres**: an embedded kernel (a fresh home; the
  kernel's database is SQLite, or a fresh PostgreSQL database on 127.0.0.1:5432) in this
  process and one ``underlay worker`` process (concurrency 16, the default): the two
  processes use the machine's two cores. ``--tasks`` no-op tasks are submitted through
  the kernel (``ul.tasks.submit``: authentication, audit, the task's durable insert) by 8
  concurrent submitters; the figure is tasks / (the last completion - the first submit).
- **recovery_s**: two real ``underlay worker`` processes on one SQLite installation
  (heartbeat 1 s, declared dead after 3 s: the defaults). 10 tasks that sleep 60 s are
  leased by worker A, which is then killed with SIGKILL; the figure is the time from the
  kill until every one of those tasks is leased by worker B (running elsewhere).
- **step_overhead_ms**: a task of ``--steps`` no-op durable steps (``run.step``) against
  a raw DBOS workflow of as many ``DBOS.run_step_async`` no-op steps, in the same process
  and DBOS instance, SQLite system database; (underlay - raw) / steps, median of 5.
- **concurrent_agents**: a fleet of 50 members (``fleets.apply``, the fleet reconciler in
  this process, the API served on loopback) whose program is the command ``sleep 20``,
  each in its own bubblewrap sandbox, with its own identity, budget and token; the
  figure is the most members seen ``running`` at once (and the seconds until all were).

Prints a table, then ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import report  # bench/report.py: the script's directory is on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


async def throughput(home: Path, database_url: str | None, n: int) -> float:
    from sqlalchemy import func, select

    from underlay.config import Config
    from underlay.kernel.kernel import Kernel
    from underlay.sdk.client import AsyncUnderlay
    from underlay.sdk.transports import LocalTransport
    from underlay.storage.schema import tasks

    await asyncio.to_thread(home.mkdir, parents=True)
    settings: dict[str, Any] = {"orchestration": {"worker": False}}
    if database_url:
        settings["database_url"] = database_url
    await asyncio.to_thread((home / "config.yaml").write_text, yaml.safe_dump(settings))
    kernel = await Kernel.open(Config.load(home=home))
    ul = AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))
    worker = _worker(home)
    try:
        await ul.tasks.submit(handler="noop")  # the worker is up once this one is done
        while (await ul.tasks.list(state="succeeded")).items == []:
            await asyncio.sleep(0.02)
        per = n // 8
        start = time.perf_counter()

        async def submitter() -> None:
            for _ in range(per):
                await ul.tasks.submit(handler="noop")

        await asyncio.gather(*(submitter() for _ in range(8)))
        query = select(func.count()).where(tasks.c.state == "succeeded")
        while True:
            async with kernel.db.read() as conn:
                if (await conn.execute(query)).scalar_one() >= per * 8 + 1:
                    break
            await asyncio.sleep(0.005)
        return per * 8 / (time.perf_counter() - start)
    finally:
        worker.terminate()
        worker.wait(30)
        await kernel.close()


def _worker(home: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "underlay.cli.main", "--home", str(home), "worker", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


async def concurrent_agents(home: Path, members: int) -> tuple[int, float]:
    from underlay.config import Config
    from underlay.kernel.kernel import Kernel
    from underlay.orchestration.reconciler import FleetReconciler
    from underlay.sdk.client import AsyncUnderlay
    from underlay.sdk.transports import LocalTransport
    from underlay.server.app import serving

    await asyncio.to_thread(home.mkdir, parents=True)
    settings = yaml.safe_dump({"orchestration": {"worker": False}, "compute": {"pool_size": 0}})
    await asyncio.to_thread((home / "config.yaml").write_text, settings)
    kernel = await Kernel.open(Config.load(home=home))
    ul = AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))
    try:
        async with serving(kernel, "127.0.0.1", 0) as url:
            reconciler = FleetReconciler(kernel, api_url=url)
            await ul.fleets.apply(
                spec={
                    "name": "bench",
                    "agents": [{
                        "name": "agent", "replicas": members, "budget": "0.10 USD",
                        "restart": "transient", "program": {"command": "sleep 20"},
                    }],
                }
            )  # fmt: skip
            start, most, all_at = time.perf_counter(), 0, float("nan")
            while time.perf_counter() - start < 60:
                await reconciler.reconcile_once()
                fleet = await ul.fleets.get(name="bench")
                running = sum(m.state == "running" for m in fleet.members)
                if running > most:
                    most = running
                    if most == members:
                        all_at = time.perf_counter() - start
                if most == members and running < members:
                    break
                await asyncio.sleep(0.2)
            await ul.fleets.delete(name="bench")
            await reconciler.reconcile_once()
            return most, all_at
    finally:
        await kernel.close()


async def recovery(home: Path) -> float:
    from sqlalchemy import select

    from underlay.config import Config
    from underlay.kernel.kernel import Kernel
    from underlay.sdk.client import AsyncUnderlay
    from underlay.sdk.transports import LocalTransport
    from underlay.storage.schema import tasks

    await asyncio.to_thread(home.mkdir, parents=True)
    settings = yaml.safe_dump({"orchestration": {"worker": False}})
    await asyncio.to_thread((home / "config.yaml").write_text, settings)
    kernel = await Kernel.open(Config.load(home=home))
    ul = AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))
    a = _worker(home)
    b = None
    try:
        ids = [
            (await ul.tasks.submit(handler="sleep", input={"seconds": 60})).id for _ in range(10)
        ]

        async def holders() -> set[Any]:
            async with kernel.db.read() as conn:
                rows = await conn.execute(
                    select(tasks.c.state, tasks.c.worker_id).where(tasks.c.id.in_(ids))
                )
                return {(r.state, r.worker_id) for r in rows}

        while True:  # A leases all ten
            held = await holders()
            if len(held) == 1 and next(iter(held))[0] == "leased":
                break
            await asyncio.sleep(0.02)
        first = next(iter(held))[1]
        b = _worker(home)
        await asyncio.sleep(3)  # B is up and idle
        a.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        a.wait()
        while True:
            held = await holders()
            if all(s == "leased" and w not in (None, first) for s, w in held):
                return time.perf_counter() - killed
            await asyncio.sleep(0.02)
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        await kernel.close()


async def step_overhead(home: Path, steps: int) -> tuple[float, float]:
    from dbos import DBOS, SetWorkflowID

    from underlay.orchestration import builtin_handlers, durable
    from underlay.orchestration.queue import Lease

    assert builtin_handlers.python_entry is durable.HANDLERS["python"]

    async def noop() -> None:
        return None

    async def raw(count: int) -> None:
        for i in range(count):
            await DBOS.run_step_async({"name": f"s{i}"}, noop)

    raw_workflow = DBOS.workflow(name="bench.raw")(raw)
    await asyncio.to_thread(home.mkdir, parents=True)
    durable.launch(f"sqlite:///{home / 'dbos.sqlite'}", "bench-executor")
    try:
        ours, theirs = [], []
        for run in range(6):
            lease = Lease(
                f"task_bench{run}", "org", "q", "python",
                {"entry": "orch_steps:many", "input": {"steps": steps}}, 1, 1,
            )  # fmt: skip
            t = time.perf_counter()
            await durable.run_attempt(lease)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            with SetWorkflowID(f"raw-{run}"):
                await raw_workflow(steps)
            theirs.append(time.perf_counter() - t)
        ours_ms = statistics.median(ours[1:]) * 1000 / steps  # the first run warms up
        raw_ms = statistics.median(theirs[1:]) * 1000 / steps
        return ours_ms, raw_ms
    finally:
        durable.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ul-orch-") as tmp:
        base = Path(tmp)
        out["tasks_per_s_sqlite"] = round(asyncio.run(throughput(base / "s", None, args.tasks)))
        print(f"no-op tasks, SQLite: {out['tasks_per_s_sqlite']}/s", file=sys.stderr)
        if not args.no_postgres:
            name = f"ul_bench_{os.getpid()}"
            _pg(f'CREATE DATABASE "{name}"')
            try:
                url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
                rate = asyncio.run(throughput(base / "p", url, args.tasks))
                out["tasks_per_s_postgres"] = round(rate)
            finally:
                _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"no-op tasks, PostgreSQL: {out['tasks_per_s_postgres']}/s", file=sys.stderr)
        out["recovery_s"] = round(asyncio.run(recovery(base / "r")), 2)
        ours, raw = asyncio.run(step_overhead(base / "o", args.steps))
        out["step_ms"] = round(ours, 3)
        out["raw_dbos_step_ms"] = round(raw, 3)
        out["step_overhead_ms"] = round(ours - raw, 3)
        most, all_at = asyncio.run(concurrent_agents(base / "a", 50))
        out["concurrent_agents"] = most
        out["all_agents_running_s"] = round(all_at, 2)
        out["concurrent_agents_sandboxed"] = True
    report.figures(out, 10)


if __name__ == "__main__":
    main()
