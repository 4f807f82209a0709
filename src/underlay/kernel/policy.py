"""Failure policies: timeout, retry with backoff and jitter, circuit breaker, fallback.

Semantics (the same for every syscall, declared per syscall in the table):

* **timeout** bounds one attempt; an attempt that overruns raises ``errors.Timeout``.
* **retry** re-runs an attempt only when the error is ``retryable`` (``Unavailable``,
  ``Busy``, ``Timeout``...). Delay before attempt *n* (n >= 2) is
  ``min(max_interval, initial * backoff ** (n - 2))`` scaled by a random factor in
  ``[1 - jitter, 1 + jitter]``. Non-retryable errors propagate at once.
* **circuit breaker**, one per (syscall, backend) in this process: after
  ``failure_threshold`` consecutive retryable failures it opens and calls fail fast with
  ``errors.CircuitOpen`` for ``reset_seconds``; then one trial call is let through
  (half-open): success closes it, failure opens it again.
* **fallback** names another syscall run with the same input when every attempt failed
  with a retryable error or the circuit is open.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from underlay import errors

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    initial_seconds: float = 0.05
    backoff: float = 2.0
    max_interval_seconds: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before ``attempt`` (the first retry is attempt 2)."""
        base = min(self.max_interval_seconds, self.initial_seconds * self.backoff ** (attempt - 2))
        return max(0.0, base * rng.uniform(1 - self.jitter, 1 + self.jitter))


@dataclass(frozen=True)
class FailurePolicy:
    timeout_seconds: float | None = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    failure_threshold: int = 5
    reset_seconds: float = 30.0
    fallback: str | None = None

    def describe(self) -> str:
        parts = []
        if self.timeout_seconds:
            parts.append(f"timeout {self.timeout_seconds:g}s")
        if self.retry.max_attempts > 1:
            parts.append(f"retry x{self.retry.max_attempts}")
        parts.append(f"breaker {self.failure_threshold}/{self.reset_seconds:g}s")
        if self.fallback:
            parts.append(f"fallback {self.fallback}")
        return ", ".join(parts)


class CircuitBreaker:
    """Counts consecutive retryable failures of one (syscall, backend)."""

    def __init__(self, threshold: int, reset_seconds: float, now: Callable[[], float]) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._now = now
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self._now() - self.opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    def before(self, key: str) -> None:
        state = self.state
        if state == "open" or (state == "half_open" and self._trial_running):
            raise errors.CircuitOpen(f"circuit open for {key}; failing fast", circuit=key)
        if state == "half_open":
            self._trial_running = True

    def success(self) -> None:
        self.failures, self.opened_at, self._trial_running = 0, None, False

    def failure(self) -> None:
        self._trial_running = False
        self.failures += 1
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = self._now()


class PolicyRunner:
    """Applies a ``FailurePolicy`` to an attempt; owns this process's circuit breakers."""

    def __init__(self, now: Callable[[], float], sleep: Callable[[float], Awaitable[Any]]) -> None:
        self._now = now
        self._sleep = sleep
        self._breakers: dict[str, CircuitBreaker] = {}
        self.rng = random.Random()

    def breaker(self, key: str, policy: FailurePolicy) -> CircuitBreaker:
        br = self._breakers.get(key)
        if br is None:
            br = CircuitBreaker(policy.failure_threshold, policy.reset_seconds, self._now)
            self._breakers[key] = br
        return br

    async def run(
        self,
        key: str,
        policy: FailurePolicy,
        attempt: Callable[[], Awaitable[T]],
        fallback: Callable[[], Awaitable[T]] | None = None,
        on_retry: Callable[[int, errors.UnderlayError], None] | None = None,
    ) -> T:
        breaker = self.breaker(key, policy)
        last: errors.UnderlayError | None = None
        for n in range(1, policy.retry.max_attempts + 1):
            if n > 1:
                await self._sleep(policy.retry.delay(n, self.rng))
            try:
                breaker.before(key)
            except errors.CircuitOpen as exc:
                last = exc
                break
            try:
                if policy.timeout_seconds:
                    async with asyncio.timeout(policy.timeout_seconds):
                        result = await attempt()
                else:
                    result = await attempt()
            except TimeoutError:
                last = errors.Timeout(f"{key} took longer than {policy.timeout_seconds:g}s")
            except errors.UnderlayError as exc:
                if not exc.retryable:
                    breaker.success()  # the backend answered; the caller was at fault
                    raise
                last = exc
            else:
                breaker.success()
                return result
            breaker.failure()
            if on_retry and n < policy.retry.max_attempts:
                on_retry(n, last)
        assert last is not None
        if fallback is not None:
            return await fallback()
        raise last
