"""Tool calls of programs: syscalls made as the task's agent, under declared failure policies.

A Python program's ``await run.invoke("memory.search", {...})`` and every tool call of the
built-in LLM loop come here. One call:

* runs as the agent that submitted the task (its capabilities and budget; the spend is
  attributed to the task and attempt), through the whole kernel chain — authorization,
  audit, idempotency (the step's stable key, so a retry or a re-run after a crash does
  not repeat an effect), budget, and the syscall's own policy;
* under the declared policy of the tool (``failure_policy.tools[name]``, else
  ``failure_policy.default`` — from the fleet, or from any task's input): a timeout per
  try, retries of transient errors with exponential backoff and jitter, a circuit breaker
  per (org, tool) in this process — the kernel's engine (kernel/policy.py), so a tool
  fails the same way as a syscall does —, then the ``fallback`` chain: each next tool is
  given the same input when the one before failed transiently or its circuit is open;
* a final failure is classified (failures.py): ``needs_human`` and ``budget`` errors go to
  the inbox as for any task; a transient or permanent one raises, or — with
  ``on_failure: escalate`` — becomes ``NeedsHuman``, so the task waits for a person.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from underlay import errors
from underlay.identity.service import acting_agent
from underlay.kernel.context import Principal
from underlay.kernel.policy import FailurePolicy, RetryPolicy
from underlay.orchestration.failures import NeedsHuman, classify
from underlay.orchestration.fleet_models import FailurePolicySpec, PoliciesSpec
from underlay.storage.schema import tasks


def engine_policy(spec: FailurePolicySpec) -> FailurePolicy:
    """The declaration as the kernel's policy engine takes it (fallbacks are run here)."""
    r, b = spec.retry, spec.circuit_breaker
    retry = RetryPolicy(r.max_attempts, r.initial_seconds, r.backoff, r.max_interval_seconds,
                        r.jitter)  # fmt: skip
    return FailurePolicy(spec.timeout_seconds, retry, b.failure_threshold, b.reset_seconds)


class Toolbox:
    """The syscalls one task attempt makes as its agent."""

    def __init__(
        self, kernel: Any, principal: Principal, policies: PoliciesSpec | None = None
    ) -> None:
        self.kernel = kernel
        self.principal = principal
        self.policies = policies or PoliciesSpec()

    @classmethod
    async def for_task(
        cls, kernel: Any, task_id: str, attempt: int, policies: PoliciesSpec | None
    ) -> Toolbox:
        """The toolbox of a task: its submitter, who must be an active agent."""
        async with kernel.db.read() as conn:
            task = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
            if task is None:
                raise errors.NotFound(f"task {task_id} is gone")
            principal = await acting_agent(
                conn, task.org_id, task.submitted_by, task_id=task_id, attempt=attempt
            )
        if principal is None:
            raise errors.PermissionDenied(
                f"task {task_id} was not submitted by an active agent; only an agent's "
                "tasks make tool calls"
            )
        return cls(kernel, principal, policies)

    def policy(self, tool: str) -> FailurePolicySpec:
        return self.policies.tools.get(tool, self.policies.default)

    async def call(self, tool: str, args: dict[str, Any], key: str) -> dict[str, Any]:
        """``tool`` (a syscall name) with ``args``; its result as JSON (secrets masked: a
        result is checkpointed, and an LLM loop shows it to its model)."""
        declared = self.policy(tool)
        chain = [tool, *declared.fallback]
        failure: errors.UnderlayError | None = None
        for i, name in enumerate(chain):
            if name not in self.kernel.table:
                raise errors.InvalidInput(f"no tool (syscall) named {name!r}", field="tool")
            try:
                return await self._try(name, args, f"{key}:{i}" if i else key)
            except errors.UnderlayError as exc:
                failure = exc
                if not exc.retryable or classify(exc) != "transient":
                    break  # a caller's error, or a person's: another tool will not help
        assert failure is not None
        if declared.on_failure == "escalate" and classify(failure) in ("transient", "permanent"):
            raise NeedsHuman(
                f"tool {tool} failed ({' -> '.join(chain)}): {failure.code}: {failure.message}"
            ) from None
        raise failure

    async def _try(self, name: str, args: dict[str, Any], key: str) -> dict[str, Any]:
        policy = engine_policy(self.policy(name))
        breaker = f"tool:{self.principal.org_id}:{name}"

        async def once() -> dict[str, Any]:
            result = await self.kernel.invoke(
                name, args, principal=self.principal, idempotency_key=key
            )
            return dict(result.model_dump(mode="json"))  # secrets stay masked

        return await self.kernel.policies.run(breaker, policy, once)
