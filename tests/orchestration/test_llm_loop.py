"""The built-in agent loop against a loopback FAKE of a tool-using chat model: tools are
syscalls called as the agent, errors go back to the model, message evaluators, durable
turns, failure policies on the model, the inbox for what a person must allow."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kernel.helpers import count, make_agent
from underlay.kernel.kernel import Kernel
from underlay.orchestration.llm_loop import function_name
from underlay.orchestration.reconciler import FleetReconciler
from underlay.orchestration.worker import Worker
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport
from underlay.storage.schema import agents
from underlay.testing.fake_chat import FakeAgentModel

from .conftest import reconcile_until, settle

KEY = "sk-test-agent-0123456789"


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAgentModel]:
    monkeypatch.setenv("AGENT_MODEL_KEY", KEY)
    fake = FakeAgentModel("agent-model", KEY, lambda messages, tools: {"content": "done"})
    await fake.start()
    yield fake
    await fake.close()


def loop(model: FakeAgentModel, **extra: Any) -> dict[str, Any]:
    return {"base_url": model.base_url, "model": "agent-model", "api_key_env": "AGENT_MODEL_KEY",
            "goal": "find out who you are", **extra}  # fmt: skip


def fleet(model: FakeAgentModel, *, tools: list[str], **extra: Any) -> dict[str, Any]:
    program = {"llm": loop(model, tools=tools)}
    return {"name": "crew", "agents": [{"name": "thinker", "program": program,
            "restart": "transient", "capabilities": ["budget.read"]}], **extra}  # fmt: skip


def tool_results(messages: list[dict[str, Any]]) -> list[Any]:
    return [json.loads(m["content"]) for m in messages if m["role"] == "tool"]


def one(f: Any) -> Any:
    return f.members[0]


def whoami_then_answer(messages: list[dict[str, Any]], tools: Any) -> dict[str, Any]:
    results = tool_results(messages)
    if not results:
        return {"tool_calls": [{"name": "self__whoami", "arguments": {}}]}
    return {"content": f"I am {results[0]['id']}"}


async def test_the_loop_calls_tools_as_its_agent_and_answers(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, model: FakeAgentModel
) -> None:
    model.script = whoami_then_answer
    await ul.fleets.apply(spec=fleet(model, tools=["self.whoami", "budget.balance"]))
    done = await reconcile_until(FleetReconciler(kernel), ul, lambda f: one(f).state == "succeeded")
    task = await ul.tasks.get(task_id=one(done).task_id)
    assert task.result["answer"] == f"I am {one(done).agent_id}"
    assert (task.result["turns"], task.result["tokens"]) == (2, 30)
    assert model.problems == []
    offered = model.requests[0]["json"]["tools"]
    assert [t["function"]["name"] for t in offered] == ["self__whoami", "budget__balance"]
    assert offered[1]["function"]["parameters"]["type"] == "object"
    assert "Bearer " + KEY == model.requests[0]["headers"]["authorization"]
    assert KEY not in json.dumps(task.input)  # the key stays in the worker's environment


async def test_tool_errors_go_back_to_the_model(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, model: FakeAgentModel
) -> None:
    def script(messages: list[dict[str, Any]], tools: Any) -> dict[str, Any]:
        results = tool_results(messages)
        if not results:
            return {"tool_calls": [{"name": "budget__balance", "arguments": {"agent": 42}},
                                   {"name": "rm_rf", "arguments": {}},
                                   {"name": "self__whoami", "arguments": "{not json"}]}  # fmt: skip
        return {"content": " ".join(r["error"]["code"] for r in results)}

    model.script = script
    await ul.fleets.apply(spec=fleet(model, tools=["self.whoami", "budget.balance"]))
    done = await reconcile_until(FleetReconciler(kernel), ul, lambda f: one(f).state == "succeeded")
    task = await ul.tasks.get(task_id=one(done).task_id)
    assert task.result["answer"] == "invalid_input not_found invalid_input"
    assert model.problems == []


async def test_a_message_evaluator_tells_the_agent_and_it_goes_on(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, model: FakeAgentModel
) -> None:
    def script(messages: list[dict[str, Any]], tools: Any) -> dict[str, Any]:
        told = [m["content"] for m in messages if m["role"] == "user"][1:]
        return {"content": "FINAL: 7" if told else "about seven"}

    model.script = script
    check = {"rule": {"output_contains": "FINAL:"}}
    evaluator = {"name": "format", "check": check, "action": "message",
                 "feedback": "start the answer with FINAL:"}  # fmt: skip
    await ul.fleets.apply(spec=fleet(model, tools=[], evaluators=[evaluator]))
    done = await reconcile_until(FleetReconciler(kernel), ul, lambda f: one(f).state == "succeeded")
    task = await ul.tasks.get(task_id=one(done).task_id)
    assert (task.result["answer"], task.result["turns"], one(done).restarts) == ("FINAL: 7", 2, 0)
    last = model.requests[-1]["json"]["messages"][-1]
    assert last["role"] == "user"
    assert last["content"] == (
        "[evaluator format] start the answer with FINAL: (the output does not contain 'FINAL:')"
    )


async def test_the_models_failures_follow_the_fleets_policy(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, model: FakeAgentModel
) -> None:
    model.script = whoami_then_answer
    model.status = 500  # the first request fails; the policy retries it
    policy = {"tools": {"llm": {"retry": {"max_attempts": 3, "initial_seconds": 0.3}}}}
    await ul.fleets.apply(spec=fleet(model, tools=["self.whoami"], failure_policy=policy))
    reconciler = FleetReconciler(kernel)
    await reconcile_until(reconciler, ul, lambda f: len(model.requests) >= 1)
    model.status = 200
    done = await reconcile_until(reconciler, ul, lambda f: one(f).state == "succeeded")
    assert one(done).restarts == 0
    assert len(model.requests) == 3  # one failed try, then two turns


async def test_turns_and_tool_calls_are_not_repeated_by_a_later_attempt(
    kernel: Kernel, worker: Worker, model: FakeAgentModel
) -> None:
    def script(messages: list[dict[str, Any]], tools: Any) -> dict[str, Any]:
        if len(model.requests) == 2:
            return {"status": 500}  # the attempt dies between the tool call and turn 2
        if not tool_results(messages):
            return {"tool_calls": [{"name": "agents__create", "arguments": {"name": "child"}}]}
        return {"content": "made " + tool_results(messages)[0]["name"]}

    model.script = script
    agent = await make_agent(kernel, "boss", ["tasks.*", "agents.create"])
    ul = AsyncUnderlay(LocalTransport(kernel, agent.token))
    payload = {"llm": loop(model, tools=["agents.create"])}
    task = await ul.tasks.submit(handler="llm_loop", input=payload, max_attempts=2)
    done = await settle(ul, task.id, "succeeded")
    assert (done.attempts, done.result["answer"], done.result["turns"]) == (2, "made child", 2)
    assert len(model.requests) == 3  # turn 1 and the tool call were replayed, not re-run
    assert await count(kernel, agents, name="child") == 1
    assert model.problems == []


async def test_a_tool_a_person_must_allow_waits_in_the_inbox(
    kernel: Kernel, worker: Worker, model: FakeAgentModel
) -> None:
    model.script = lambda m, t: {"tool_calls": [{"name": "agents__create",
                                                 "arguments": {"name": "x"}}]}  # fmt: skip
    agent = await make_agent(kernel, "intern", ["tasks.*"])
    ul = AsyncUnderlay(LocalTransport(kernel, agent.token))
    task = await ul.tasks.submit(
        handler="llm_loop", input={"llm": loop(model, tools=["agents.create"])}
    )
    waiting = await settle(ul, task.id, "waiting")
    admin = AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))
    esc = await admin.escalations.get(escalation_id=waiting.waiting_on.removeprefix("human:"))
    assert esc.context["failure"]["code"] == "permission_denied"


async def test_no_answer_within_max_turns_fails(
    kernel: Kernel, worker: Worker, model: FakeAgentModel
) -> None:
    model.script = lambda m, t: {"tool_calls": [{"name": "self__whoami", "arguments": {}}]}
    agent = await make_agent(kernel, "chatty", ["tasks.*"])
    ul = AsyncUnderlay(LocalTransport(kernel, agent.token))
    payload = {"llm": loop(model, tools=["self.whoami"], max_turns=3)}
    task = await ul.tasks.submit(handler="llm_loop", input=payload, max_attempts=1)
    failed = await settle(ul, task.id, "failed")
    assert failed.error["code"] == "limit_exceeded"
    assert len(model.requests) == 3


def test_function_names_are_what_the_api_accepts() -> None:
    assert function_name("sandbox.commands.run") == "sandbox__commands__run"
    assert function_name("a.b c") == "a__b_c"


async def test_memory_calls_without_a_scope_use_the_members_memory(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, model: FakeAgentModel
) -> None:
    def script(messages: list[dict[str, Any]], tools: Any) -> dict[str, Any]:
        if not tool_results(messages):
            remember = {"messages": "the build server is ci-7", "infer": False}
            return {"tool_calls": [{"name": "memory__add", "arguments": remember}]}
        return {"content": "remembered"}

    model.script = script
    spec = fleet(model, tools=["memory.add"])
    spec["agents"][0].update(capabilities=["memory.*"], budget="1.00 USD")
    await ul.fleets.apply(spec=spec)
    await reconcile_until(FleetReconciler(kernel), ul, lambda f: one(f).state == "succeeded")
    found = await ul.memory.get_all(agent_id="crew.thinker")
    assert [m.memory for m in found.items] == ["the build server is ci-7"]
    assert model.problems == []
