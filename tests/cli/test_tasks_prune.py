"""``underlay tasks prune``: dry run, prune, bad input named (exit 2)."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from underlay.config import Config
from underlay.storage.engine import Database
from underlay.storage.schema import tasks

from .conftest import Cli


def _backdate(config: Config, task_id: str, days: float) -> None:
    async def run() -> None:
        db = Database(config.resolved_database_url)
        try:
            async with db.write() as conn:
                await conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id)
                    .values(finished_at=tasks.c.finished_at - days * 86_400)
                )
        finally:
            await db.dispose()

    asyncio.run(run())


def test_prune_dry_run_then_for_real(cli: Cli, config: Config) -> None:
    old = cli.json("tasks", "submit", "noop")
    cli.json("tasks", "cancel", old["id"])
    fresh = cli.json("tasks", "submit", "noop")
    cli.json("tasks", "cancel", fresh["id"])
    queued = cli.json("tasks", "submit", "noop")
    _backdate(config, old["id"], days=3)
    dry = cli.json("tasks", "prune", "--older-than", "2", "--dry-run")
    assert (dry["dry_run"], dry["tasks"], dry["attempts"], dry["workflows"]) == (True, 1, 0, 0)
    assert cli.json("tasks", "get", old["id"])["state"] == "cancelled"
    shown = cli.ok("tasks", "prune", "--older-than", "2").stdout
    assert shown.startswith("pruned 1 tasks, 0 attempts and 0 DBOS workflows finished before")
    assert {t["id"] for t in cli.json("tasks", "ls")["items"]} == {fresh["id"], queued["id"]}
    again = cli.ok("tasks", "prune", "--older-than", "2", "--dry-run").stdout
    assert again.startswith("would prune 0 tasks")


def test_prune_bad_input_is_named(cli: Cli) -> None:
    zero = cli("tasks", "prune", "--older-than", "0")
    assert zero.exit_code == 2 and "(field: older_than_days)" in zero.stderr
    word = cli("tasks", "prune", "--older-than", "soon")
    assert word.exit_code == 2 and "--older-than" in word.stderr
    missing = cli("tasks", "prune")
    assert missing.exit_code == 2
