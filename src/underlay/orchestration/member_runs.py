"""A fleet member's run, whatever its program: how it starts, how it is going, what it
left, and how it is stopped. The reconciler (reconciler.py) decides when; this module
knows how, for each kind of program:

* ``python`` and ``llm`` programs run as durable tasks, submitted as the member's agent
  (one attempt: the supervisor decides restarts), with the fleet's failure policy, the
  member's coordinates and memory scope, an evaluator's feedback and the termination
  grace in the input;
* ``command`` programs run in a sandbox of the member's own, created with a token of its
  agent — revoked when the run ends — and the API's URL as its only environment (the rest
  — memory scope, feedback — it asks the API: ``fleets.me``), the API as its only
  reachable host, and the agent's ``resources`` as the sandbox's limits.

States are task states (``queued``, ``leased``, ``succeeded``, ``failed``...), so both
kinds are observed alike.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from underlay import errors
from underlay.kernel.context import Principal
from underlay.orchestration import evaluators
from underlay.orchestration.fleet_models import AgentSpec, FleetSpec, memory_scope
from underlay.orchestration.queue import TERMINAL, NewTask
from underlay.storage.schema import tasks

log = logging.getLogger("underlay.fleets")
SANDBOX_SECONDS = 30 * 86400  # a command run's sandbox lives as long as its command


class MemberRuns:
    def __init__(self, kernel: Any, api_url: str | None) -> None:
        self.kernel = kernel
        self.api_url = api_url  # what sandboxed programs reach (``underlay up`` sets it)

    async def start(
        self, row: Any, agent: AgentSpec, replica: int, agent_id: str, feedback: str | None
    ) -> dict[str, Any] | None:
        """Start a new run as the agent; the member's columns that name it (None: it
        cannot start here — a command program without the API's URL)."""
        if agent.program.command is not None:
            columns = await self._start_sandbox(row, agent, replica, agent_id, feedback)
        else:
            columns = await self._start_task(row, agent, replica, agent_id, feedback)
        if columns is None:
            return None
        now = self.kernel.clock.now()
        return {**columns, "run_started_at": now, "beat_at": None, "progress": None,
                "progress_at": None}  # fmt: skip

    async def _start_task(
        self, row: Any, agent: AgentSpec, replica: int, agent_id: str, feedback: str | None
    ) -> dict[str, Any]:
        program, spec = agent.program, FleetSpec.model_validate(row.spec)
        extra = {"feedback": feedback} if feedback else {}
        member = {"fleet": row.name, "agent": agent.name, "replica": replica,
                  "agent_id": agent_id, "memory_scope": memory_scope(row.name, agent)}  # fmt: skip
        common = {"failure_policy": spec.failure_policy.model_dump(mode="json"),
                  "stop_grace_seconds": agent.termination_grace_seconds}  # fmt: skip
        task_input: dict[str, Any]
        if program.llm is not None:
            told = [ev.model_dump(mode="json") for ev in evaluators.applicable(
                spec.evaluators, agent.name) if ev.action == "message"]  # fmt: skip
            handler = "llm_loop"
            task_input = {"llm": program.llm.model_dump(mode="json"), "evaluators": told,
                          "input": {**program.input, **member}, **extra, **common}  # fmt: skip
        else:
            handler = "python"
            task_input = {"entry": program.python, **common,
                          "input": {**program.input, **member, **extra}}  # fmt: skip
        task_id, _ = await self.kernel.tasks().submit(
            NewTask(row.org_id, agent.queue, handler, task_input, agent_id, max_attempts=1),
            self.kernel.clock.now(),
        )
        self.kernel.wake_workers()
        return {"task_id": task_id, "sandbox_id": None, "command_id": None, "token_id": None}

    async def _start_sandbox(
        self, row: Any, agent: AgentSpec, replica: int, agent_id: str, feedback: str | None
    ) -> dict[str, Any] | None:
        if not self.api_url:
            log.error("fleet %s: sandboxed programs need the API's URL (underlay up)", row.name)
            return None
        system = Principal.system(row.org_id)
        issued: Any = await self.kernel.invoke(
            "tokens.create", {"subject": agent_id, "name": f"fleet {row.name}"}, principal=system
        )
        token = issued.token.get_secret_value()
        env = {"UNDERLAY_URL": self.api_url, "UNDERLAY_TOKEN": token}  # nothing else
        sandbox: Any = await self.kernel.invoke(
            "sandbox.create",
            {
                "template": agent.program.template, "timeout": SANDBOX_SECONDS, "env": env,
                "network": {"allow": [urlsplit(self.api_url).netloc]},
                "metadata": {"fleet": row.name, "agent": agent.name, "replica": str(replica)},
                **({"limits": agent.resources.model_dump()} if agent.resources else {}),
            },
            token=token,
        )  # fmt: skip
        command: Any = await self.kernel.invoke(
            "sandbox.commands.run",
            {"sandbox": sandbox.id, "cmd": agent.program.command, "background": True},
            token=token,
        )
        return {"task_id": None, "sandbox_id": sandbox.id, "command_id": command.id,
                "token_id": issued.info.id}  # fmt: skip

    async def state(self, row: Any, m: Any) -> str | None:
        """The member's run, in task states (None: it has no run)."""
        if m.task_id:
            return await self.task_state(m.task_id)
        if not m.sandbox_id:
            return None
        out = await self._output(row, m)
        if out is None:  # the sandbox is gone (destroyed, expired)
            return "failed"
        if out.running:
            return "leased"
        return "succeeded" if out.exit_code == 0 else "failed"

    async def outcome(self, row: Any, m: Any, state: str) -> evaluators.Outcome:
        """What the finished run left: a task's result, or a command's output."""
        outcome = evaluators.Outcome(succeeded=state == "succeeded")
        if m.task_id:
            async with self.kernel.db.read() as conn:
                found = await conn.execute(select(tasks.c.result).where(tasks.c.id == m.task_id))
                outcome.result = found.scalar() or {}
        elif m.sandbox_id and (out := await self._output(row, m)) is not None:
            outcome.output = (out.stdout + out.stderr)[-evaluators.OUTPUT_TAIL :]
        return outcome

    async def stop(self, row: Any, m: Any, agent: AgentSpec | None = None) -> None:
        """End the member's run: cancel its task, or end its sandbox. Given the ``agent``,
        gracefully: the run is told to stop (a task's ``run.stopping``; SIGTERM to a
        command) and killed after ``termination_grace_seconds`` (a task's worker cancels
        it; the sandbox's timeout is cut to the grace, so compute destroys it)."""
        grace = agent.termination_grace_seconds if agent is not None else 0.0
        if m.task_id and await self.task_state(m.task_id) not in TERMINAL:
            await self.kernel.tasks().cancel(row.org_id, m.task_id, self.kernel.clock.now())
        system = Principal.system(row.org_id)
        if m.sandbox_id:
            try:
                if grace > 0 and await self.state(row, m) == "leased":
                    await self.kernel.invoke(
                        "sandbox.commands.kill",
                        {"sandbox": m.sandbox_id, "command": m.command_id, "signal": 15},
                        principal=system,
                    )
                    await self.kernel.invoke(
                        "sandbox.set_timeout", {"sandbox": m.sandbox_id, "timeout": grace},
                        principal=system,
                    )  # fmt: skip
                else:
                    await self.kernel.invoke(
                        "sandbox.destroy", {"sandbox": m.sandbox_id}, principal=system
                    )
            except errors.NotFound:
                pass
        if m.token_id:  # the run's token dies with it (revoking twice is harmless)
            await self.kernel.invoke("tokens.revoke", {"token_id": m.token_id}, principal=system)

    async def task_state(self, task_id: str) -> str | None:
        async with self.kernel.db.read() as conn:
            found = await conn.execute(select(tasks.c.state).where(tasks.c.id == task_id))
            return found.scalar()

    async def _output(self, row: Any, m: Any) -> Any:
        try:
            return await self.kernel.invoke(
                "sandbox.commands.output", {"sandbox": m.sandbox_id, "command": m.command_id},
                principal=Principal.system(row.org_id),
            )  # fmt: skip
        except errors.NotFound:
            return None
