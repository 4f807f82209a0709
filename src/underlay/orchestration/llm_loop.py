"""The built-in agent loop: a model works towards a goal with syscalls as its tools.

A fleet agent with ``program: {llm: {...}}`` runs as a durable task (handler
``llm_loop``) in the workers, as the agent:

1. the conversation starts with the ``instructions`` (system) and the ``goal`` (user;
   with the program's ``input`` and an evaluator's feedback from a previous run);
2. each turn asks the model (any OpenAI-compatible endpoint; ``tools`` offered as
   functions whose parameters are the syscalls' input schemas) — a durable step, so a
   crash never pays for a turn twice, under the failure policy of the tool ``llm``;
3. each tool call is ``run.invoke`` — the agent's own capabilities and budget, audited,
   keyed for idempotency, under the tool's declared failure policy — and its result (or
   its error: code and message, which the model can act on) goes back to the model.
   ``needs_human`` and ``budget`` failures are not the model's to fix: the task waits on
   the inbox, and resumes where it stopped;
4. a turn without tool calls is the answer. ``message`` evaluators check it (a rule or
   an LLM judge); a failed check is told to the model and the loop goes on, otherwise the
   run ends with ``{"answer", "turns", "tokens"}``. No answer within ``max_turns`` is a
   ``limit_exceeded`` failure.

A fleet member's loop sends a heartbeat after every turn, its progress ``turn N``, so
``health`` checks work without code, and its ``memory.*`` calls that name no scope use
the member's memory scope.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from underlay import errors
from underlay.llm import ChatClient, LLMSettings, Reply, ToolCall
from underlay.orchestration import evaluators
from underlay.orchestration.durable import TaskRun, handler
from underlay.orchestration.failures import classify
from underlay.orchestration.fleet_models import EvaluatorSpec, LLMLoop
from underlay.orchestration.tools import engine_policy

log = logging.getLogger("underlay.llm_loop")
SCOPE_KEYS = ("user_id", "agent_id", "run_id")
RESULT_LIMIT = 16_000  # characters of one tool result shown to the model
DEFAULT_INSTRUCTIONS = (
    "You are an agent of an underlay fleet. Work towards the user's goal with the tools "
    "you are given; when it is reached, answer with the result and call no tool."
)


def function_name(syscall: str) -> str:
    """A syscall's name as a function name the API accepts (``[a-zA-Z0-9_-]{1,64}``)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", syscall.replace(".", "__"))[:64]


