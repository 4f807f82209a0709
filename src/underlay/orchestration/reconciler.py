"""The fleet reconciler: drives each fleet's members towards its spec, under supervision.

Each round (``reconcile_once``), for every fleet:

* the desired members are agent x replica — ``replicas``, or what ``autoscale`` makes
  of its queue's depth (health.py);
* a desired member without a row gets an identity — ``agents.create`` through the
  kernel, as the system, idempotent per member, with the agent's capabilities and
  budget — and a run as that agent (member_runs.py: a durable task, or a command in a
  sandbox of its own);
* a member's run is observed in task states: ``leased`` is running, ``waiting`` is
  waiting (on a human), ``succeeded`` is a normal exit, ``failed`` / ``cancelled`` an
  abnormal one, and so is a ``stalled`` run (no heartbeat, no progress: health.py),
  which is stopped. A finished run is judged by the evaluators; an exit goes to the
  fleet's supervision tree (supervision.py): restarts become new runs, stops end runs,
  and when the root gives up the fleet escalates to the inbox exactly once (keyed by
  fleet and generation) and its members are terminated;
* members no longer desired (fewer replicas, an agent removed, the fleet deleted) have
  their run stopped — told first, killed after the agent's termination grace — and are
  ``terminated``;
* a member that finished (succeeded, failed, terminated) runs again when the fleet is
  applied anew (a new generation: scaled back up, re-applied after a delete or after
  giving up).

The member's state follows the lifecycle (lifecycle.py); a restart is a new run, from
``pending``. Restart history lives in this process (one tree per fleet generation): a
new reconciler starts counting afresh, which errs towards restarting.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from sqlalchemy import update

from underlay import errors
from underlay.kernel.context import Principal
from underlay.kernel.loops import repeat
from underlay.orchestration import escalations, evaluators, fleets
from underlay.orchestration.fleet_models import AgentSpec, FleetSpec
from underlay.orchestration.health import Autoscaler, stalled
from underlay.orchestration.lifecycle import FINAL, transition
from underlay.orchestration.member_runs import MemberRuns
from underlay.orchestration.queue import TERMINAL
from underlay.orchestration.supervision import Child, SupervisionTree, SupervisorSpec
from underlay.storage.rows import in_org
from underlay.storage.schema import escalations as escalations_table
from underlay.storage.schema import fleet_members
from underlay.storage.schema import fleets as fleets_table

log = logging.getLogger("underlay.fleets")
RUNNING_STATES = {"queued": "starting", "leased": "running", "waiting": "waiting"}


class FleetReconciler:
    def __init__(self, kernel: Any, api_url: str | None = None) -> None:
        self.kernel = kernel
        self.runs = MemberRuns(kernel, api_url)
        self._trees: dict[tuple[str, str, int], SupervisionTree] = {}
        self._desired: dict[tuple[str, str], set[tuple[str, int]]] = {}
        self.autoscaler = Autoscaler()

    @property
    def api_url(self) -> str | None:
        """What sandboxed programs reach (``underlay up`` sets it once it listens)."""
        return self.runs.api_url

    @api_url.setter
    def api_url(self, url: str | None) -> None:
        self.runs.api_url = url

    async def forever(self, every: float = 1.0) -> None:
        await repeat(self.reconcile_once, every, "fleet reconciliation", log)

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
        desired: dict[tuple[str, int], AgentSpec] = {}
        for a in spec.agents if live else ():
            running = sum(1 for (name, _), m in current.items()
                          if name == a.name and m.state not in FINAL)  # fmt: skip
            n = await self.autoscaler.replicas(
                self.kernel.db, row.org_id, row.name, a, running, self.kernel.clock.now()
            )
            desired.update({(a.name, i): a for i in range(n)})
        self._desired[(row.org_id, row.name)] = set(desired)
        specs = {a.name: a for a in spec.agents}
        for key, member in current.items():
            if key not in desired and member.state not in FINAL:
                await self._end(row, member, "terminated", specs.get(key[0]))
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
                Child(f"{a.name}.{i}", a.restart)
                for a in spec.agents
                for i in range(a.autoscale.max_replicas if a.autoscale else a.replicas)
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
        """A new run of a member, as its agent (member_runs.py), with an evaluator's
        ``feedback``; the member is ``starting`` again."""
        columns = await self.runs.start(row, agent, replica, agent_id, feedback)
        if columns is not None:
            await self._set(row, agent.name, replica, state="starting", restarts=restarts,
                            generation=row.generation, **columns)  # fmt: skip

    async def _observe(self, row: Any, tree: SupervisionTree, agent: AgentSpec, m: Any) -> None:
        if m.waiting_on:  # paused by an evaluator: a human's answer resumes or ends it
            await self._paused(row, agent, m)
            return
        state = await self.runs.state(row, m)
        if state is None:  # created, never started (the last reconciler stopped in between)
            await self._start(row, agent, m.replica, m.agent_id, restarts=m.restarts)
            return
        if state in RUNNING_STATES:
            target = RUNNING_STATES[state]
            if target != m.state:
                await self._move(row, m, target)
                m = await self._member(row, m.agent, m.replica)
            why = stalled(agent, m, self.kernel.clock.now()) if target == "running" else None
            if why is not None:  # stopped, and handed to the supervisor as a crash
                log.warning("fleet %s: %s.%s stalled: %s", row.name, m.agent, m.replica, why)
                await self._move(row, m, "stalled")
                await self.runs.stop(row, m, agent)
                await self._exited(row, tree, agent, m, "error", f"stalled: {why}")
            return
        if state not in TERMINAL:
            return
        outcome = await self.runs.outcome(row, m, state)
        spec = FleetSpec.model_validate(row.spec)
        verdicts = await evaluators.judge(
            self.kernel, row.org_id, spec.evaluators, agent.name, m.sandbox_id, outcome
        )
        await self.runs.stop(row, m)  # a finished command's sandbox goes
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
        await self._exited(row, tree, agent, m, reason, feedback)

    async def _exited(
        self, row: Any, tree: SupervisionTree, agent: AgentSpec, m: Any, reason: str,
        feedback: str | None,
    ) -> None:  # fmt: skip
        """A run ended (``normal`` or ``error``): the supervisor decides what follows."""
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
        await self.runs.stop(row, member, agent)
        if (name, int(replica)) not in self._desired.get((row.org_id, row.name), set()):
            action = dataclasses.replace(action, kind="stop")  # scaled down meanwhile
        if action.kind == "stop":
            if member.state not in FINAL:
                await self._move(row, member, "terminated")
            return
        await self._start(row, agent, int(replica), member.agent_id,
                          restarts=member.restarts + 1, feedback=member.feedback)  # fmt: skip

    async def _end(self, row: Any, member: Any, state: str, agent: AgentSpec | None) -> None:
        await self.runs.stop(row, member, agent)
        await self._move(row, member, state)

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
