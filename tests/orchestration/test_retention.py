"""Retention: finished tasks, their attempts and DBOS workflows go; everything else stays.

Real tasks run by a real in-process worker, so real DBOS rows exist (in ``home/dbos.sqlite``
or, on PostgreSQL, in schema ``dbos`` of the test database); the assertions read DBOS's
tables directly.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import text, update

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.orchestration import retention
from underlay.orchestration.worker import Worker, dbos_url
from underlay.sdk.client import AsyncUnderlay
from underlay.storage.schema import fleet_members, tasks

from .conftest import settle

DAY = 86_400.0
STEPS = "orchestration.steps_handler:two_steps"


def _dbos(kernel: Kernel) -> tuple[sa.Engine, str]:
    url = sa.make_url(dbos_url(kernel.config))
    if url.get_backend_name() == "sqlite":
        return sa.create_engine(url), ""
    return sa.create_engine(url.set(drivername="postgresql+psycopg")), "dbos."


def dbos_rows(kernel: Kernel, task_id: str) -> dict[str, int]:
    """DBOS's rows for the workflows of ``task_id``'s attempts, per table."""
    engine, schema = _dbos(kernel)
    counts = {}
    try:
        with engine.connect() as conn:
            for table in ("workflow_status", "operation_outputs", "workflow_input",
                          "workflow_output"):  # fmt: skip
                n = conn.execute(
                    text(f"SELECT count(*) FROM {schema}{table} WHERE workflow_uuid LIKE :p"),
                    {"p": f"{task_id}-f%"},
                ).scalar()
                counts[table] = int(n or 0)
    finally:
        engine.dispose()
    return counts


async def backdate(kernel: Kernel, *task_ids: str, days: float = 2.0) -> None:
    async with kernel.db.write() as conn:
        await conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(task_ids))
            .values(finished_at=tasks.c.finished_at - days * DAY)
        )


async def exists(kernel: Kernel, task_id: str) -> tuple[bool, int]:
    """Whether the task's row is there, and how many attempt rows it has."""
    async with kernel.db.read() as conn:
        row = (
            await conn.execute(text("SELECT 1 FROM tasks WHERE id = :i"), {"i": task_id})
        ).first()
        n = (
            await conn.execute(
                text("SELECT count(*) FROM task_attempts WHERE task_id = :i"), {"i": task_id}
            )
        ).scalar()
    return row is not None, int(n or 0)


async def prune(kernel: Kernel, **kw: Any) -> retention.Pruned:
    now = kernel.clock.now()
    return await retention.prune(kernel.db, dbos_url(kernel.config), cutoff=now - DAY, **kw)


async def test_old_finished_tasks_go_with_attempts_and_dbos_rows_the_rest_stays(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, tmp_path: Path
) -> None:
    log = str(tmp_path / "effects.log")
    steps = {"entry": STEPS, "input": {"log": log}}
    old = await ul.tasks.submit(handler="python", input=steps)
    broken = await ul.tasks.submit(handler="python", input={"entry": "no_such_module:fn"})
    quick = await ul.tasks.submit(handler="noop")
    recent = await ul.tasks.submit(handler="python", input=steps)
    member_run = await ul.tasks.submit(handler="noop")
    for task, state in ((old, "succeeded"), (broken, "failed"), (quick, "succeeded"),
                        (recent, "succeeded"), (member_run, "succeeded")):  # fmt: skip
        await settle(ul, task.id, state)
    queued = await ul.tasks.submit(handler="noop", queue="nobody-serves-this")
    approval = {"entry": "orchestration.steps_handler:approval", "input": {"log": log}}
    waiting = await ul.tasks.submit(handler="python", input=approval, max_attempts=1)
    asked = await ul.tasks.submit(handler="python", input=approval, max_attempts=1)
    await settle(ul, waiting.id, "waiting")
    await settle(ul, asked.id, "waiting")
    await ul.tasks.cancel(task_id=asked.id)  # cancelled, its escalation still open
    async with kernel.db.write() as conn:  # a live fleet member's run
        await conn.execute(fleet_members.insert().values(
            org_id=(await ul.self.whoami()).org_id, fleet="crew", agent="a", replica=0,
            task_id=member_run.id, state="running", restarts=0, generation=1, updated_at=0.0,
        ))  # fmt: skip
    await backdate(kernel, old.id, broken.id, quick.id, asked.id, member_run.id)
    assert dbos_rows(kernel, old.id) == {
        "workflow_status": 1, "operation_outputs": 2, "workflow_input": 1, "workflow_output": 1,
    }  # fmt: skip
    assert dbos_rows(kernel, broken.id)["workflow_status"] == 1

    dry = await prune(kernel, dry_run=True)
    assert (dry.dry_run, dry.tasks, dry.attempts, dry.workflows) == (True, 3, 3, 2)
    assert await exists(kernel, old.id) == (True, 1)
    assert dbos_rows(kernel, old.id)["operation_outputs"] == 2  # dry run: nothing deleted

    done = await prune(kernel, batch_size=1)
    assert (done.dry_run, done.tasks, done.attempts, done.workflows) == (False, 3, 3, 2)
    for gone in (old, broken, quick):
        assert await exists(kernel, gone.id) == (False, 0)
        assert set(dbos_rows(kernel, gone.id).values()) == {0}
    for kept in (recent, queued, waiting, asked, member_run):
        assert (await exists(kernel, kept.id))[0], kept.id
    assert dbos_rows(kernel, recent.id)["operation_outputs"] == 2
    assert dbos_rows(kernel, waiting.id)["workflow_status"] == 1

    again = await prune(kernel)  # idempotent
    assert (again.tasks, again.attempts, again.workflows) == (0, 0, 0)

    # Once the escalation is answered and the member is final, they go too.
    [esc] = [e for e in (await ul.escalations.list()).items if e.task_id == asked.id]
    await ul.escalations.resolve(escalation_id=esc.id, resolution={"approved": False})
    async with kernel.db.write() as conn:
        await conn.execute(update(fleet_members).values(state="succeeded"))
    last = await prune(kernel)
    assert (last.tasks, last.attempts, last.workflows) == (2, 2, 1)
    assert not (await exists(kernel, asked.id))[0] and not (await exists(kernel, member_run.id))[0]
    assert set(dbos_rows(kernel, asked.id).values()) == {0}
    assert (await ul.tasks.get(task_id=waiting.id)).state == "waiting"


