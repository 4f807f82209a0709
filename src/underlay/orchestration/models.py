"""Inputs and outputs of the ``tasks.*`` syscalls."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from underlay.types import MoneyField, StrictModel

QUEUE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,99}$"


class SubmitTask(StrictModel):
    handler: str = Field(min_length=1, max_length=200, description="a registered task handler")
    input: dict[str, Any] = Field(default_factory=dict)
    queue: str = Field(default="default", pattern=QUEUE_NAME)
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first")
    max_attempts: int = Field(default=3, ge=1, le=100)
    dedupe_key: str | None = Field(
        default=None, max_length=200, description="submitting again with it returns the first task"
    )


class TaskRef(StrictModel):
    task_id: str = Field(min_length=1, max_length=100)


class ListTasks(StrictModel):
    state: str | None = Field(default=None, pattern="^(queued|leased|succeeded|failed|cancelled)$")
    queue: str | None = Field(default=None, pattern=QUEUE_NAME)
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None


class SetConcurrency(StrictModel):
    queue: str = Field(pattern=QUEUE_NAME)
    concurrency: int = Field(ge=1, le=100_000)


class Task(StrictModel):
    id: str
    queue: str
    handler: str
    state: str
    priority: int
    attempts: int
    max_attempts: int
    fence: int
    worker_id: str | None
    waiting_on: str | None = None
    input: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    created: bool = Field(default=True, description="False: an earlier task with the dedupe key")


class TaskPage(StrictModel):
    items: list[Task]
    next_cursor: str | None = None


class QueueSettings(StrictModel):
    queue: str
    concurrency: int


class RaiseEscalation(StrictModel):
    summary: str = Field(min_length=1, max_length=2000)
    context: dict[str, Any] = Field(default_factory=dict)
    kind: str = Field(default="escalation", pattern="^(escalation|approval)$")
    dedupe_key: str | None = Field(
        default=None, max_length=200, description="raising again with it returns the first one"
    )


class EscalationRef(StrictModel):
    escalation_id: str = Field(min_length=1, max_length=100)


class ListEscalations(StrictModel):
    state: str | None = Field(default="open", pattern="^(open|resolved)$")
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None


class ResolveEscalation(EscalationRef):
    resolution: dict[str, Any] = Field(
        description='the answer, e.g. {"approved": true, "note": "..."}; a waiting task gets it'
    )


class Escalation(StrictModel):
    id: str
    kind: str
    source: str
    summary: str
    context: dict[str, Any]
    state: str
    resolution: dict[str, Any] | None
    resolved_by: str | None
    task_id: str | None
    raised_by: str
    created_at: float
    resolved_at: float | None


class EscalationPage(StrictModel):
    items: list[Escalation]
    next_cursor: str | None = None


class TaskAttempt(StrictModel):
    attempt: int
    fence: int
    worker_id: str
    started_at: float
    finished_at: float | None
    outcome: str
    error_class: str | None


class AttemptList(StrictModel):
    items: list[TaskAttempt]


class CostQuery(StrictModel):
    by: str = Field(
        default="handler",
        pattern="^(handler|queue|agent)$",
        description="agent: the task's submitter (a fleet member submits its own runs)",
    )
    since: float = Field(default=0.0, ge=0, description="attempts started at or after (epoch s)")


class CostRow(StrictModel):
    key: str
    tasks: int
    succeeded: int
    attempts: int
    worker_seconds: float
    seconds_per_success: float | None
    attempts_per_success: float | None
    retry_tax: float = Field(description="share of worker time on attempts that did not succeed")
    spend: MoneyField | None = Field(
        description="posted ledger spend of the tasks' attempts (null without budget.read)"
    )
    spend_per_success: MoneyField | None = Field(description="spend over the tasks that succeeded")
    spend_retry_tax: float | None = Field(
        description="share of spend in attempts that did not succeed"
    )
    agent_spend: MoneyField | None = Field(
        description="by agent: all the agent spent, in tasks or not (metering included)"
    )


class CostReport(StrictModel):
    by: str
    rows: list[CostRow]
