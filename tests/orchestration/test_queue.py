"""The task queue on the kernel's database: leases, fencing, priority, fairness, adoption."""

from __future__ import annotations

import pytest

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.orchestration.queue import NewTask, TaskQueue

T0 = 1_000_000.0


@pytest.fixture
def queue(kernel: Kernel) -> TaskQueue:
    return TaskQueue(kernel.db)


def task(org: str = "org_a", queue: str = "q", priority: int = 0, **kw: object) -> NewTask:
    return NewTask(
        org_id=org,
        queue=queue,
        handler="noop",
        input=kw.pop("input", {}),  # type: ignore[arg-type]
        submitted_by="agt_x",
        priority=priority,
        **kw,  # type: ignore[arg-type]
    )


async def state(kernel: Kernel, task_id: str) -> str:
    async with kernel.db.read() as conn:
        from sqlalchemy import select

        from underlay.storage.schema import tasks

        return str(
            (await conn.execute(select(tasks.c.state).where(tasks.c.id == task_id))).scalar()
        )


async def test_idempotent_submit_returns_the_first_task(queue: TaskQueue) -> None:
    first, new = await queue.submit(task(idempotency_key="k1"), T0)
    again, new_again = await queue.submit(task(idempotency_key="k1"), T0 + 1)
    other, _ = await queue.submit(task(idempotency_key="k2"), T0 + 1)
    assert (new, new_again) == (True, False)
    assert again == first != other


async def test_priority_then_age_orders_one_orgs_claims(queue: TaskQueue) -> None:
    low, _ = await queue.submit(task(priority=0), T0)
    high, _ = await queue.submit(task(priority=5), T0 + 1)
    later_low, _ = await queue.submit(task(priority=0), T0 + 2)
    w = await queue.register_worker("h", 1, ["q"], T0)
    got = [lease.task_id for lease in await queue.claim(w, ["q"], 3, T0 + 3)]
    assert got == [high, low, later_low]


async def test_organisations_take_turns(queue: TaskQueue) -> None:
    for i in range(6):
        await queue.submit(task(org="org_big", priority=9), T0 + i)
    await queue.submit(task(org="org_small"), T0 + 10)
    w = await queue.register_worker("h", 1, ["q"], T0)
    first = await queue.claim(w, ["q"], 2, T0 + 11)
    assert sorted(lease.org_id for lease in first) == ["org_big", "org_small"]


async def test_queue_concurrency_bounds_leases(queue: TaskQueue) -> None:
    await queue.set_concurrency("org_a", "q", 2)
    for i in range(5):
        await queue.submit(task(), T0 + i)
    w = await queue.register_worker("h", 1, ["q"], T0)
    leases = await queue.claim(w, ["q"], 10, T0 + 5)
    assert len(leases) == 2
    assert await queue.claim(w, ["q"], 10, T0 + 5) == []
    await queue.complete(leases[0], {"ok": True}, T0 + 6)
    assert len(await queue.claim(w, ["q"], 10, T0 + 6)) == 1


async def test_a_stale_fencing_token_is_rejected_and_changes_nothing(
    kernel: Kernel, queue: TaskQueue
) -> None:
    task_id, _ = await queue.submit(task(), T0)
    w1 = await queue.register_worker("h", 1, ["q"], T0)
    [old] = await queue.claim(w1, ["q"], 1, T0)
    dead, adopted = await queue.reap(T0 + 11, dead_after=5)  # w1 silent for 11 s
    assert (dead, adopted) == ([w1], 1)
    w2 = await queue.register_worker("h", 2, ["q"], T0 + 11)
    [new] = await queue.claim(w2, ["q"], 1, T0 + 11)
    assert new.task_id == task_id and new.fence == old.fence + 1 and new.attempt == 2
    with pytest.raises(errors.StaleLease, match="fencing token 1 is stale"):
        await queue.complete(old, {"from": "stale"}, T0 + 12)
    with pytest.raises(errors.StaleLease):
        await queue.fail(old, {"e": 1}, T0 + 12, retryable=True)
    with pytest.raises(errors.StaleLease):
        await queue.heartbeat(w1, T0 + 12)  # declared dead: it must register again
    assert await state(kernel, task_id) == "leased"
    await queue.complete(new, {"from": "w2"}, T0 + 13)
    assert await state(kernel, task_id) == "succeeded"


async def test_heartbeats_keep_leases_and_silence_loses_them(queue: TaskQueue) -> None:
    await queue.submit(task(), T0)
    w = await queue.register_worker("h", 1, ["q"], T0)
    [lease] = await queue.claim(w, ["q"], 1, T0)
    assert await queue.heartbeat(w, T0 + 8, {lease.task_id: lease.fence}) == []  # all mine
    assert await queue.reap(T0 + 12, dead_after=5) == ([], 0)
    assert await queue.reap(T0 + 19, dead_after=5, reaper=w) == ([], 0)  # never itself
    assert await queue.reap(T0 + 19, dead_after=5) == ([w], 1)


