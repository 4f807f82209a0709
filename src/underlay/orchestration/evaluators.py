"""Evaluators: checks on a fleet member's finished run, and the verdicts they give.

Each evaluator of a fleet (for its ``agents``, or all) checks a run when it ends, before
its sandbox goes: a ``rule`` on the outcome (did it succeed, does the Python program's
result hold these values, did the command print this text), a test ``command`` run in
the member's own sandbox (exit 0 passes), or an ``llm`` judge (any OpenAI-compatible
endpoint; no verdict — it is down, it answers nonsense — fails the check). The
reconciler acts on the failed ones — ``restart`` (a new run given the feedback),
``kill``, ``pause`` (wait for a human), ``escalate`` — in the order they are declared.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from underlay import errors
from underlay.kernel.context import Principal
from underlay.llm import ChatClient, LLMSettings
from underlay.orchestration.fleet_models import EvaluatorSpec, Judge

OUTPUT_TAIL = 4000  # characters of a command's output kept for rules and feedback


@dataclass
class Outcome:
    """How a run ended: ``succeeded``, and what it left (result or output)."""

    succeeded: bool
    result: dict[str, Any] = field(default_factory=dict)
    output: str = ""


@dataclass(frozen=True)
class Verdict:
    evaluator: EvaluatorSpec
    passed: bool
    detail: str


def rule_passes(rule: dict[str, Any], outcome: Outcome) -> tuple[bool, str]:
    if "succeeded" in rule and bool(rule["succeeded"]) != outcome.succeeded:
        return False, f"the run {'succeeded' if outcome.succeeded else 'failed'}"
    for key, want in (rule.get("result") or {}).items():
        if outcome.result.get(key) != want:
            return False, f"result[{key!r}] is {outcome.result.get(key)!r}, not {want!r}"
    text = rule.get("output_contains")
    if text is not None and str(text) not in outcome.output:
        return False, f"the output does not contain {text!r}"
    return True, "rule holds"


async def judge(
    kernel: Any,
    org_id: str,
    evaluators: list[EvaluatorSpec],
    agent: str,
    sandbox_id: str | None,
    outcome: Outcome,
) -> list[Verdict]:
    """Every evaluator of ``agent``'s finished run, in declared order (``message``
    evaluators excepted: the LLM loop applies them to each answer while it runs)."""
    verdicts = []
    for ev in applicable(evaluators, agent):
        if ev.action == "message":
            continue
        if ev.check.command is None:
            passed, detail = await check(ev, outcome)
        elif sandbox_id is None:
            passed, detail = False, "a command check needs a command program's sandbox"
        else:
            passed, detail = await _command(kernel, org_id, sandbox_id, ev.check.command or "")
        verdicts.append(Verdict(ev, passed, detail))
    return verdicts


def applicable(evaluators: list[EvaluatorSpec], agent: str) -> list[EvaluatorSpec]:
    return [ev for ev in evaluators if ev.agents is None or agent in ev.agents]


async def check(ev: EvaluatorSpec, outcome: Outcome) -> tuple[bool, str]:
    """A rule or LLM-judge check of ``outcome`` (a command check needs a sandbox)."""
    if ev.check.rule is not None:
        return rule_passes(ev.check.rule, outcome)
    if ev.check.llm is not None:
        return await _judge(ev.check.llm, outcome)
    raise errors.InvalidInput(f"evaluator {ev.name}: a command check needs a sandbox")


JUDGE_PROMPT = """\
You judge one finished run of an AI agent against the user's instructions. The user sends \
JSON: {"instructions": text, "succeeded": bool, "result": object, "output": text}. Reply \
with JSON only, exactly {"pass": bool, "reason": str}: pass is true only when the run does \
what the instructions ask; reason says why in one sentence.
"""


class _Judgement(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    passed: bool = Field(alias="pass")
    reason: str = Field(max_length=2000)


async def _judge(judge: Judge, outcome: Outcome) -> tuple[bool, str]:
    key = os.environ.get(judge.api_key_env) if judge.api_key_env else None
    chat = ChatClient(
        LLMSettings(judge.base_url, judge.model, key, judge.timeout_seconds), "LLM judge"
    )
    user = json.dumps({"instructions": judge.instructions, "succeeded": outcome.succeeded,
                       "result": outcome.result, "output": outcome.output})  # fmt: skip
    try:
        verdict = await chat.complete_json(JUDGE_PROMPT, user, _Judgement)
    except errors.UnderlayError as exc:  # no verdict is a failed check, with why
        return False, f"no verdict: {exc.message}"
    finally:
        await chat.aclose()
    return verdict.passed, f"the judge: {verdict.reason}"


async def _command(kernel: Any, org_id: str, sandbox_id: str, command: str) -> tuple[bool, str]:
    try:
        ran: Any = await kernel.invoke(
            "sandbox.commands.run", {"sandbox": sandbox_id, "cmd": command, "timeout": 120},
            principal=Principal.system(org_id),
        )  # fmt: skip
    except errors.UnderlayError as exc:
        return False, f"the check could not run: {exc.message}"
    tail = (ran.stdout + ran.stderr)[-OUTPUT_TAIL:]
    return ran.exit_code == 0, f"the check exited {ran.exit_code}: {tail}".strip()
