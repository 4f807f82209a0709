"""``underlay tasks`` on the embedded kernel: submit, ls, get, cancel, bad input."""

from __future__ import annotations

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
    bad = cli("costs", "--by", "colour")
    assert bad.exit_code == 2 and "(field: by)" in bad.stderr
