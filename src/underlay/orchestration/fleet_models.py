"""The declarative fleet: what ``underlay apply -f fleet.yaml`` sends, and what comes back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from underlay.compute.models import Limits
from underlay.orchestration.models import QUEUE_NAME
from underlay.types import MoneyField, StrictModel

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class LLMLoop(StrictModel):
    """The built-in agent loop: a model (any OpenAI-compatible endpoint) works towards
    ``goal``, calling the syscalls named in ``tools`` as the agent, until it answers."""

    base_url: str = Field(description="e.g. http://127.0.0.1:11434/v1")
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(default=None, description="variable holding the key")
    instructions: str = Field(default="", max_length=20_000, description="the system prompt")
    goal: str = Field(min_length=1, max_length=20_000, description="the first user message")
    tools: list[str] = Field(default_factory=list, max_length=64, description="syscall names")
    max_turns: int = Field(default=20, ge=1, le=500)
    timeout_seconds: float = Field(default=120.0, gt=0, le=600, description="per model call")


class Program(StrictModel):
    """What an agent runs: exactly one of ``python`` — an entry point run as a durable task
    by the workers (``await fn(run, input)``) —, ``command`` — a shell line run in the
    agent's own sandbox, with its token and the API URL (``UNDERLAY_TOKEN``,
    ``UNDERLAY_URL``) as its only environment and the API as its only reachable host — or
    ``llm``, the built-in agent loop (run by the workers, each turn a durable step)."""

    python: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:function"
    )
    command: str | None = Field(default=None, min_length=1, max_length=10_000)
    llm: LLMLoop | None = None
    template: str = Field(default="default", description="the sandbox's root filesystem")
    input: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> Program:
        if sum(x is not None for x in (self.python, self.command, self.llm)) != 1:
            raise ValueError("program: give exactly one of python, command or llm")
        return self

    def describe(self) -> str:
        if self.llm is not None:
            return f"llm: {self.llm.model}"
        return self.python or f"sandbox: {self.command}"


class RetrySpec(StrictModel):
    max_attempts: int = Field(default=3, ge=1, le=100)
    initial_seconds: float = Field(default=0.2, ge=0, le=3600)
    backoff: float = Field(default=2.0, ge=1, le=10)
    max_interval_seconds: float = Field(default=10.0, ge=0, le=3600)
    jitter: float = Field(default=0.2, ge=0, le=1)


class BreakerSpec(StrictModel):
    failure_threshold: int = Field(default=5, ge=1, le=1000)
    reset_seconds: float = Field(default=30.0, gt=0, le=86400)


class FailurePolicySpec(StrictModel):
    """How a tool call (a syscall a Python or LLM program makes through ``run.invoke``)
    meets failure — the kernel's policy engine, declared here instead of in code: a
    timeout per try, retries of transient errors with backoff and jitter, a circuit
    breaker, a fallback chain of other tools given the same input, and what a final
    failure does (``fail`` the call, or ``escalate`` — the task waits on a human)."""

    timeout_seconds: float | None = Field(default=30.0, gt=0, le=3600)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    circuit_breaker: BreakerSpec = Field(default_factory=BreakerSpec)
    fallback: list[str] = Field(default_factory=list, max_length=10, description="tool names")
    on_failure: Literal["fail", "escalate"] = "fail"


class PoliciesSpec(StrictModel):
    """The fleet's default policy, and overrides per tool (by syscall name)."""

    default: FailurePolicySpec = Field(default_factory=FailurePolicySpec)
    tools: dict[str, FailurePolicySpec] = Field(default_factory=dict, max_length=100)


class HealthSpec(StrictModel):
    """When a running member is ``stalled``: no heartbeat (``fleets.heartbeat``) for
    ``heartbeat_seconds``, or no change of its reported progress for ``progress_seconds``
    (counted from the start of its run). Unset: not checked."""

    heartbeat_seconds: float | None = Field(default=None, gt=0, le=86400)
    progress_seconds: float | None = Field(default=None, gt=0, le=7 * 86400)


