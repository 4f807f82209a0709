"""Fleet programs as commands in the members' own sandboxes (real bubblewrap)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.orchestration.reconciler import FleetReconciler
from underlay.sdk.client import AsyncUnderlay

from .conftest import reconcile_until

# The member asks the API who it is, with the token it was given, through the only host
# its sandbox may reach, and files the answer as an escalation.
WHOAMI = (
    'python3 -c "import os,json,urllib.request as u;'
    "h={'Authorization':'Bearer '+os.environ['UNDERLAY_TOKEN'],'Content-Type':'application/json'};"
    "url=os.environ['UNDERLAY_URL'];"
    "me=json.load(u.urlopen(u.Request(url+'/v1/self/whoami',data=b'{}',headers=h)))['id'];"
    "body=json.dumps({'summary':me,'dedupe_key':me}).encode();"
    "u.urlopen(u.Request(url+'/v1/escalations/raise',data=body,headers=h));"
    'print(sorted(os.environ))"'
)


@pytest.fixture
def compute_settings() -> dict[str, object]:
    return {"pool_size": 0}


def spec(command: str, replicas: int, restart: str = "transient", **more: Any) -> dict[str, Any]:
    return {
        "name": "crew",
        "agents": [{"name": "sh", "program": {"command": command}, "replicas": replicas,
                    "restart": restart, **more}],
        "supervision": {"intensity": 1, "period": 60},
    }  # fmt: skip


async def test_members_reach_the_api_as_themselves(
    ul: AsyncUnderlay, kernel: Kernel, base: str
) -> None:
    await ul.fleets.apply(spec=spec(WHOAMI, 2, capabilities=["escalations.raise"]))
    reconciler = FleetReconciler(kernel, api_url=base)
    fleet = await reconcile_until(
        reconciler, ul, lambda f: [m.state for m in f.members] == ["succeeded"] * 2
    )
    ids = sorted(m.agent_id for m in fleet.members)
    raised = (await ul.escalations.list()).items
    assert sorted(e.summary for e in raised) == ids  # each called the API as itself
    assert sorted(e.source for e in raised) == [f"agent:{i}" for i in ids]
    for m in fleet.members:  # a finished command's sandbox is gone, and its token
        assert m.sandbox_id and (await ul.sandbox.get(sandbox=m.sandbox_id)).state == "destroyed"
        tokens = (await ul.tokens.list(subject=m.agent_id, include_revoked=True)).items
        assert len(tokens) == 1 and tokens[0].revoked_at is not None


# The member asks the API what it is in its fleet (memory scope, feedback...).
ME = (
    'python3 -c "import os,urllib.request as u;'
    "h={'Authorization':'Bearer '+os.environ['UNDERLAY_TOKEN'],'Content-Type':'application/json'};"
    "print(u.urlopen(u.Request(os.environ['UNDERLAY_URL']+'/v1/fleets/me',data=b'{}',headers=h)).read().decode())\""
)
TIDY = "trap 'echo bye > bye; exit 0' TERM; while true; do sleep 0.05; done"


async def running_sandboxes(ul: AsyncUnderlay) -> set[str]:
    return {s.id for s in (await ul.sandbox.list()).items if s.state == "running"}


async def test_scale_down_stops_a_members_sandbox_gracefully(
    ul: AsyncUnderlay, kernel: Kernel, base: str
) -> None:
    await ul.fleets.apply(spec=spec(TIDY, 2, termination_grace_seconds=1.5))
    reconciler = FleetReconciler(kernel, api_url=base)
    await reconcile_until(reconciler, ul, lambda f: [m.state for m in f.members] == ["running"] * 2)
    live = await running_sandboxes(ul)
    assert len(live) == 2
    await ul.fleets.apply(spec=spec(TIDY, 1, termination_grace_seconds=1.5))
    fleet = await reconcile_until(
        reconciler, ul, lambda f: [m.state for m in f.members] == ["running", "terminated"]
    )
    stopped = fleet.members[1].sandbox_id
    bye = None
    for _ in range(20):  # SIGTERM first: the command's trap runs within the grace
        try:
            bye = await ul.sandbox.files.read(sandbox=stopped, path="bye")
            break
        except errors.NotFound:
            await asyncio.sleep(0.05)
    assert bye is not None and bye.content == "bye\n"
    for _ in range(60):  # then the sandbox goes, at the end of the grace
        if stopped not in await running_sandboxes(ul):
            break
        await asyncio.sleep(0.1)
    assert await running_sandboxes(ul) == live - {stopped}
    await ul.fleets.delete(name="crew")
    await reconcile_until(reconciler, ul, lambda f: all(m.state == "terminated" for m in f.members))
    for _ in range(60):
        if not await running_sandboxes(ul):
            break
        await asyncio.sleep(0.1)
    assert not await running_sandboxes(ul)


async def test_a_crashing_command_is_restarted_then_escalated_once(
    ul: AsyncUnderlay, kernel: Kernel, base: str
) -> None:
    await ul.fleets.apply(spec=spec("exit 3", 1, restart="permanent"))
    reconciler = FleetReconciler(kernel, api_url=base)
    fleet = await reconcile_until(reconciler, ul, lambda f: f.escalation_id is not None)
    assert fleet.members[0].restarts == 1
    [esc] = (await ul.escalations.list()).items
    assert esc.source == "fleet:crew" and "more than 1 restarts in 60 s" in esc.summary


async def test_a_test_command_checks_the_work_left_in_the_sandbox(
    ul: AsyncUnderlay, kernel: Kernel, base: str
) -> None:
    fleet_spec = spec("echo hello > out.txt", 1)
    fleet_spec["evaluators"] = [
        {"name": "has-hello", "check": {"command": "grep -q hello out.txt"}, "action": "kill"},
        {"name": "has-bye", "check": {"command": "grep bye out.txt"}, "action": "escalate"},
    ]
    await ul.fleets.apply(spec=fleet_spec)
    reconciler = FleetReconciler(kernel, api_url=base)
    done = await reconcile_until(reconciler, ul, lambda f: f.members[0].state == "succeeded")
    [esc] = (await ul.escalations.list()).items  # has-hello passed: no kill
    assert esc.summary.startswith("has-bye failed on sh.0: the check exited 1")
    assert (await ul.sandbox.get(sandbox=done.members[0].sandbox_id)).state == "destroyed"


async def test_a_members_sandbox_has_its_resources_and_memory_scope(
    ul: AsyncUnderlay, kernel: Kernel, base: str
) -> None:
    resources = {"cpus": 0.5, "memory_mb": 256, "pids": 64, "disk_mb": 64}
    command = ME + " > scope.tmp && mv scope.tmp scope; sleep 60"
    await ul.fleets.apply(spec=spec(command, 1, resources=resources, termination_grace_seconds=0))
    reconciler = FleetReconciler(kernel, api_url=base)
    fleet = await reconcile_until(reconciler, ul, lambda f: f.members[0].state == "running")
    sandbox = await ul.sandbox.get(sandbox=fleet.members[0].sandbox_id)
    assert sandbox.limits.model_dump() == resources
    assert sorted(sandbox.env_names) == ["UNDERLAY_TOKEN", "UNDERLAY_URL"]  # nothing else
    scope = None
    for _ in range(40):
        try:
            scope = await ul.sandbox.files.read(sandbox=sandbox.id, path="scope")
            break
        except errors.NotFound:
            await asyncio.sleep(0.05)
    assert scope is not None
    me = json.loads(scope.content)
    assert me.pop("state") in ("starting", "running")  # as the reconciler last saw it
    assert me == {"fleet": "crew", "agent": "sh", "replica": 0, "restarts": 0,
                  "memory_scope": {"agent_id": "crew.sh"}, "feedback": None}  # fmt: skip
    await ul.fleets.delete(name="crew")
    await reconcile_until(reconciler, ul, lambda f: f.members[0].state == "terminated")
    assert (await ul.sandbox.get(sandbox=sandbox.id)).state == "destroyed"  # no grace: at once
    with pytest.raises(errors.InvalidInput, match="resources apply to command programs"):
        python = {"name": "p", "program": {"python": "m:f"}, "resources": resources}
        await ul.fleets.apply(spec={"name": "bad", "agents": [python]})
