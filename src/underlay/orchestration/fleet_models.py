"""The declarative fleet: what ``underlay apply -f fleet.yaml`` sends, and what comes back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from underlay.orchestration.models import QUEUE_NAME
from underlay.types import MoneyField, StrictModel

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class Program(StrictModel):
    """What an agent runs: exactly one of ``python`` — an entry point run as a durable task
    by the workers (``await fn(run, input)``) — or ``command`` — a shell line run in the
    agent's own sandbox, with its token and the API URL (``UNDERLAY_TOKEN``,
    ``UNDERLAY_URL``) as its only environment and the API as its only reachable host."""

    python: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:function"
    )
    command: str | None = Field(default=None, min_length=1, max_length=10_000)
    template: str = Field(default="default", description="the sandbox's root filesystem")
    input: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> Program:
        if (self.python is None) == (self.command is None):
            raise ValueError("program: give exactly one of python or command")
        return self

    def describe(self) -> str:
        return self.python or f"sandbox: {self.command}"


class AgentSpec(StrictModel):
    name: str = Field(pattern=NAME)
    program: Program
    replicas: int = Field(default=1, ge=0, le=200)
    restart: Literal["permanent", "transient", "temporary"] = "permanent"
    capabilities: list[str] = Field(default_factory=list, max_length=50)
    budget: MoneyField | None = None
    queue: str = Field(default="default", pattern=QUEUE_NAME)


class SupervisionSpec(StrictModel):
    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    intensity: int = Field(default=3, ge=0, le=1000)
    period: float = Field(default=60.0, gt=0, le=86400)


class Judge(StrictModel):
    """An LLM judge: any OpenAI-compatible endpoint, given the instructions and the run."""

    base_url: str = Field(description="e.g. http://127.0.0.1:11434/v1")
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(default=None, description="variable holding the key")
    instructions: str = Field(min_length=1, max_length=8000)
    timeout_seconds: float = Field(default=60.0, gt=0, le=600)


class Check(StrictModel):
    """What an evaluator checks when a member's run ends: exactly one of ``rule`` — on the
    run's outcome: ``succeeded`` (bool), ``result`` (key/values the Python program's
    result must hold), ``output_contains`` (text the command printed) —, ``command``, a
    test command run in the member's sandbox before it goes (exit 0 passes), or ``llm``, a
    judge model that reads the outcome and answers pass or fail with a reason."""

    rule: dict[str, Any] | None = None
    command: str | None = Field(default=None, min_length=1, max_length=10_000)
    llm: Judge | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Check:
        if sum(x is not None for x in (self.rule, self.command, self.llm)) != 1:
            raise ValueError("check: give exactly one of rule, command or llm")
        unknown = set(self.rule or {}) - {"succeeded", "result", "output_contains"}
        if unknown:
            raise ValueError(f"check.rule: unknown {sorted(unknown)} (succeeded, result, "
                             "output_contains)")  # fmt: skip
        return self


class EvaluatorSpec(StrictModel):
    name: str = Field(pattern=NAME)
    agents: list[str] | None = Field(default=None, description="default: every agent")
    check: Check
    action: Literal["restart", "kill", "pause", "escalate"] = Field(
        description="on a failed check: a new run with feedback, stop for good, wait for a "
        "human, or tell one"
    )
    feedback: str = Field(default="", max_length=4000, description="given to the next run")


class FleetSpec(StrictModel):
    name: str = Field(pattern=NAME)
    agents: list[AgentSpec] = Field(min_length=1, max_length=50)
    supervision: SupervisionSpec = Field(default_factory=SupervisionSpec)
    evaluators: list[EvaluatorSpec] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _unique_agents(self) -> FleetSpec:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("agents: names must be unique in a fleet")
        return self


class ApplyFleet(StrictModel):
    spec: FleetSpec
    dry_run: bool = Field(default=False, description="only show what would change")


class Applied(StrictModel):
    name: str
    generation: int
    changes: list[str] = Field(description="'+ added', '- removed', '~ changed' lines")
    applied: bool


class FleetRef(StrictModel):
    name: str = Field(pattern=NAME)


class Member(StrictModel):
    agent: str
    replica: int
    agent_id: str | None
    task_id: str | None
    sandbox_id: str | None = None
    state: str
    restarts: int


class Fleet(StrictModel):
    name: str
    generation: int
    spec: FleetSpec
    members: list[Member]
    escalation_id: str | None = None
    deleted: bool = False


class FleetList(StrictModel):
    items: list[Fleet]