class AutoscaleSpec(StrictModel):
    """Replicas follow the depth of ``queue`` (its queued and leased tasks, members' own
    runs left out): ``ceil(depth / tasks_per_replica)`` within ``[min, max]``; fewer only
    after the depth has stayed lower for ``scale_down_delay_seconds``."""

    queue: str = Field(pattern=QUEUE_NAME)
    min_replicas: int = Field(default=0, ge=0, le=200)
    max_replicas: int = Field(default=10, ge=1, le=200)
    tasks_per_replica: int = Field(default=1, ge=1, le=100_000)
    scale_down_delay_seconds: float = Field(default=30.0, ge=0, le=86400)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscale: min_replicas is above max_replicas")
        return self


class MemoryScope(StrictModel):
    """The memory an agent's runs use by default (memory.py's scope); unset fields stay
    unset. Without one, a fleet agent's scope is ``agent_id: <fleet>.<agent>`` — shared
    by its replicas and kept across its runs. A default, not a boundary: capabilities
    decide what an agent may read."""

    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    agent_id: str | None = Field(default=None, min_length=1, max_length=200)
    run_id: str | None = Field(default=None, min_length=1, max_length=200)


class AgentSpec(StrictModel):
    """One kind of agent in a fleet: its program, how many, and what each one gets."""

    name: str = Field(pattern=NAME)
    program: Program
    resources: Limits | None = Field(
        default=None, description="a command program's sandbox limits (default: compute's)"
    )
    memory: MemoryScope | None = None
    replicas: int = Field(default=1, ge=0, le=200, description="fixed (without autoscale)")
    autoscale: AutoscaleSpec | None = None
    health: HealthSpec = Field(default_factory=HealthSpec)
    termination_grace_seconds: float = Field(
        default=10.0, ge=0, le=3600, description="from the stop signal to the kill"
    )
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
    action: Literal["message", "restart", "kill", "pause", "escalate"] = Field(
        description="on a failed check: tell the agent and let it go on (llm programs), a "
        "new run with feedback, stop for good, wait for a human, or tell one"
    )
    feedback: str = Field(default="", max_length=4000, description="given to the next run")


class FleetSpec(StrictModel):
    name: str = Field(pattern=NAME)
    agents: list[AgentSpec] = Field(min_length=1, max_length=50)
    supervision: SupervisionSpec = Field(default_factory=SupervisionSpec)
    evaluators: list[EvaluatorSpec] = Field(default_factory=list, max_length=20)
    failure_policy: PoliciesSpec = Field(default_factory=PoliciesSpec)

    @model_validator(mode="after")
    def _consistent(self) -> FleetSpec:
        for a in self.agents:
            if a.resources is not None and a.program.command is None:
                raise ValueError(
                    f"agent {a.name}: resources apply to command programs (their sandbox); "
                    "python and llm programs run in the workers' processes"
                )
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("agents: names must be unique in a fleet")
        loops = {a.name for a in self.agents if a.program.llm is not None}
        for ev in self.evaluators:
            if ev.action != "message":
                continue
            targets = set(names if ev.agents is None else ev.agents)
            if not targets <= loops or ev.check.command is not None:
                raise ValueError(
                    f"evaluator {ev.name}: action message needs llm programs (the run "
                    "goes on with the message) and a rule or llm check"
                )
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
    beat_at: float | None = Field(default=None, description="its run's last heartbeat")
    progress: str | None = Field(default=None, description="as its run last reported it")


class Heartbeat(StrictModel):
    """A fleet member's run saying it is alive, and (optionally) how far it has got: any
    change of ``progress`` is progress."""

    progress: str | None = Field(default=None, max_length=200)


class Membership(StrictModel):
    """What a fleet member's run learns of itself (``fleets.me``): where it belongs, its
    memory scope, and an evaluator's feedback for this run."""

    fleet: str
    agent: str
    replica: int
    state: str
    restarts: int
    memory_scope: dict[str, str]
    feedback: str | None = None


class HeartbeatAck(StrictModel):
    fleet: str
    agent: str
    replica: int
    state: str


class Fleet(StrictModel):
    name: str
    generation: int
    spec: FleetSpec
    members: list[Member]
    escalation_id: str | None = None
    deleted: bool = False


class FleetList(StrictModel):
    items: list[Fleet]


def memory_scope(fleet: str, agent: AgentSpec) -> dict[str, str]:
    """The memory scope of ``agent``'s runs (see ``MemoryScope``)."""
    if agent.memory is None:
        return {"agent_id": f"{fleet}.{agent.name}"}
    return agent.memory.model_dump(exclude_none=True)
