"""Failure policies: retry (retryable errors only, with backoff), timeout, circuit breaker,
fallback — on the ``PolicyRunner`` itself and through ``Kernel.invoke``."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from kernel.helpers import OpenKernel, Probe, audit_events, balance, make_agent, usd
from underlay import errors
from underlay.kernel.policy import CircuitBreaker, FailurePolicy, PolicyRunner, RetryPolicy
from underlay.testing.clock import FakeClock


def runner(clock: FakeClock) -> PolicyRunner:
    return PolicyRunner(clock.now, clock.sleep)


class Flaky:
    """An attempt that raises the given errors in turn, then returns ``"ok"``."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.attempts = 0

    async def __call__(self) -> str:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


# --- the runner -------------------------------------------------------------------------


async def test_retryable_errors_are_retried_with_exponential_backoff() -> None:
    clock = FakeClock()
    policy = FailurePolicy(
        retry=RetryPolicy(max_attempts=5, initial_seconds=0.1, backoff=2, max_interval_seconds=0.3,
                          jitter=0)
    )
    attempt = Flaky(errors.Unavailable("a"), errors.Busy("b"), errors.Timeout("c"),
                    errors.Unavailable("d"))
    assert await runner(clock).run("k", policy, attempt) == "ok"
    assert attempt.attempts == 5
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.3, 0.3])  # capped at max_interval


async def test_jitter_stays_within_its_band() -> None:
    retry = RetryPolicy(initial_seconds=1.0, backoff=3, max_interval_seconds=100, jitter=0.2)
    rng = random.Random(7)
    for attempt, base in ((2, 1.0), (3, 3.0), (4, 9.0)):
        for _ in range(50):
            assert base * 0.8 <= retry.delay(attempt, rng) <= base * 1.2


async def test_retries_give_up_after_max_attempts_with_the_last_error() -> None:
    clock = FakeClock()
    policy = FailurePolicy(retry=RetryPolicy(max_attempts=3, initial_seconds=0.01, jitter=0))
    attempt = Flaky(*(errors.Unavailable(f"down {i}") for i in range(5)))
    with pytest.raises(errors.Unavailable, match="down 2"):
        await runner(clock).run("k", policy, attempt)
    assert attempt.attempts == 3 and len(clock.sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [errors.InvalidInput("x"), errors.Conflict("x"), errors.PermissionDenied("x"),
     errors.BudgetExceeded("x"), errors.NotFound("x"), errors.InternalError("x")],
)
async def test_non_retryable_errors_are_not_retried(error: errors.UnderlayError) -> None:
    clock = FakeClock()
    policy = FailurePolicy(retry=RetryPolicy(max_attempts=5))
    attempt = Flaky(error)
    with pytest.raises(type(error)):
        await runner(clock).run("k", policy, attempt)
    assert attempt.attempts == 1 and clock.sleeps == []


