"""Evaluators on fleet members' runs: rules and test commands; restart with feedback,
kill, pause, escalate."""

from __future__ import annotations

from typing import Any

import pytest

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.orchestration.evaluators import Outcome, rule_passes
from underlay.orchestration.reconciler import FleetReconciler
from underlay.orchestration.worker import Worker
from underlay.sdk.client import AsyncUnderlay

from .conftest import reconcile_until

GRADED = {"python": "orchestration.steps_handler:agent_graded"}
OK = {"result": {"ok": True}}


def fleet(action: str, restart: str = "transient", **check: Any) -> dict[str, Any]:
    return {
        "name": "crew",
        "agents": [{"name": "helper", "program": GRADED, "replicas": 1, "restart": restart}],
        "evaluators": [{"name": "graded", "check": check or {"rule": OK}, "action": action,
                        "feedback": "set ok"}],
    }  # fmt: skip


def one(f: Any) -> Any:
    return f.members[0]


def test_rules() -> None:
    done = Outcome(succeeded=True, result={"ok": True, "n": 3}, output="all 12 tests passed")
    assert rule_passes({"succeeded": True, "result": {"ok": True}}, done) == (True, "rule holds")
    assert rule_passes({"result": {"n": 4}}, done) == (False, "result['n'] is 3, not 4")
    assert rule_passes({"output_contains": "passed"}, done)[0]
    assert not rule_passes({"output_contains": "0 failed"}, done)[0]
    assert rule_passes({"succeeded": True}, Outcome(succeeded=False)) == (False, "the run failed")


async def test_bad_evaluators_are_named(ul: AsyncUnderlay) -> None:
    with pytest.raises(errors.InvalidInput, match="exactly one of rule, command or llm"):
        await ul.fleets.apply(spec=fleet("kill", **{"rule": OK, "command": "true"}))
    with pytest.raises(errors.InvalidInput, match="unknown"):
        await ul.fleets.apply(spec=fleet("kill", rule={"colour": "red"}))
    with pytest.raises(errors.InvalidInput):
        await ul.fleets.apply(spec=fleet("message"))


async def test_restart_gives_the_next_run_the_feedback(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker
) -> None:
    await ul.fleets.apply(spec=fleet("restart"))
    done = await reconcile_until(FleetReconciler(kernel), ul, lambda f: one(f).state == "succeeded")
    assert one(done).restarts == 1
    task = await ul.tasks.get(task_id=one(done).task_id)
    assert task.result["ok"] is True
    assert task.result["feedback"] == "set ok [graded: result['ok'] is False, not True]"


async def test_kill_stops_a_permanent_member_for_good(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker
) -> None:
    await ul.fleets.apply(spec=fleet("kill", restart="permanent"))
    reconciler = FleetReconciler(kernel)
    done = await reconcile_until(reconciler, ul, lambda f: one(f).state == "terminated")
    for _ in range(5):
        await reconciler.reconcile_once()
    assert (one(done).restarts, one(await ul.fleets.get(name="crew")).restarts) == (0, 0)


async def test_escalate_tells_a_human_once_and_supervision_goes_on(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker
) -> None:
    await ul.fleets.apply(spec=fleet("escalate"))
    reconciler = FleetReconciler(kernel)
    await reconcile_until(reconciler, ul, lambda f: one(f).state == "succeeded")
    for _ in range(5):
        await reconciler.reconcile_once()
    [esc] = (await ul.escalations.list()).items
    assert esc.kind == "escalation" and esc.context["evaluator"] == "graded"
    assert esc.summary.startswith("graded failed on helper.0: result['ok'] is False")


async def test_pause_waits_for_a_human_who_resumes_or_stops_it(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker
) -> None:
    await ul.fleets.apply(spec=fleet("pause", restart="permanent"))
    reconciler = FleetReconciler(kernel)
    await reconcile_until(reconciler, ul, lambda f: one(f).state == "waiting")
    [first] = (await ul.escalations.list()).items
    assert first.kind == "approval" and first.context["action"] == "pause"
    await ul.escalations.resolve(escalation_id=first.id, resolution={"resume": True})
    again = await reconcile_until(  # a new run, which the evaluator pauses again
        reconciler, ul, lambda f: one(f).state == "waiting" and one(f).restarts == 1
    )
    [second] = (await ul.escalations.list()).items
    assert second.id != first.id and one(again).restarts == 1
    await ul.escalations.resolve(escalation_id=second.id, resolution={"resume": False})
    await reconcile_until(reconciler, ul, lambda f: one(f).state == "terminated")


JUDGE_KEY = "sk-fake-judge-0123456789-never-shown"


@pytest.fixture
async def judge(monkeypatch: pytest.MonkeyPatch) -> Any:
    from underlay.orchestration.evaluators import JUDGE_PROMPT
    from underlay.testing.fake_chat import FakeChatCompletions

    monkeypatch.setenv("JUDGE_KEY", JUDGE_KEY)
    keys = {"instructions", "succeeded", "result", "output"}
    server = FakeChatCompletions("judge-1", JUDGE_KEY, JUDGE_PROMPT, keys)
    await server.start()
    yield server
    await server.close()
    assert server.problems == []


def judged(base_url: str) -> dict[str, Any]:
    llm = {"base_url": base_url, "model": "judge-1", "api_key_env": "JUDGE_KEY",
           "instructions": "the agent must report ok", "timeout_seconds": 5}  # fmt: skip
    return fleet("escalate", llm=llm)


@pytest.mark.parametrize("verdict", [True, False])
async def test_an_llm_judge_reads_the_run_and_gives_the_verdict(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, judge: Any, verdict: bool
) -> None:
    import json

    judge.content = json.dumps({"pass": verdict, "reason": "it said ok=false"})
    await ul.fleets.apply(spec=judged(judge.base_url))
    reconciler = FleetReconciler(kernel)
    await reconcile_until(reconciler, ul, lambda f: one(f).state == "succeeded")
    [asked] = judge.requests
    sent = json.loads(asked["json"]["messages"][1]["content"])
    assert sent["instructions"] == "the agent must report ok" and sent["result"]["ok"] is False
    raised = (await ul.escalations.list()).items
    if verdict:
        assert raised == []
    else:
        [esc] = raised
        assert "graded failed on helper.0: the judge: it said ok=false" in esc.summary


async def test_no_verdict_fails_the_check_and_never_shows_the_key(
    ul: AsyncUnderlay, kernel: Kernel, worker: Worker, judge: Any
) -> None:
    judge.status = 500
    await ul.fleets.apply(spec=judged(judge.base_url))
    await reconcile_until(FleetReconciler(kernel), ul, lambda f: one(f).state == "succeeded")
    [esc] = (await ul.escalations.list()).items
    assert "no verdict: LLM judge at 127.0.0.1:" in esc.summary and "HTTP 500" in esc.summary
    assert JUDGE_KEY not in esc.summary and JUDGE_KEY not in str(esc.context)