async def test_concurrent_pruners_delete_each_task_once(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, tmp_path: Path
) -> None:
    steps = {"entry": STEPS, "input": {"log": str(tmp_path / "effects.log")}}
    made = [await ul.tasks.submit(handler="python", input=steps) for _ in range(6)]
    for task in made:
        await settle(ul, task.id, "succeeded")
    await backdate(kernel, *[t.id for t in made])
    results = await asyncio.gather(*(prune(kernel, batch_size=2) for _ in range(3)))
    assert sum(r.tasks for r in results) == 6 and sum(r.attempts for r in results) == 6
    for task in made:
        assert await exists(kernel, task.id) == (False, 0)
        assert set(dbos_rows(kernel, task.id).values()) == {0}


async def test_recently_finished_tasks_settle_first_and_no_dbos_is_fine(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    task = await ul.tasks.submit(handler="noop")
    await ul.tasks.cancel(task_id=task.id)
    now = kernel.clock.now()
    url = dbos_url(kernel.config)  # no worker ran: DBOS has no tables (or no file) yet
    soon = await retention.prune(kernel.db, url, cutoff=now + DAY, now=now)
    assert soon.tasks == 0 and soon.cutoff == now - retention.SETTLE_SECONDS
    later = await retention.prune(kernel.db, url, cutoff=now + DAY, now=now + 120)
    assert (later.tasks, later.workflows) == (1, 0)
    with pytest.raises(ValueError):
        await retention.prune(kernel.db, url, cutoff=now, batch_size=0)


async def test_the_syscall_is_for_operators_and_names_bad_input(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    task = await ul.tasks.submit(handler="noop")
    await ul.tasks.cancel(task_id=task.id)
    await backdate(kernel, task.id)
    dry = await ul.tasks.prune(older_than_days=1, dry_run=True)
    assert (dry.dry_run, dry.tasks, dry.attempts, dry.workflows) == (True, 1, 0, 0)
    with pytest.raises(errors.InvalidInput) as bad:
        await ul.tasks.prune(older_than_days=0)
    assert bad.value.field == "older_than_days"
    admin = await ul.agents.create("janitor", capabilities=["tasks.*"])
    with pytest.raises(errors.PermissionDenied):
        await (await ul.as_agent(admin)).tasks.prune(older_than_days=1)
    done = await ul.tasks.prune(older_than_days=1)
    assert (done.tasks, abs(done.cutoff - (kernel.clock.now() - DAY)) < 60) == (1, True)
    assert not (await exists(kernel, task.id))[0]


async def test_the_loop_prunes_on_schedule_and_survives_a_failed_round(
    kernel: Kernel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = kernel.config.model_copy(deep=True)
    config.orchestration.retention_every_seconds = 0.01
    config.orchestration.retention_days = 3.0
    calls: list[float] = []

    async def fake(db: Any, url: str, *, cutoff: float, now: float) -> retention.Pruned:
        calls.append(now - cutoff)
        if len(calls) == 1:
            raise RuntimeError("database away")
        return retention.Pruned(cutoff, tasks=2, attempts=3, workflows=1)

    monkeypatch.setattr(retention, "prune", fake)
    caplog.set_level(logging.INFO, logger="underlay.retention")
    loop = asyncio.create_task(retention.forever(kernel.db, config))
    for _ in range(200):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.01)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    assert len(calls) >= 3 and calls[0] == 3 * DAY
    assert "retention round failed" in caplog.text
    assert "pruned 2 tasks, 3 attempts, 1 DBOS workflows" in caplog.text
    config.orchestration.retention_days = 0  # keep forever: the loop ends at once
    await asyncio.wait_for(retention.forever(kernel.db, config), 1)
    config.orchestration.retention_days = None
    await asyncio.wait_for(retention.forever(kernel.db, config), 1)
