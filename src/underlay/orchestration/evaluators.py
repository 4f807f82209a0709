"""Evaluators: checks on a fleet member's finished run, and the verdicts they give.

Each evaluator of a fleet (for its ``agents``, or all) checks a run when it ends, before
its sandbox goes: a ``rule`` on the outcome (did it succeed, does the Python program's
result hold these values, did the command print this text) or a test ``command`` run in
the member's own sandbox (exit 0 passes). The reconciler acts on the failed ones —
``restart`` (a new run given the feedback), ``kill``, ``pause`` (wait for a human),
``escalate`` — in the order they are declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from underlay import errors
from underlay.kernel.context import Principal
from underlay.orchestration.fleet_models import EvaluatorSpec

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
    """Every evaluator of ``agent``'s finished run, in declared order."""
    verdicts = []
    for ev in evaluators:
        if ev.agents is not None and agent not in ev.agents:
            continue
        if ev.check.rule is not None:
            passed, detail = rule_passes(ev.check.rule, outcome)
        elif sandbox_id is None:
            passed, detail = False, "a command check needs a command program's sandbox"
        else:
            passed, detail = await _command(kernel, org_id, sandbox_id, ev.check.command or "")
        verdicts.append(Verdict(ev, passed, detail))
    return verdicts


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
