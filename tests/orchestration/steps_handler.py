"""A task handler for the crash tests, run by `underlay worker` subprocesses.

``steps``: ``input = {"steps": N, "log": path, "kill_after": k, "marker": path}`` runs N
durable steps; each appends "task step" to the log (fsynced: the test counts how often
each step's effect ran). Between step k and k + 1 (k = 0: before the first) the worker
kills itself with SIGKILL, once (the marker file remembers).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from underlay.orchestration.durable import TaskRun


def _effect(log: str, line: str) -> str:
    with open(log, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return line


def _maybe_die(payload: dict[str, Any], boundary: int) -> None:
    if payload.get("kill_after") == boundary and not os.path.exists(payload["marker"]):
        with open(payload["marker"], "w") as fh:
            fh.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


async def steps(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    _maybe_die(payload, 0)
    for i in range(1, payload["steps"] + 1):
        await run.step(f"s{i}", _effect, payload["log"], f"{run.task_id} s{i}")
        _maybe_die(payload, i)
    return {"steps": payload["steps"]}


async def two_steps(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """Two durable steps, each appending its key to the log (no self-kill)."""
    for name in ("a", "b"):
        await run.step(name, _effect, payload["log"], run.key(name))
    return {"ok": True}


async def approval(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """A step, a human's approval (the task waits, holding no worker), another step."""
    await run.step("prepare", _effect, payload["log"], run.key("prepare"))
    answer = await run.ask_human("deploy", "Deploy build 42 to production?", {"build": 42})
    if answer.get("approved"):
        await run.step("apply", _effect, payload["log"], run.key("apply"))
    return {"approved": bool(answer.get("approved"))}


async def flaky(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """Fails its first attempt with ``payload["error"]``, then succeeds."""
    from underlay import errors
    from underlay.orchestration.failures import NeedsHuman

    marker = payload["marker"]
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("failed once")
        kind = payload["error"]
        if kind == "needs_human":
            raise NeedsHuman("the API key for the billing system was rotated")
        raise {"budget": errors.BudgetExceeded, "transient": errors.Unavailable}[kind]("boom")
    return {"attempt": run.attempt}


def _undo(line: str) -> str:
    return _effect(line.split("|")[0], "undo " + line.split("|")[1])


async def saga(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """Steps a and b with compensations, then a step that fails with ``payload["error"]``."""
    from underlay import errors

    log = payload["log"]
    for name in ("a", "b"):
        await run.step(name, _effect, log, f"{log}|{name}", compensate=_undo)
    error = {"permanent": errors.InvalidInput, "transient": errors.Unavailable}[payload["error"]]
    raise error("the third step cannot be done")


async def agent_forever(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """A fleet agent that keeps running (until its run is cancelled)."""
    import asyncio

    with open(payload["log"], "a") as fh:
        fh.write(f"start {payload['agent']}.{payload['replica']} {payload['agent_id']}\n")
    await asyncio.sleep(3600)
    return {}


async def agent_done(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """A fleet agent that finishes its work and exits normally."""
    return {"replica": payload["replica"]}


async def agent_crash(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """A fleet agent that crashes at once, every time."""
    raise RuntimeError(f"replica {payload['replica']} crashed")


async def agent_graded(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """A fleet agent that gets it right only once it was given feedback."""
    return {"ok": bool(payload.get("feedback")), "feedback": payload.get("feedback")}


async def agent_beating(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """A fleet agent that beats every 0.05 s; its progress moves for its first ``moving``
    beats, then stays where it is."""
    import asyncio

    beat = 0
    while True:
        beat += 1
        await run.heartbeat(str(min(beat, payload.get("moving", 10**9))))
        await asyncio.sleep(0.05)


async def agent_graceful(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    """A fleet agent that notes it was asked to stop, then takes its time cleaning up."""
    import asyncio

    await run.stopping.wait()
    _effect(payload["log"], f"stopping {payload['replica']}")
    await asyncio.sleep(3600)
    return {}
