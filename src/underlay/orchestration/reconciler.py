"""The fleet reconciler: drives each fleet's members towards its spec, under supervision.

Each round (``reconcile_once``), for every fleet:

* a desired member (agent x replica) without a row gets an identity — ``agents.create``
  through the kernel, as the system, idempotent per member, with the agent's
  capabilities and budget — and a run: a durable task of its program (max one attempt:
  the supervisor decides restarts), submitted as that agent;
* a member's run is observed through its task: ``leased`` is running, ``waiting`` is
  waiting (on a human), ``succeeded`` is a normal exit, ``failed`` / ``cancelled`` an
  abnormal one. An exit goes to the fleet's supervision tree (supervision.py): restarts
  become new runs, stops end runs, and when the root gives up the fleet escalates to the
  inbox exactly once (keyed by fleet and generation) and its members are terminated;
* members no longer desired (fewer replicas, an agent removed, the fleet deleted) have
  their run cancelled and are ``terminated``;
* a member that finished (succeeded, failed, terminated) runs again when the fleet is
  applied anew (a new generation: scaled back up, re-applied after a delete or after
  giving up).

The member's state follows the lifecycle (lifecycle.py); a restart is a new run, from
``pending``. Restart history lives in this process (one tree per fleet generation): a
new reconciler starts counting afresh, which errs towards restarting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update

from underlay import errors
from underlay.kernel.context import Principal
from underlay.orchestration import escalations, evaluators, fleets
from underlay.orchestration.fleet_models import AgentSpec, FleetSpec
from underlay.orchestration.lifecycle import FINAL, transition
from underlay.orchestration.queue import TERMINAL, NewTask
from underlay.orchestration.supervision import Child, SupervisionTree, SupervisorSpec
from underlay.storage.rows import in_org
from underlay.storage.schema import escalations as escalations_table
from underlay.storage.schema import fleet_members, tasks
from underlay.storage.schema import fleets as fleets_table

log = logging.getLogger("underlay.fleets")
RUNNING_STATES = {"queued": "starting", "leased": "running", "waiting": "waiting"}


SANDBOX_SECONDS = 30 * 86400  # a command run's sandbox lives as long as its command


class FleetReconciler:
    def __init__(self, kernel: Any, api_url: str | None = None) -> None:
        self.kernel = kernel
        self.api_url = api_url  # what sandboxed programs reach (``underlay up`` sets it)
        self._trees: dict[tuple[str, str, int], SupervisionTree] = {}

    async def forever(self, every: float = 1.0) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:  # one bad round must not end reconciliation
                log.exception("fleet reconciliation failed; next round in %s s", every)
            await asyncio.sleep(every)

    async def reconcile_once(self) -> None:
        for row in await fleets.read(self.kernel.db):
            await self._fleet(row)

    async def _fleet(self, row: Any) -> None:
        spec = FleetSpec.model_validate(row.spec)
        current = {
            (m.agent, m.replica): m
            for m in await fleets.members(self.kernel.db, row.org_id, row.name)
        }
        live = not row.deleted and row.escalation_id is None
        desired = {(a.name, i): a for a in spec.agents for i in range(a.replicas)} if live else {}
        for key, member in current.items():
            if key not in desired and member.state not in FINAL:
                await self._end(row, member, "terminated")
        if not desired:
            return
        tree = self._tree(row, spec)
        for key, agent in desired.items():
            member = current.get(key)
            if member is None:
                await self._create(row, agent, key[1])
            elif member.state not in FINAL:
                await self._observe(row, tree, agent, member)
            elif member.generation < row.generation:  # re-applied: a finished member runs again
                await self._start(row, agent, key[1], member.agent_id, restarts=0)

    def _tree(self, row: Any, spec: FleetSpec) -> SupervisionTree:
        key = (row.org_id, row.name, row.generation)
        if key not in self._trees:
            children = tuple(
                Child(f"{a.name}.{i}", a.restart) for a in spec.agents for i in range(a.replicas)
            )
            s = spec.supervision
            self._trees[key] = SupervisionTree(
                SupervisorSpec(row.name, children, s.strategy, s.intensity, s.period)
            )
        return self._trees[key]

    async def _create(self, row: Any, agent: AgentSpec, replica: int) -> None:
        capabilities = list(agent.capabilities)
        if agent.program.command and "sandbox.*" not in capabilities:
            capabilities.append("sandbox.*")  # its runs are its own sandboxes
        payload: dict[str, Any] = {
            "name": f"{row.name}.{agent.name}.{replica}", "capabilities": capabilities,
        }  # fmt: skip
        if agent.budget is not None:
            payload["budget"] = str(agent.budget)
        made: Any = await self.kernel.invoke(
            "agents.create", payload, principal=Principal.system(row.org_id),
            idempotency_key=f"fleet:{row.name}:{agent.name}:{replica}",
        )  # fmt: skip
        now = self.kernel.clock.now()
        async with self.kernel.db.write() as conn:
            await conn.execute(
                fleet_members.insert().values(
                    org_id=row.org_id, fleet=row.name, agent=agent.name, replica=replica,
                    agent_id=made.id, task_id=None, state="pending", restarts=0, updated_at=now,
                    generation=row.generation,
                )
            )  # fmt: skip
        await self._start(row, agent, replica, made.id, restarts=0)

    async def _start(
        self,
        row: Any,
        agent: AgentSpec,
        replica: int,
        agent_id: str,
        *,
        restarts: int,
        feedback: str | None = None,
    ) -> None:
        """A new run of a member, as the agent: a durable task of its Python program, or
        its command in a sandbox of its own; an evaluator's ``feedback`` goes with it."""
        program = agent.program
        if program.command is not None:
            await self._start_sandbox(row, agent, replica, agent_id, restarts, feedback)
            return
        extra = {"feedback": feedback} if feedback else {}
        task_input = {
            "entry": program.python,
            "input": {**program.input, "fleet": row.name, "agent": agent.name,
                      "replica": replica, "agent_id": agent_id, **extra},
        }  # fmt: skip
        now = self.kernel.clock.now()
        task_id, _ = await self.kernel.tasks().submit(
            NewTask(row.org_id, agent.queue, "python", task_input, agent_id, max_attempts=1), now
        )
        await self._set(row, agent.name, replica, state="starting", task_id=task_id,
                        sandbox_id=None, command_id=None, token_id=None,
                        restarts=restarts, generation=row.generation)  # fmt: skip
        self.kernel.wake_workers()

    async def _start_sandbox(
        self,
        row: Any,
        agent: AgentSpec,
        replica: int,
        agent_id: str,
        restarts: int,
        feedback: str | None,
    ) -> None:
        if not self.api_url:
            log.error("fleet %s: sandboxed programs need the API's URL (underlay up)", row.name)
            return
        system = Principal.system(row.org_id)
        issued: Any = await self.kernel.invoke(
            "tokens.create", {"subject": agent_id, "name": f"fleet {row.name}"}, principal=system
        )
        token = issued.token.get_secret_value()
        env = {"UNDERLAY_URL": self.api_url, "UNDERLAY_TOKEN": token}
        if feedback:
            env["UNDERLAY_FEEDBACK"] = feedback
        sandbox: Any = await self.kernel.invoke(
            "sandbox.create",
            {
                "template": agent.program.template, "timeout": SANDBOX_SECONDS, "env": env,
                "network": {"allow": [urlsplit(self.api_url).netloc]},
                "metadata": {"fleet": row.name, "agent": agent.name, "replica": str(replica)},
            },
            token=token,
        )  # fmt: skip
        command: Any = await self.kernel.invoke(
            "sandbox.commands.run",
            {"sandbox": sandbox.id, "cmd": agent.program.command, "background": True},
            token=token,
        )
        await self._set(row, agent.name, replica, state="starting", task_id=None,
                        sandbox_id=sandbox.id, command_id=command.id, token_id=issued.info.id,
                        restarts=restarts, generation=row.generation)  # fmt: skip

    async def _observe(self, row: Any, tree: SupervisionTree, agent: AgentSpec, m: Any) -> None:
        if m.waiting_on:  # paused by an evaluator: a human's answer resumes or ends it
            await self._paused(row, agent, m)
            return
        state = await self._run_state(row, m)
        if state is None:  # created, never started (the last reconciler stopped in between)
            await self._start(row, agent, m.replica, m.agent_id, restarts=m.restarts)
            return
        if state in RUNNING_STATES:
            target = RUNNING_STATES[state]
            if target != m.state:
                await self._move(row, m, target)
            return
        if state not in TERMINAL:
            return
        outcome = await self._outcome(row, m, state)
        spec = FleetSpec.model_validate(row.spec)
        verdicts = await evaluators.judge(
            self.kernel, row.org_id, spec.evaluators, agent.name, m.sandbox_id, outcome
        )
        await self._stop_run(row, m)  # a finished command's sandbox goes
        if m.state in ("starting", "waiting"):  # it ran, however briefly
            await self._move(row, m, "running")
            m = await self._member(row, m.agent, m.replica)
        reason, feedback = ("normal" if state == "succeeded" else "error"), None
        for verdict in (v for v in verdicts if not v.passed):
            ev = verdict.evaluator
            if ev.action == "escalate":
                await self._tell(row, m, verdict, kind="escalation")
            elif ev.action == "restart":
                reason, feedback = "error", f"{ev.feedback} [{ev.name}: {verdict.detail}]".strip()
            elif ev.action == "kill":
                await self._move(row, m, "terminated")
                return
            else:  # pause
                esc = await self._tell(row, m, verdict, kind="approval")
                await self._move(row, m, "waiting")
                await self._set(row, m.agent, m.replica, waiting_on=esc.id)
                return
        await self._set(row, m.agent, m.replica, feedback=feedback)
        path = f"{row.name}/{agent.name}.{m.replica}"
        actions = tree.exited(path, reason, self.kernel.clock.now())  # type: ignore[arg-type]
        restarted = {a.path for a in actions if a.kind == "restart"}
        if path not in restarted:
            await self._move(row, m, "succeeded" if reason == "normal" else "failed")
        for action in actions:
            await self._act(row, action)

    async def _paused(self, row: Any, agent: AgentSpec, m: Any) -> None:
        esc = await in_org(self.kernel.db, escalations_table, row.org_id, m.waiting_on)
        if esc is not None and esc.state != "resolved":
            return
        await self._set(row, m.agent, m.replica, waiting_on=None)
        if esc is not None and (esc.resolution or {}).get("resume", True) is not False:
            await self._start(row, agent, m.replica, m.agent_id, restarts=m.restarts + 1,
                              feedback=m.feedback)  # fmt: skip
        else:
            await self._move(row, m, "terminated")

    async def _tell(self, row: Any, m: Any, verdict: Any, *, kind: str) -> Any:
        """An evaluator's failed check, in the inbox (once per run and evaluator)."""
        ev = verdict.evaluator
        run = m.task_id or m.sandbox_id
        esc, _ = await escalations.raise_(
            self.kernel.db, org_id=row.org_id, source=f"fleet:{row.name}",
            summary=f"{ev.name} failed on {m.agent}.{m.replica}: {verdict.detail}"[:2000],
            context={"fleet": row.name, "agent": m.agent, "replica": m.replica,
                     "evaluator": ev.name, "action": ev.action, "run": run},
            dedupe_key=f"eval:{row.name}:{m.agent}.{m.replica}:{run}:{ev.name}",
            raised_by="system", now=self.kernel.clock.now(), kind=kind,
        )  # fmt: skip
        return esc

    async def _outcome(self, row: Any, m: Any, state: str) -> evaluators.Outcome:
        """What the finished run left: a task's result, or a command's output."""
        outcome = evaluators.Outcome(succeeded=state == "succeeded")
        if m.task_id:
            async with self.kernel.db.read() as conn:
                found = await conn.execute(select(tasks.c.result).where(tasks.c.id == m.task_id))
                outcome.result = found.scalar() or {}
        elif m.sandbox_id:
            try:
                out: Any = await self.kernel.invoke(
                    "sandbox.commands.output", {"sandbox": m.sandbox_id, "command": m.command_id},
                    principal=Principal.system(row.org_id),
                )  # fmt: skip
                outcome.output = (out.stdout + out.stderr)[-evaluators.OUTPUT_TAIL :]
            except errors.NotFound:
                pass
        return outcome

    async def _act(self, row: Any, action: Any) -> None:
        spec = FleetSpec.model_validate(row.spec)
        if action.kind == "escalate":
            esc, _ = await escalations.raise_(
                self.kernel.db, org_id=row.org_id, source=f"fleet:{row.name}",
                summary=f"fleet {row.name} gave up: {action.reason}",
                context={"fleet": row.name, "generation": row.generation},
                dedupe_key=f"fleet:{row.name}:g{row.generation}:gave-up",
                raised_by="system", now=self.kernel.clock.now(),
            )  # fmt: skip
            async with self.kernel.db.write() as conn:
                await conn.execute(
                    update(fleets_table)
                    .where(fleets_table.c.org_id == row.org_id, fleets_table.c.name == row.name)
                    .values(escalation_id=esc.id)
                )
            log.error("fleet %s escalated to a human: %s", row.name, action.reason)
            return
        name, _, replica = action.path.rsplit("/", 1)[1].rpartition(".")
        agent = next(a for a in spec.agents if a.name == name)
        member = await self._member(row, name, int(replica))
        if member is None:
            return
        await self._stop_run(row, member)
        if action.kind == "stop":
            if member.state not in FINAL:
                await self._move(row, member, "terminated")
            return
        await self._start(row, agent, int(replica), member.agent_id,
                          restarts=member.restarts + 1, feedback=member.feedback)  # fmt: skip

    async def _end(self, row: Any, member: Any, state: str) -> None:
        await self._stop_run(row, member)
        await self._move(row, member, state)

    async def _run_state(self, row: Any, m: Any) -> str | None:
        """The member's run, in task states (queued, leased, succeeded, failed...)."""
        if m.task_id:
            return await self._task_state(m.task_id)
        if not m.sandbox_id:
            return None
        try:
            out: Any = await self.kernel.invoke(
                "sandbox.commands.output", {"sandbox": m.sandbox_id, "command": m.command_id},
                principal=Principal.system(row.org_id),
            )  # fmt: skip
        except errors.NotFound:  # the sandbox is gone (destroyed, expired)
            return "failed"
        if out.running:
            return "leased"
        return "succeeded" if out.exit_code == 0 else "failed"

    async def _stop_run(self, row: Any, m: Any) -> None:
        """End the member's run: cancel its task, or destroy its sandbox."""
        if m.task_id and await self._task_state(m.task_id) not in TERMINAL:
            await self.kernel.tasks().cancel(row.org_id, m.task_id, self.kernel.clock.now())
        system = Principal.system(row.org_id)
        if m.sandbox_id:
            try:
                await self.kernel.invoke(
                    "sandbox.destroy", {"sandbox": m.sandbox_id}, principal=system
                )
            except errors.NotFound:
                pass
        if m.token_id:  # the run's token dies with it (revoking twice is harmless)
            await self.kernel.invoke("tokens.revoke", {"token_id": m.token_id}, principal=system)

    async def _move(self, row: Any, member: Any, target: str) -> None:
        try:
            transition(member.state, target, waiting_on="human")  # type: ignore[arg-type]
        except errors.Conflict:
            if target != "terminated" or member.state in FINAL:
                return
        await self._set(row, member.agent, member.replica, state=target)

    async def _set(self, row: Any, agent: str, replica: int, **values: Any) -> None:
        async with self.kernel.db.write() as conn:
            await conn.execute(
                update(fleet_members)
                .where(
                    fleet_members.c.org_id == row.org_id, fleet_members.c.fleet == row.name,
                    fleet_members.c.agent == agent, fleet_members.c.replica == replica,
                )
                .values(**values, updated_at=self.kernel.clock.now())
            )  # fmt: skip

    async def _member(self, row: Any, agent: str, replica: int) -> Any:
        for m in await fleets.members(self.kernel.db, row.org_id, row.name):
            if (m.agent, m.replica) == (agent, replica):
                return m
        return None

    async def _task_state(self, task_id: str) -> str | None:
        async with self.kernel.db.read() as conn:
            found = await conn.execute(select(tasks.c.state).where(tasks.c.id == task_id))
            return found.scalar()
