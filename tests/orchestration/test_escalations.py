"""The human escalation inbox, and a task that waits on a human's answer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from underlay import errors
from underlay.orchestration.worker import Worker
from underlay.sdk.client import AsyncUnderlay

from .conftest import settle


async def test_raise_list_get_resolve_once(ul: AsyncUnderlay) -> None:
    helper = await ul.agents.create("helper", capabilities=["escalations.raise"])
    agent = await ul.as_agent(helper)
    first = await agent.escalations.raise_(
        summary="Refund over the limit?", context={"amount": "900 EUR"}, kind="approval",
        dedupe_key="refund-17",
    )  # fmt: skip
    again = await agent.escalations.raise_(summary="Refund over the limit?", dedupe_key="refund-17")
    assert again.id == first.id and first.state == "open" and first.source == f"agent:{helper.id}"
    assert [e.id for e in (await ul.escalations.list()).items] == [first.id]
    with pytest.raises(errors.PermissionDenied):
        await agent.escalations.resolve(escalation_id=first.id, resolution={"approved": True})
    with pytest.raises(errors.PermissionDenied):
        await agent.escalations.list()
    done = await ul.escalations.resolve(escalation_id=first.id, resolution={"approved": False})
    assert (done.state, done.resolution) == ("resolved", {"approved": False})
    assert done.resolved_by and done.resolved_at
    with pytest.raises(errors.Conflict, match="resolved already"):
        await ul.escalations.resolve(escalation_id=first.id, resolution={"approved": True})
    assert (await ul.escalations.list()).items == []
    assert [e.id for e in (await ul.escalations.list(state="resolved")).items] == [first.id]


async def test_other_orgs_and_bad_input(ul: AsyncUnderlay) -> None:
    mine = await ul.escalations.raise_(summary="Which region?")
    other = await ul.orgs.create("other-org")
    theirs = ul.with_token(other.admin_token.get_secret_value())
    with pytest.raises(errors.NotFound):
        await theirs.escalations.get(escalation_id=mine.id)
    with pytest.raises(errors.NotFound):
        await theirs.escalations.resolve(escalation_id=mine.id, resolution={})
    assert (await theirs.escalations.list()).items == []
    with pytest.raises(errors.InvalidInput) as bad:
        await ul.escalations.raise_(summary="")
    assert bad.value.field == "summary"
    with pytest.raises(errors.InvalidInput):
        await ul.escalations.raise_(summary="x", kind="panic")
    assert [e.id for e in (await ul.escalations.list()).items] == [mine.id]


async def test_a_task_waits_for_a_human_then_resumes_with_the_answer(
    ul: AsyncUnderlay, worker: Worker, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    entry = {"entry": "orchestration.steps_handler:approval", "input": {"log": str(log)}}
    task = await ul.tasks.submit(handler="python", input=entry, max_attempts=1)
    waiting = await settle(ul, task.id, "waiting")
    [esc] = (await ul.escalations.list()).items
    assert waiting.waiting_on == f"human:{esc.id}"  # type: ignore[attr-defined]
    assert (esc.kind, esc.task_id, esc.context) == ("approval", task.id, {"build": 42})
    assert esc.summary == "Deploy build 42 to production?"
    assert worker._running == {}  # no worker is held while a human thinks
    await ul.escalations.resolve(escalation_id=esc.id, resolution={"approved": True})
    done = await settle(ul, task.id, "succeeded")
    assert done.result == {  # type: ignore[attr-defined]
        "approved": True, "_steps": {"executed": 1, "replayed": 1},
    }  # fmt: skip
    assert done.attempts == 1  # type: ignore[attr-defined]  (waiting is not an attempt)
    effects = Counter(log.read_text().split())
    assert effects == {f"{task.id}:prepare": 1, f"{task.id}:apply": 1}
    assert len((await ul.escalations.list(state="resolved")).items) == 1  # raised once
