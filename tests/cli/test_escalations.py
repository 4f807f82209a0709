"""``underlay escalations``: list, read and resolve the human inbox."""

from __future__ import annotations

from .conftest import Cli


def test_ls_get_resolve(cli: Cli) -> None:
    raised = cli.json("call", "escalations.raise", "summary=Ship on Friday?", "kind=approval")
    assert [e["id"] for e in cli.json("escalations", "ls")["items"]] == [raised["id"]]
    assert cli.json("escalations", "get", raised["id"])["summary"] == "Ship on Friday?"
    assert "Ship on Friday?" in cli.ok("escalations", "ls").stdout
    done = cli.json("escalations", "resolve", raised["id"], "--approve", "--note", "go")
    assert (done["state"], done["resolution"]) == ("resolved", {"approved": True, "note": "go"})
    assert cli.json("escalations", "ls")["items"] == []
    assert len(cli.json("escalations", "ls", "--resolved")["items"]) == 1
    again = cli("escalations", "resolve", raised["id"], "--reject")
    assert again.exit_code != 0 and "resolved already" in again.stderr


def test_resolve_needs_an_answer_and_valid_json(cli: Cli) -> None:
    raised = cli.json("call", "escalations.raise", "summary=Which bucket?")
    empty = cli("escalations", "resolve", raised["id"])
    assert empty.exit_code == 2 and "(field: resolution)" in empty.stderr
    bad = cli("escalations", "resolve", raised["id"], "--data", "[1, 2]")
    assert bad.exit_code == 2 and "(field: data)" in bad.stderr
    ok = cli.json("escalations", "resolve", raised["id"], "--data", '{"bucket": "logs"}')
    assert ok["resolution"] == {"bucket": "logs"}
