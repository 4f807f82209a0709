"""Failure classes: transient retries, permanent fails, needs-human and budget wait."""

from __future__ import annotations

from pathlib import Path

import pytest

from underlay import errors
from underlay.orchestration.failures import NeedsHuman, classify, describe
from underlay.orchestration.worker import Worker
from underlay.sdk.client import AsyncUnderlay

from .conftest import settle


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (errors.Unavailable("db away"), "transient"),
        (errors.Timeout("slow"), "transient"),
        (RuntimeError("a bug"), "transient"),
        (errors.InvalidInput("bad"), "permanent"),
        (errors.NotFound("gone"), "permanent"),
        (errors.Conflict("state"), "permanent"),
        (errors.PermissionDenied("no"), "needs_human"),
        (errors.Unauthenticated("expired"), "needs_human"),
        (NeedsHuman("rotate the key"), "needs_human"),
        (errors.BudgetExceeded("spent"), "budget"),
    ],
)
def test_every_failure_has_one_class(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind
    assert describe(exc)["class"] == kind


def flaky(tmp_path: Path, error: str) -> dict[str, object]:
    marker = str(tmp_path / f"{error}.marker")
    return {
        "entry": "orchestration.steps_handler:flaky",
        "input": {"marker": marker, "error": error},
    }


async def test_transient_failures_retry_with_backoff(
    ul: AsyncUnderlay, worker: Worker, tmp_path: Path
) -> None:
    task = await ul.tasks.submit(handler="python", input=flaky(tmp_path, "transient"))
    done = await settle(ul, task.id, "succeeded")
    assert done.result["attempt"] == 2  # type: ignore[attr-defined]
    assert done.error["class"] == "transient"  # type: ignore[attr-defined]  (the first one's)
    history = (await ul.tasks.attempts(task_id=task.id)).items
    assert [(a.outcome, a.error_class) for a in history] == [
        ("retrying", "transient"), ("succeeded", None),
    ]  # fmt: skip
    [row] = (await ul.tasks.costs(by="handler")).rows
    assert (row.key, row.tasks, row.succeeded, row.attempts) == ("python", 1, 1, 2)
    assert 0 < row.retry_tax < 1 and row.attempts_per_success == 2


@pytest.mark.parametrize("error", ["needs_human", "budget"])
async def test_needs_human_and_budget_wait_in_the_inbox_then_retry(
    ul: AsyncUnderlay, worker: Worker, tmp_path: Path, error: str
) -> None:
    task = await ul.tasks.submit(handler="python", input=flaky(tmp_path, error))
    waiting = await settle(ul, task.id, "waiting")
    [esc] = (await ul.escalations.list()).items
    assert waiting.waiting_on == f"human:{esc.id}"  # type: ignore[attr-defined]
    assert esc.context["failure"]["class"] == error and esc.context["task"] == task.id
    assert esc.task_id == task.id and "needs a person" in esc.summary
    await ul.escalations.resolve(escalation_id=esc.id, resolution={"retry": True})
    done = await settle(ul, task.id, "succeeded")
    assert done.attempts == 1  # type: ignore[attr-defined]  (the wait was not an attempt)


async def test_a_human_can_give_up_on_a_waiting_task(
    ul: AsyncUnderlay, worker: Worker, tmp_path: Path
) -> None:
    task = await ul.tasks.submit(handler="python", input=flaky(tmp_path, "needs_human"))
    await settle(ul, task.id, "waiting")
    [esc] = (await ul.escalations.list()).items
    await ul.escalations.resolve(escalation_id=esc.id, resolution={"retry": False})
    failed = await settle(ul, task.id, "failed")
    assert failed.error["message"].endswith("was rotated")  # type: ignore[attr-defined]
    assert failed.attempts == 1  # type: ignore[attr-defined]  (no further attempt ran)


@pytest.mark.parametrize(("error", "max_attempts"), [("permanent", 3), ("transient", 2)])
async def test_a_final_failure_compensates_the_steps_done_last_first(
    ul: AsyncUnderlay, worker: Worker, tmp_path: Path, error: str, max_attempts: int
) -> None:
    log = str(tmp_path / "saga.log")
    entry = {"entry": "orchestration.steps_handler:saga", "input": {"log": log, "error": error}}
    task = await ul.tasks.submit(handler="python", input=entry, max_attempts=max_attempts)
    failed = await settle(ul, task.id, "failed")
    assert failed.error["compensated"] == ["b", "a"]
    assert failed.attempts == (1 if error == "permanent" else 2)
    lines = Path(log).read_text().split("\n")[:-1]
    # each effect once (a retry replays a and b), then the undos, last first, once each
    assert [ln.split("|")[-1] for ln in lines] == ["a", "b", "undo b", "undo a"]
