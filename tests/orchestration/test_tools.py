"""Tool calls under declared failure policies: retry, circuit breaker, fallback chain,
escalation — the kernel's policy engine, as a fleet (or a task) declares it."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.helpers import OpenKernel, Probe, audit_events, make_agent
from underlay import errors
from underlay.orchestration.failures import NeedsHuman
from underlay.orchestration.fleet_models import FleetSpec, PoliciesSpec
from underlay.orchestration.tools import Toolbox, engine_policy

FAST = {"initial_seconds": 0.001, "max_interval_seconds": 0.005}


def policies(**declared: Any) -> PoliciesSpec:
    return PoliciesSpec.model_validate(declared)


async def toolbox(open_kernel: OpenKernel, *probes: Probe, **declared: Any) -> Toolbox:
    kernel = await open_kernel(*(p.group for p in probes))
    agent = await make_agent(kernel, "worker", ["test.*"], budget="10 USD")
    principal = await kernel.authn.authenticate(agent.token)
    return Toolbox(kernel, principal, policies(**declared))


def test_a_declaration_maps_onto_the_kernel_engine() -> None:
    breaker = {"failure_threshold": 2, "reset_seconds": 9}
    retry = {"max_attempts": 4, "jitter": 0}
    spec = policies(default={"timeout_seconds": 5, "retry": retry, "circuit_breaker": breaker})
    engine = engine_policy(spec.default)
    assert (engine.timeout_seconds, engine.retry.max_attempts) == (5, 4)
    assert (engine.failure_threshold, engine.reset_seconds, engine.fallback) == (2, 9, None)


def test_bad_declarations_are_named() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        policies(default={"retry": {"max_attempts": 0}})
    with pytest.raises(ValueError, match="on_failure"):
        policies(tools={"x": {"on_failure": "panic"}})
    fleet = {"name": "f", "agents": [{"name": "a", "program": {"python": "m:f"}}]}
    with pytest.raises(ValueError, match="failure_policy"):
        FleetSpec.model_validate({**fleet, "failure_policy": {"defaults": {}}})


async def test_transient_failures_are_retried_with_one_key(open_kernel: OpenKernel) -> None:
    probe = Probe()
    box = await toolbox(open_kernel, probe, default={"retry": {"max_attempts": 3, **FAST}})
    probe.script = [errors.Unavailable("down"), errors.Busy("busy")]
    result = await box.call("test.work", {"text": "hi"}, "task_1:invoke:test.work")
    assert (result["text"], probe.runs) == ("hi", 3)
    again = await box.call("test.work", {"text": "hi"}, "task_1:invoke:test.work")
    assert (again, probe.runs) == (result, 3)  # the key: a re-run after a crash repeats nothing


async def test_a_permanent_failure_is_not_retried(open_kernel: OpenKernel) -> None:
    probe, backup = Probe(), Probe("test.backup")
    declared = {"retry": {"max_attempts": 5, **FAST}, "fallback": ["test.backup"]}
    box = await toolbox(open_kernel, probe, backup, default=declared)
    with pytest.raises(errors.Conflict, match="told to fail"):
        await box.call("test.work", {"fail": "fatal"}, "k1")
    assert (probe.runs, backup.runs) == (1, 0)  # a caller's error: no retry, no fallback


async def test_the_fallback_chain_takes_over_and_the_breaker_opens(
    open_kernel: OpenKernel,
) -> None:
    probe, backup = Probe(), Probe("test.backup")
    declared = {"retry": {"max_attempts": 2, **FAST},
                "circuit_breaker": {"failure_threshold": 2, "reset_seconds": 60},
                "fallback": ["test.backup"]}  # fmt: skip
    box = await toolbox(open_kernel, probe, backup, tools={"test.work": declared})
    probe.script = [errors.Unavailable("down")] * 10
    first = await box.call("test.work", {"text": "a"}, "k1")
    assert (first["text"], probe.runs, backup.runs) == ("a", 2, 1)
    second = await box.call("test.work", {"text": "b"}, "k2")
    assert (second["text"], probe.runs, backup.runs) == ("b", 2, 2)  # open: fails fast
    events = await audit_events(box.kernel, box.principal.org_id, syscall="test.backup")
    assert {e["actor_id"] for e in events} == {box.principal.id}  # as the agent, audited


async def test_a_final_failure_fails_or_escalates_as_declared(open_kernel: OpenKernel) -> None:
    probe = Probe()
    box = await toolbox(
        open_kernel, probe,
        default={"retry": {"max_attempts": 2, **FAST}, "on_failure": "fail"},
        tools={"test.work": {"retry": {"max_attempts": 2, **FAST}, "on_failure": "escalate"}},
    )  # fmt: skip
    probe.script = [errors.Unavailable("down")] * 4
    with pytest.raises(NeedsHuman, match=r"tool test.work failed \(test.work\): unavailable"):
        await box.call("test.work", {}, "k1")
    box.policies = policies(default={"retry": {"max_attempts": 2, **FAST}})
    with pytest.raises(errors.Unavailable):
        await box.call("test.work", {}, "k2")
    assert probe.runs == 4


async def test_what_a_person_must_fix_is_not_retried(open_kernel: OpenKernel) -> None:
    probe = Probe(capability="test.secret")
    kernel = await open_kernel(probe.group)
    agent = await make_agent(kernel, "worker", ["test.work"])
    declared = {"retry": {"max_attempts": 3, **FAST}, "on_failure": "escalate"}
    box = Toolbox(kernel, await kernel.authn.authenticate(agent.token), policies(default=declared))
    with pytest.raises(errors.PermissionDenied):  # needs_human: the task's inbox path
        await box.call("test.work", {}, "k1")
    with pytest.raises(errors.InvalidInput, match="no tool"):
        await box.call("test.nothing", {}, "k2")
    assert probe.runs == 0