def tool_schemas(kernel: Any, names: list[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The ``tools`` of a chat request, and function name -> syscall name."""
    tools, names_back = [], {}
    for name in names:
        if name not in kernel.table:
            raise errors.InvalidInput(f"llm.tools: no syscall named {name!r}", field="tools")
        sc = kernel.table.get(name)
        fn = function_name(name)
        names_back[fn] = name
        tools.append(
            {
                "type": "function",
                "function": {"name": fn, "description": f"{name}: {sc.doc}"[:1024],
                             "parameters": sc.input.model_json_schema()},
            }
        )  # fmt: skip
    return tools, names_back


@handler("llm_loop")
async def llm_loop(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    spec = LLMLoop.model_validate(payload.get("llm") or {})
    checks = [EvaluatorSpec.model_validate(e) for e in payload.get("evaluators") or []]
    tools, names_back = tool_schemas(run.kernel, spec.tools) if spec.tools else ([], {})
    key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
    chat = ChatClient(
        LLMSettings(spec.base_url, spec.model, key, spec.timeout_seconds), "agent loop"
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": spec.instructions or DEFAULT_INSTRUCTIONS},
        {"role": "user", "content": _goal(spec, payload)},
    ]
    given = payload.get("input") or {}
    tokens, member, scope = 0, "fleet" in given, dict(given.get("memory_scope") or {})
    try:
        for turn in range(1, spec.max_turns + 1):
            reply = _reply(await run.step("llm", _ask, run, chat, messages, tools))
            tokens += reply.tokens
            if member:
                await _beat(run, f"turn {turn}")
            messages.append(reply.as_message())
            if reply.tool_calls:
                for call in reply.tool_calls:
                    messages.append(await _tool(run, call, names_back, scope))
                continue
            told = await run.step("evaluate", _evaluate, checks, reply.content or "")
            if not told or turn == spec.max_turns:
                return {"answer": reply.content or "", "turns": turn, "tokens": tokens}
            messages += [{"role": "user", "content": text} for text in told]
    finally:
        await chat.aclose()
    raise errors.LimitExceeded(f"the agent loop gave no answer within {spec.max_turns} turns")


async def _beat(run: TaskRun, progress: str) -> None:
    """A fleet member's loop beats, with its turn as progress, after every turn."""
    try:
        await run.heartbeat(progress)
    except errors.UnderlayError as exc:  # a missed beat must not end the run
        log.warning("task %s: heartbeat failed: %s", run.task_id, exc.message)


def _goal(spec: LLMLoop, payload: dict[str, Any]) -> str:
    parts = [spec.goal]
    given = payload.get("input") or {}
    if given:
        parts.append("Input: " + json.dumps(given))
    if payload.get("feedback"):
        parts.append(f"Feedback on your previous run: {payload['feedback']}")
    return "\n\n".join(parts)


async def _ask(
    run: TaskRun, chat: ChatClient, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> dict[str, Any]:
    """One model turn under the policy of the tool ``llm`` (its checkpointed form)."""
    policies = run.policies
    declared = policies.tools.get("llm", policies.default) if policies else None
    if declared is None or run.kernel is None:
        reply = await chat.chat(messages, tools)
    else:
        breaker = f"tool:{run.org_id}:llm:{chat.settings.endpoint}"
        reply = await run.kernel.policies.run(
            breaker, engine_policy(declared), lambda: chat.chat(messages, tools)
        )
    return {**reply.as_message(), "tokens": reply.tokens}


def _reply(recorded: dict[str, Any]) -> Reply:
    calls = tuple(
        ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in recorded.get("tool_calls") or ()
    )
    return Reply(recorded.get("content"), calls, int(recorded.get("tokens") or 0))


async def _tool(
    run: TaskRun, call: ToolCall, names_back: dict[str, str], scope: dict[str, str]
) -> dict[str, Any]:
    """The ``tool`` message answering ``call``: the syscall's result, or what went wrong.
    A ``memory.*`` call that names no scope gets the member's (``scope``)."""
    name = names_back.get(call.name)
    try:
        if name is None:
            raise errors.NotFound(f"no tool {call.name!r}; offered: {sorted(names_back)}")
        try:
            args = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise errors.InvalidInput(f"arguments are not JSON: {exc}") from None
        if not isinstance(args, dict):
            raise errors.InvalidInput("arguments must be a JSON object")
        if scope and name.startswith("memory.") and not set(args) & set(SCOPE_KEYS):
            args = {**args, **scope}  # the member's memory, unless it named another
        content = json.dumps(await run.invoke(name, args))
    except errors.UnderlayError as exc:
        if classify(exc) in ("needs_human", "budget"):
            raise  # a person decides; the task waits in the inbox and resumes here
        content = json.dumps({"error": {"code": exc.code, "message": exc.message}})
    if len(content) > RESULT_LIMIT:
        content = content[:RESULT_LIMIT] + f" [truncated: {len(content)} characters]"
    return {"role": "tool", "tool_call_id": call.id, "content": content}


async def _evaluate(checks: list[EvaluatorSpec], answer: str) -> list[str]:
    """What the ``message`` evaluators tell the agent about its answer (empty: all pass)."""
    outcome = evaluators.Outcome(succeeded=True, result={"answer": answer}, output=answer)
    told = []
    for ev in checks:
        passed, detail = await evaluators.check(ev, outcome)
        if not passed:
            told.append(f"[evaluator {ev.name}] {ev.feedback} ({detail})".replace(" ()", ""))
    return told