async def test_failures_retry_with_backoff_then_fail_for_good(
    kernel: Kernel, queue: TaskQueue
) -> None:
    task_id, _ = await queue.submit(task(max_attempts=2), T0)
    w = await queue.register_worker("h", 1, ["q"], T0)
    [first] = await queue.claim(w, ["q"], 1, T0)
    assert await queue.fail(first, {"why": "flaky"}, T0, retryable=True) == "queued"
    assert await queue.claim(w, ["q"], 1, T0 + 0.1) == []  # backing off
    [second] = await queue.claim(w, ["q"], 1, T0 + 5)
    assert await queue.fail(second, {"why": "flaky"}, T0 + 5, retryable=True) == "failed"
    assert await state(kernel, task_id) == "failed"


async def test_cancel_fences_out_the_running_worker(kernel: Kernel, queue: TaskQueue) -> None:
    task_id, _ = await queue.submit(task(), T0)
    w = await queue.register_worker("h", 1, ["q"], T0)
    [lease] = await queue.claim(w, ["q"], 1, T0)
    assert await queue.cancel("org_a", task_id, T0 + 1) == "cancelled"
    with pytest.raises(errors.StaleLease):
        await queue.complete(lease, {}, T0 + 2)
    assert await queue.cancel("org_a", task_id, T0 + 3) == "cancelled"
    with pytest.raises(errors.NotFound):
        await queue.cancel("org_other", task_id, T0 + 3)


async def test_a_clean_stop_hands_leases_back_at_once(kernel: Kernel, queue: TaskQueue) -> None:
    task_id, _ = await queue.submit(task(), T0)
    w = await queue.register_worker("h", 1, ["q"], T0)
    await queue.claim(w, ["q"], 1, T0)
    await queue.stop_worker(w, T0 + 1)
    assert await state(kernel, task_id) == "queued"
    with pytest.raises(errors.StaleLease):
        await queue.claim(w, ["q"], 1, T0 + 1)


async def test_every_lease_is_a_row_of_history_and_costs_join_outcomes(
    kernel: Kernel, queue: TaskQueue
) -> None:
    from underlay.orchestration import attempts

    flaky, _ = await queue.submit(task(max_attempts=3), T0)
    gone, _ = await queue.submit(task(), T0)
    w1 = await queue.register_worker("h", 1, ["q"], T0)
    first = {lease.task_id: lease for lease in await queue.claim(w1, ["q"], 2, T0)}
    await queue.fail(first[flaky], {"class": "transient"}, T0 + 4, retryable=True)  # 4 s
    await queue.reap(T0 + 10, dead_after=5)  # w1 silent: gone's lease is lost (10 s)
    w2 = await queue.register_worker("h", 2, ["q"], T0 + 10)
    second = {lease.task_id: lease for lease in await queue.claim(w2, ["q"], 2, T0 + 70)}
    await queue.complete(second[flaky], {}, T0 + 71)  # 1 s
    await queue.cancel("org_a", gone, T0 + 72)  # 2 s, then cancelled
    history = await attempts.history(kernel.db, "org_a", flaky)
    assert [(a.attempt, a.outcome, a.error_class) for a in history] == [
        (1, "retrying", "transient"), (2, "succeeded", None),
    ]  # fmt: skip
    assert [a.outcome for a in await attempts.history(kernel.db, "org_a", gone)] == [
        "lost", "cancelled",
    ]  # fmt: skip
    [row] = await attempts.costs(kernel.db, "org_a", "handler", 0)
    assert row == {
        "handler": "noop", "tasks": 2, "succeeded": 1, "attempts": 4,
        "worker_seconds": 17.0, "seconds_per_success": 17.0, "attempts_per_success": 4.0,
        "retry_tax": round(16 / 17, 4),
    }  # fmt: skip


async def test_heartbeats_name_the_attempts_a_worker_must_stop(queue: TaskQueue) -> None:
    kept, _ = await queue.submit(task(), T0)
    gone, _ = await queue.submit(task(), T0)
    w = await queue.register_worker("h", 1, ["q"], T0)
    fences = {lease.task_id: lease.fence for lease in await queue.claim(w, ["q"], 2, T0)}
    await queue.cancel("org_a", gone, T0 + 1)
    assert await queue.heartbeat(w, T0 + 2, fences) == [gone]
    assert await queue.heartbeat(w, T0 + 3, {kept: fences[kept] - 1}) == [kept]  # old token
