"""1,000 tasks while workers are killed at random: none lost, no completed step re-run.

Two `underlay worker` processes (8 tasks at once each) run 1,000 two-step tasks; every
0.4-1.2 s (seeded) one of them is killed with SIGKILL and replaced, eight times. A step
in flight at a kill runs again (at-least-once, by design: idempotency keys are for
that); a step whose checkpoint was written never does, and every task ends succeeded.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from pathlib import Path

import yaml
from sqlalchemy import func, select

from underlay.config import Config
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.storage.schema import tasks

from .test_crash_recovery import worker

TASKS, KILLS, CONCURRENCY = 1000, 8, 8


async def test_a_thousand_tasks_survive_random_kills(
    config: Config, kernel: Kernel, ul: AsyncUnderlay, tmp_path: Path
) -> None:
    (config.home / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "database_url": config.resolved_database_url,
                "orchestration": {
                    "heartbeat_seconds": 0.2, "dead_after_seconds": 1.0,
                    "poll_seconds": 0.02, "concurrency": CONCURRENCY,
                },
            }
        )
    )  # fmt: skip
    log = tmp_path / "effects.log"
    entry = {"entry": "orchestration.steps_handler:two_steps", "input": {"log": str(log)}}
    ids = [(await ul.tasks.submit(handler="python", input=entry, max_attempts=50)).id
           for _ in range(TASKS)]  # fmt: skip
    rng = random.Random(7)
    procs = [worker(config.home, CONCURRENCY), worker(config.home, CONCURRENCY)]

    async def succeeded() -> int:
        async with kernel.db.read() as conn:
            query = select(func.count()).where(tasks.c.state == "succeeded")
            return int((await conn.execute(query)).scalar_one())

    kills, deadline = 0, time.monotonic() + 240
    try:
        while await succeeded() < TASKS and time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            if kills < KILLS:
                victim = procs.pop(rng.randrange(len(procs)))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                kills += 1
                procs.append(worker(config.home, CONCURRENCY))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    assert kills == KILLS
    assert await succeeded() == TASKS  # none lost
    effects = Counter(log.read_text().split())
    attempts = {t: (await ul.tasks.get(task_id=t)).attempts for t in ids}
    for task_id in ids:
        for name in ("a", "b"):
            runs = effects[f"{task_id}:{name}"]
            # every step's effect happened; again only in an attempt killed in that step:
            # never more often than the task had attempts
            assert 1 <= runs <= attempts[task_id], (task_id, name, runs)
    repeated = sum(n - 1 for n in effects.values())
    assert repeated <= KILLS * CONCURRENCY  # at most one step in flight per task per kill
