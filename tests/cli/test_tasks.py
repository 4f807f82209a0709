"""``underlay tasks`` on the embedded kernel: submit, ls, get, cancel, bad input."""

from __future__ import annotations

import asyncio

from underlay.config import Config
from underlay.kernel.kernel import Kernel
from underlay.orchestration.queue import NewTask, TaskQueue
from underlay.types import Money

from .conftest import Cli


def test_submit_list_get_cancel(cli: Cli) -> None:
    made = cli.json("tasks", "submit", "sleep", "--input", '{"seconds": 9}', "--priority", "4")
    assert (made["state"], made["priority"], made["input"]) == ("queued", 4, {"seconds": 9})
    again = cli.json("tasks", "submit", "noop", "--dedupe", "once")
    assert cli.json("tasks", "submit", "noop", "--dedupe", "once")["id"] == again["id"]
    listed = cli.json("tasks", "ls", "--state", "queued")["items"]
    assert {t["id"] for t in listed} == {made["id"], again["id"]}
    assert cli.json("tasks", "get", made["id"])["handler"] == "sleep"
    assert cli.json("tasks", "cancel", made["id"])["state"] == "cancelled"
    table = cli.ok("tasks", "ls").stdout
    assert made["id"] in table and "cancelled" in table


def test_bad_input_is_named(cli: Cli) -> None:
    bad = cli("tasks", "submit", "noop", "--input", "{not json")
    assert bad.exit_code == 2 and "(field: input)" in bad.stderr
    missing = cli("tasks", "get", "task_nope")
    assert missing.exit_code != 0 and "no task task_nope" in missing.stderr
    assert cli.json("tasks", "ls")["items"] == []


def test_worker_announces_itself_in_json_and_stops_cleanly(cli: Cli) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERLAY_")}
    env.update({k: v for k, v in cli.env.items() if v is not None})
    argv = [sys.executable, "-m", "underlay.cli.main", "worker", "--json"]
    proc = subprocess.Popen(
        [*argv, "-q", "alpha", "-q", "beta"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        started = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert started["worker"].startswith("wrk_") and started["queues"] == ["alpha", "beta"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 0 and "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


def test_costs_and_attempts(cli: Cli) -> None:
    made = cli.json("tasks", "submit", "noop")
    assert cli.json("tasks", "attempts", made["id"])["items"] == []  # not claimed yet
    assert cli.json("costs", "--by", "queue") == {"by": "queue", "rows": []}
    assert cli.json("costs", "--by", "agent") == {"by": "agent", "rows": []}
    bad = cli("costs", "--by", "colour")
    assert bad.exit_code == 2 and "(field: by)" in bad.stderr


def test_costs_show_money_per_task_and_per_agent(cli: Cli, config: Config) -> None:
    agent = cli.json("agents", "create", "fixer", "--budget", "1.00 USD")

    async def run_a_task_that_spends() -> None:  # the ledger posts as a task's syscall would
        k = await Kernel.open(config)
        try:
            org, q = agent["org_id"], TaskQueue(k.db)
            await q.submit(NewTask(org, "q", "fix", {}, agent["id"]), 1.0)
            [lease] = await q.claim(await q.register_worker("h", 1, ["q"], 1.0), ["q"], 1, 1.0)
            for n, amount in enumerate(("0.25", "0.05")):
                await k.ledger.transfer(
                    org, f"t{n}", ("agent", agent["id"]), ("usage", org),
                    Money(amount, "USD"), task_id=lease.task_id if n == 0 else None,
                    attempt=lease.attempt,
                )  # fmt: skip
            await q.complete(lease, {}, 3.0)
        finally:
            await k.close()

    asyncio.run(run_a_task_that_spends())
    [row] = cli.json("costs", "--by", "agent")["rows"]
    assert (row["key"], row["spend"], row["spend_per_success"], row["agent_spend"]) == (
        agent["id"], "0.25 USD", "0.25 USD", "0.30 USD",
    )  # fmt: skip
    table = cli.ok("costs", "--by", "agent").stdout
    assert "spend_per_success" in table and "agent_spend" in table and "0.30 USD" in table
    assert "agent_spend" not in cli.ok("costs").stdout
