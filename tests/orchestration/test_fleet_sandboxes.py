"""Fleet programs as commands in the members' own sandboxes (real bubblewrap)."""

from __future__ import annotations

from typing import Any

import pytest

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


async def test_scale_down_destroys_a_members_sandbox(
    ul: AsyncUnderlay, kernel: Kernel, base: str
) -> None:
    await ul.fleets.apply(spec=spec("sleep 60", 2))
    reconciler = FleetReconciler(kernel, api_url=base)
    await reconcile_until(reconciler, ul, lambda f: [m.state for m in f.members] == ["running"] * 2)
    live = {s.id for s in (await ul.sandbox.list()).items if s.state == "running"}
    assert len(live) == 2
    await ul.fleets.apply(spec=spec("sleep 60", 1))
    await reconcile_until(
        reconciler, ul, lambda f: [m.state for m in f.members] == ["running", "terminated"]
    )
    still = {s.id for s in (await ul.sandbox.list()).items if s.state == "running"}
    assert len(still) == 1 and still < live
    await ul.fleets.delete(name="crew")
    await reconcile_until(reconciler, ul, lambda f: all(m.state == "terminated" for m in f.members))
    assert not [s for s in (await ul.sandbox.list()).items if s.state == "running"]


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
