"""``underlay memory ...`` embedded: add, search, list, history, delete, export, import."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Cli


def test_memory_commands_round_trip(cli: Cli, tmp_path: Path) -> None:
    added = cli.json("memory", "add", "I live in Lyon. I work as a nurse.", "--user", "ana")
    assert [r["event"] for r in added["results"]] == ["ADD", "ADD"]
    moved = cli.json("memory", "add", "I moved to Oslo.", "--user", "ana")
    [op] = moved["results"]
    assert op["event"] == "UPDATE" and op["previous_memory"] == "I live in Lyon."
    found = cli.json("memory", "search", "where does she live", "--user", "ana", "--limit", "1")
    assert found["results"][0]["memory"] == "I moved to Oslo."
    table = cli.ok("memory", "search", "nurse", "--user", "ana").stdout
    assert "I work as a nurse." in table
    assert len(cli.json("memory", "ls", "--user", "ana")["items"]) == 2
    events = [h["event"] for h in cli.json("memory", "history", op["id"])["items"]]
    assert events == ["ADD", "UPDATE"]

    dump = tmp_path / "ana.jsonl"
    dump.write_text(cli.ok("memory", "export", "--user", "ana").stdout)
    lines = [json.loads(x) for x in dump.read_text().splitlines()]
    assert len(lines) == 3 and all(x["format"] == "underlay.memory/1" for x in lines)
    assert cli.json("memory", "import", str(dump))["skipped"] == 3

    cli.ok("memory", "rm", op["id"])
    assert len(cli.json("memory", "ls", "--user", "ana")["items"]) == 1
    missing = cli("memory", "get", "mem_nope")
    assert missing.exit_code != 0 and "mem_nope" in missing.stderr
    no_scope = cli("memory", "add", "orphan fact here")
    assert no_scope.exit_code != 0 and "scope" in no_scope.stderr
