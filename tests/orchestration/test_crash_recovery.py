"""kill -9 of workers at every step boundary: completed steps never re-run, tasks finish.

Real `underlay worker` processes on the test's database (SQLite, or PostgreSQL with
UNDERLAY_TEST_DB=postgres) and DBOS's system database; each kills itself with SIGKILL at
a chosen boundary of a chosen task, the next worker declares it dead and adopts its
tasks. The tasks' step effects are appended to a log, so double runs are visible. Each
worker runs one task at a time, so that a kill lands exactly on its task's boundary
(a step in flight at a crash does run again: that is what idempotency keys are for).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from underlay.config import Config
from underlay.sdk.client import AsyncUnderlay

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4


def worker(home: Path, concurrency: int = 1) -> subprocess.Popen[bytes]:
    """An `underlay worker` process; its log goes to home/worker-N.log (a pipe could fill)."""
    logs = len(list(home.glob("worker-*.log")))
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    argv = [sys.executable, "-m", "underlay.cli.main", "--home", str(home), "worker"]
    return subprocess.Popen(
        [*argv, "--concurrency", str(concurrency)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / f"worker-{logs}.log").open("wb"),
    )


async def test_kill_at_every_step_boundary_loses_and_repeats_nothing(
    config: Config, ul: AsyncUnderlay, tmp_path: Path
) -> None:
    (config.home / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "database_url": config.resolved_database_url,
                "orchestration": {
                    "heartbeat_seconds": 0.2, "dead_after_seconds": 1.0, "poll_seconds": 0.02,
                },
            }
        )
    )  # fmt: skip
    log = tmp_path / "effects.log"
    submitted = {}
    for boundary in range(STEPS):  # 0: before step 1; k: between step k and k + 1
        task = await ul.tasks.submit(
            handler="python",
            input={
                "entry": "orchestration.steps_handler:steps",
                "input": {
                    "steps": STEPS, "log": str(log), "kill_after": boundary,
                    "marker": str(tmp_path / f"killed-{boundary}"),
                },
            },
            max_attempts=10,
        )  # fmt: skip
        submitted[task.id] = boundary
    kills, deadline = 0, time.monotonic() + 90
    while time.monotonic() < deadline:
        states = {t: (await ul.tasks.get(task_id=t)).state for t in submitted}
        if all(s == "succeeded" for s in states.values()):
            break
        proc = worker(config.home)
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                states = {t: (await ul.tasks.get(task_id=t)).state for t in submitted}
                if all(s == "succeeded" for s in states.values()):
                    break
                await asyncio.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        if proc.returncode == -9:
            kills += 1
        elif proc.returncode not in (0, -15):
            logs = "".join(p.read_text() for p in config.home.glob("worker-*.log"))
            raise AssertionError(f"worker exited {proc.returncode}: {logs}")
    assert kills == STEPS  # every boundary's kill happened, each in its own process
    effects = Counter(log.read_text().split("\n")[:-1])
    for task_id, boundary in submitted.items():
        got = await ul.tasks.get(task_id=task_id)
        assert got.state == "succeeded", (boundary, got)
        assert got.attempts >= 2  # the killed attempt, then the adopting one
        assert got.result is not None
        assert got.result["_steps"] == {"executed": STEPS - boundary, "replayed": boundary}
        for i in range(1, STEPS + 1):
            assert effects[f"{task_id} s{i}"] == 1, (boundary, i, effects)
