"""The tasks.* syscalls through the kernel, and an in-process worker running them."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.orchestration.worker import Worker
from underlay.sdk.client import AsyncUnderlay

from .conftest import settle


async def test_submit_get_list_cancel(ul: AsyncUnderlay) -> None:
    a = await ul.tasks.submit(handler="noop", priority=3, dedupe_key="nightly")
    again = await ul.tasks.submit(handler="noop", dedupe_key="nightly")
    b = await ul.tasks.submit(handler="sleep", input={"seconds": 5}, queue="slow")
    assert (a.state, a.priority, a.attempts, a.fence, a.created) == ("queued", 3, 0, 0, True)
    assert (again.id, again.created) == (a.id, False)
    assert (await ul.tasks.get(task_id=b.id)).input == {"seconds": 5}
    page = await ul.tasks.list(limit=1)
    assert [t.id for t in page.items] == [b.id] and page.next_cursor
    rest = await ul.tasks.list(limit=5, cursor=page.next_cursor)
    assert [t.id for t in rest.items] == [a.id]
    assert [t.id for t in (await ul.tasks.list(queue="slow")).items] == [b.id]
    cancelled = await ul.tasks.cancel(task_id=b.id)
    assert cancelled.state == "cancelled" and cancelled.finished_at
    assert [t.id for t in (await ul.tasks.list(state="cancelled")).items] == [b.id]


async def test_bad_input_is_named_and_stores_nothing(ul: AsyncUnderlay) -> None:
    with pytest.raises(errors.InvalidInput) as bad:
        await ul.tasks.submit(handler="noop", queue="Not A Queue")
    assert bad.value.field == "queue"
    with pytest.raises(errors.InvalidInput):
        await ul.tasks.submit(handler="noop", max_attempts=0)
    with pytest.raises(errors.InvalidInput):
        await ul.tasks.list(state="sleeping")
    with pytest.raises(errors.NotFound):
        await ul.tasks.get(task_id="task_missing")
    assert (await ul.tasks.list()).items == []


async def test_capabilities_org_isolation_and_audit(ul: AsyncUnderlay, kernel: Kernel) -> None:
    mine = await ul.tasks.submit(handler="noop", input={"secret": "hunter2-launch"})
    other = await ul.orgs.create("other-org")
    theirs = ul.with_token(other.admin_token.get_secret_value())
    with pytest.raises(errors.NotFound):
        await theirs.tasks.get(task_id=mine.id)
    with pytest.raises(errors.NotFound):
        await theirs.tasks.cancel(task_id=mine.id)
    assert (await theirs.tasks.list()).items == []
    submitter = await ul.agents.create("submitter", capabilities=["tasks.submit"])
    agent = await ul.as_agent(submitter)
    await agent.tasks.submit(handler="noop")
    with pytest.raises(errors.PermissionDenied):
        await agent.tasks.set_concurrency(queue="default", concurrency=2)
    with pytest.raises(errors.PermissionDenied):
        await agent.tasks.cancel(task_id=mine.id)
    async with kernel.db.read() as conn:
        rows = (await conn.execute(text("SELECT syscall, detail FROM audit_events"))).all()
    submits = [r for r in rows if r.syscall == "tasks.submit"]
    assert len(submits) == 2 and all("hunter2" not in json.dumps(r.detail) for r in rows)


async def test_an_in_process_worker_runs_tasks_and_fails_bad_ones_once(
    ul: AsyncUnderlay, worker: Worker
) -> None:
    ok = await ul.tasks.submit(handler="sleep", input={"seconds": 0.01})
    bad = await ul.tasks.submit(handler="python", input={"entry": "no_such_module:fn"})
    unknown = await ul.tasks.submit(handler="no-such-handler")
    done = await settle(ul, ok.id, "succeeded")
    assert done.result == {"slept": 0.01}
    for task in (bad, unknown):
        failed = await settle(ul, task.id, "failed")
        assert failed.attempts == 1  # not retryable
        assert failed.error and failed.error["code"] == "invalid_input"