async def test_an_attempt_that_overruns_its_timeout_is_a_timeout() -> None:
    clock = FakeClock()
    attempts = 0

    async def slow() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(5)
        return "late"

    policy = FailurePolicy(timeout_seconds=0.02, retry=RetryPolicy(max_attempts=2, jitter=0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(errors.Timeout) as caught:
        await runner(clock).run("slow@sql", policy, slow)
    assert caught.value.code == "timeout" and caught.value.retryable
    assert attempts == 2
    assert loop.time() - started < 1.0


async def test_the_breaker_opens_after_threshold_then_fails_fast() -> None:
    clock = FakeClock()
    r = runner(clock)
    policy = FailurePolicy(failure_threshold=3, reset_seconds=10)
    attempt = Flaky(*(errors.Unavailable("down") for _ in range(3)))
    for _ in range(3):
        with pytest.raises(errors.Unavailable) as caught:
            await r.run("svc", policy, attempt)
        assert caught.value.code == "unavailable"
    assert r.breaker("svc", policy).state == "open"
    with pytest.raises(errors.CircuitOpen) as caught:
        await r.run("svc", policy, attempt)
    assert caught.value.code == "circuit_open" and caught.value.retryable
    assert attempt.attempts == 3  # failed fast: the attempt did not run
    assert await r.run("other", policy, attempt) == "ok"  # one breaker per key


async def test_half_open_after_reset_lets_one_trial_through() -> None:
    clock = FakeClock()
    r = runner(clock)
    policy = FailurePolicy(failure_threshold=2, reset_seconds=10)
    for _ in range(2):
        with pytest.raises(errors.Unavailable):
            await r.run("svc", policy, Flaky(errors.Unavailable("down")))
    clock.advance(9.9)
    with pytest.raises(errors.CircuitOpen):
        await r.run("svc", policy, Flaky())
    clock.advance(0.1)
    assert r.breaker("svc", policy).state == "half_open"
    # a failed trial opens the breaker again at once
    with pytest.raises(errors.Unavailable):
        await r.run("svc", policy, Flaky(errors.Unavailable("still down")))
    assert r.breaker("svc", policy).state == "open"
    clock.advance(10)
    # while the one trial is in flight, other calls still fail fast
    gate = asyncio.Event()

    async def trial() -> str:
        await gate.wait()
        return "recovered"

    first = asyncio.create_task(r.run("svc", policy, trial))
    await asyncio.sleep(0)
    with pytest.raises(errors.CircuitOpen):
        await r.run("svc", policy, Flaky())
    gate.set()
    assert await first == "recovered"
    assert r.breaker("svc", policy).state == "closed"
    assert await r.run("svc", policy, Flaky()) == "ok"


async def test_non_retryable_errors_do_not_trip_the_breaker() -> None:
    clock = FakeClock()
    r = runner(clock)
    policy = FailurePolicy(failure_threshold=2)
    for _ in range(5):
        with pytest.raises(errors.InvalidInput):
            await r.run("svc", policy, Flaky(errors.InvalidInput("bad")))
    assert r.breaker("svc", policy).state == "closed"


def test_breaker_counts_consecutive_failures_only() -> None:
    clock = FakeClock()
    br = CircuitBreaker(3, 5, clock.now)
    br.failure()
    br.failure()
    br.success()
    br.failure()
    br.failure()
    assert br.state == "closed"
    br.failure()
    assert br.state == "open"


async def test_fallback_runs_when_attempts_are_exhausted_or_the_circuit_is_open() -> None:
    clock = FakeClock()
    r = runner(clock)
    policy = FailurePolicy(retry=RetryPolicy(max_attempts=2, jitter=0), failure_threshold=2)
    fallback_runs = 0

    async def fallback() -> str:
        nonlocal fallback_runs
        fallback_runs += 1
        return "fallback"

    primary = Flaky(*(errors.Unavailable("down") for _ in range(10)))
    assert await r.run("svc", policy, primary, fallback) == "fallback"
    assert primary.attempts == 2
    assert await r.run("svc", policy, primary, fallback) == "fallback"  # circuit open now
    assert primary.attempts == 2 and fallback_runs == 2
    with pytest.raises(errors.Conflict):  # a non-retryable error is not covered up
        await r.run("x", policy, Flaky(errors.Conflict("no")), fallback)


# --- through the kernel -----------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_the_kernel_retries_a_flaky_handler_under_one_hold(
    open_kernel: OpenKernel, clock: FakeClock
) -> None:
    probe = Probe(
        cost="0.10 USD",
        policy=FailurePolicy(retry=RetryPolicy(max_attempts=3, initial_seconds=0.5, jitter=0)),
    )
    k = await open_kernel(probe.group, clock=clock)
    worker = await make_agent(k, "worker", ["test.work"], budget="1.00 USD")
    probe.script = [errors.Unavailable("1"), errors.Busy("2")]
    out: Any = await k.invoke("test.work", {}, token=worker.token)
    assert out.run == 3 and probe.runs == 3
    assert clock.sleeps == [0.5, 1.0]
    assert (await balance(k, worker.id)).available == usd("0.90")  # charged once
    [event] = await audit_events(k, syscall="test.work")
    assert event["outcome"] == "ok"


async def test_the_kernel_does_not_retry_a_non_retryable_error(
    open_kernel: OpenKernel, clock: FakeClock
) -> None:
    probe = Probe(policy=FailurePolicy(retry=RetryPolicy(max_attempts=4)))
    k = await open_kernel(probe.group, clock=clock)
    with pytest.raises(errors.Conflict):
        await k.invoke("test.work", {"fail": "fatal"}, token=k.admin_token())
    assert probe.runs == 1 and clock.sleeps == []


async def test_the_kernel_times_out_a_slow_handler(open_kernel: OpenKernel) -> None:
    probe = Probe(policy=FailurePolicy(timeout_seconds=0.05))
    k = await open_kernel(probe.group)
    worker = await make_agent(k, "worker", ["test.work"], budget="1.00 USD")
    with pytest.raises(errors.Timeout):
        await k.invoke("test.work", {"sleep": 5}, token=worker.token)
    assert (await balance(k, worker.id)).available == usd("1.00")  # hold voided
    [event] = await audit_events(k, syscall="test.work")
    assert event["error_code"] == "timeout"


async def test_the_kernel_breaker_opens_and_recovers(
    open_kernel: OpenKernel, clock: FakeClock
) -> None:
    probe = Probe(policy=FailurePolicy(failure_threshold=3, reset_seconds=30))
    k = await open_kernel(probe.group, clock=clock)
    admin = k.admin_token()
    for _ in range(3):
        with pytest.raises(errors.Unavailable):
            await k.invoke("test.work", {"fail": "retryable"}, token=admin)
    with pytest.raises(errors.CircuitOpen):
        await k.invoke("test.work", {}, token=admin)
    assert probe.runs == 3
    codes = [e["error_code"] for e in await audit_events(k, syscall="test.work")]
    assert codes == ["unavailable"] * 3 + ["circuit_open"]
    clock.advance(30)
    out: Any = await k.invoke("test.work", {}, token=admin)  # the half-open trial succeeds
    assert out.run == 4
    assert (await k.invoke("test.work", {}, token=admin)).run == 5  # type: ignore[attr-defined]


async def test_the_kernel_falls_back_to_another_syscall(
    open_kernel: OpenKernel, clock: FakeClock
) -> None:
    backup = Probe("test.backup", cost=None)
    primary = Probe(
        "test.primary",
        cost=None,
        policy=FailurePolicy(retry=RetryPolicy(max_attempts=2, jitter=0), fallback="test.backup"),
    )
    k = await open_kernel(primary.group, backup.group, clock=clock)
    worker = await make_agent(k, "worker", ["test.*"])
    primary.script = [errors.Unavailable("1"), errors.Unavailable("2")]
    out: Any = await k.invoke("test.primary", {"text": "hello"}, token=worker.token)
    assert (out.text, primary.runs, backup.runs) == ("hello", 2, 1)
    # the fallback ran through the chain as the same caller, so it was audited too
    [event] = await audit_events(k, syscall="test.backup")
    assert event["actor_id"] == worker.id


async def test_the_fallback_is_authorized_like_any_call(
    open_kernel: OpenKernel, clock: FakeClock
) -> None:
    backup = Probe("test.backup", cost=None)
    primary = Probe(
        "test.primary", cost=None, policy=FailurePolicy(fallback="test.backup"),
    )
    k = await open_kernel(primary.group, backup.group, clock=clock)
    worker = await make_agent(k, "worker", ["test.primary"])
    primary.script = [errors.Unavailable("down")]
    with pytest.raises(errors.PermissionDenied):
        await k.invoke("test.primary", {}, token=worker.token)
    assert backup.runs == 0
