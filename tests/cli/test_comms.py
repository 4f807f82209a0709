"""``underlay events`` (a page, topic filters, --follow that waits for a publish made by
another process) and ``underlay inbox`` (own messages, --ack, --all, another agent's
inbox refused), against a real embedded kernel."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from underlay.comms import events
from underlay.config import Config
from underlay.storage.engine import Database

from .conftest import Cli


def publish(config: Config, org_id: str, topic: str, subject: str, **payload: Any) -> int:
    """A publish through an engine of its own, as another process would."""

    async def run() -> int:
        db = Database(config.resolved_database_url)
        try:
            return await events.publish(db, org_id, topic, subject, payload)
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_events_pages_topics_and_follow(cli: Cli, config: Config) -> None:
    org = cli.json("call", "self.whoami")["org_id"]
    first = publish(config, org, "queue.landed", "chg_1", commit="abc")
    second = publish(config, org, "queue.rejected", "chg_2", summary="tests failed")
    table = cli.ok("events").stdout
    assert "queue.landed" in table and "chg_2" in table and f"--after {second}" in table
    landed = cli.json("events", "--topic", "queue.landed")
    assert [(e["subject"], e["payload"]) for e in landed["items"]] == [("chg_1", {"commit": "abc"})]
    assert cli.json("events", "--after", str(first))["items"][0]["subject"] == "chg_2"

    done = cli.ok("events", "--follow", "--count", "2", "--json").stdout.splitlines()
    assert [json.loads(line)["subject"] for line in done] == ["chg_1", "chg_2"]  # one a line

    result: dict[str, Any] = {}
    follower = threading.Thread(target=lambda: result.update(out=cli(
        "events", "--follow", "--count", "1", "--topic", "queue", "--after", str(second),
    )))  # fmt: skip
    follower.start()
    time.sleep(1.0)  # it is waiting now
    publish(config, org, "fleets.member", "not-this")
    publish(config, org, "queue.landed", "chg_3", commit="def")
    follower.join(20)
    assert not follower.is_alive()
    assert result["out"].exit_code == 0, result["out"].stderr
    assert "queue.landed  chg_3" in result["out"].stdout and "not-this" not in result["out"].stdout


def test_events_bad_input(cli: Cli) -> None:
    bad = cli("events", "--limit", "-1")
    assert bad.exit_code == 2 and "(field: limit)" in bad.stderr
    bad = cli("events", "--topic", "Queue!")
    assert bad.exit_code == 2 and "not a topic filter" in bad.stderr
    bad = cli("events", "--follow", "--count", "0")
    assert bad.exit_code == 2 and "--count must be at least 1" in bad.stderr


def test_inbox_ack_and_isolation(cli: Cli) -> None:
    cli.ok("agents", "create", "bob")
    cli.ok("agents", "create", "eve")
    bob = {"UNDERLAY_TOKEN": cli.json("tokens", "create", "--agent", "bob")["token"]}
    eve = {"UNDERLAY_TOKEN": cli.json("tokens", "create", "--agent", "eve")["token"]}
    sent = cli.json("call", "messages.send", "to=bob", "subject=please rebase",
                    "body:={\"ref\": \"feature\"}")  # fmt: skip
    shown = cli.ok("inbox", env=bob).stdout
    assert "please rebase" in shown and "underlay inbox --ack" in shown
    acked = cli.json("inbox", "--ack", env=bob)
    assert [m["id"] for m in acked["items"]] == [sent["id"]] and acked["items"][0]["read_at"]
    assert cli.json("inbox", env=bob)["items"] == []
    assert [m["body"] for m in cli.json("inbox", "--all", env=bob)["items"]] == [{"ref": "feature"}]
    assert len(cli.json("inbox", "--agent", "bob", "--all")["items"]) == 1  # the admin may
    refused = cli("inbox", "--agent", "bob", env=eve)
    assert refused.exit_code == 1 and "is theirs" in refused.stderr
    assert "permission_denied" in refused.stderr
