"""``underlay call`` (any syscall), ``underlay syscalls`` and the error contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from underlay.kernel.builtin import builtin_table
from underlay.kernel.docgen import syscalls_markdown

from .conftest import Cli


def test_call_with_key_value_words(cli: Cli) -> None:
    made = cli.json(
        "call",
        "agents.create",
        "name=caller",
        'capabilities:=["system.*"]',
        'metadata:={"team": "ops"}',
    )
    assert made["capabilities"] == ["system.*"] and made["metadata"] == {"team": "ops"}
    got = cli.json("call", "agents.get", "agent=caller")
    assert got["id"] == made["id"]
    # key=value is a string; the kernel's validation coerces it to the field's type
    page = cli.json("call", "agents.list", "limit=1")
    assert len(page["items"]) == 1
    human = cli.ok("call", "agents.get", "agent=caller").stdout
    assert made["id"] in human and "caller" in human
    listing = cli.ok("call", "agents.list").stdout
    assert made["id"] in listing


def test_call_with_data_inline_file_and_stdin(cli: Cli, tmp_path: Path) -> None:
    cli.ok("call", "agents.create", "--data", '{"name": "from-data"}')
    body = tmp_path / "in.json"
    body.write_text(json.dumps({"name": "from-file", "capabilities": ["system.noop"]}))
    assert cli.json("call", "agents.create", "-d", f"@{body}")["name"] == "from-file"
    assert (
        cli.json("call", "agents.create", "-d", "@-", input='{"name": "from-stdin"}')["name"]
        == "from-stdin"
    )
    # words override --data keys
    got = cli.json("call", "agents.get", "-d", '{"agent": "nobody"}', "agent=from-file")
    assert got["capabilities"] == ["system.noop"]
    assert cli.json("call", "system.noop") == {}
    assert "ok" in cli.ok("call", "system.noop").stdout


def test_bad_input_exits_2_naming_the_field(cli: Cli) -> None:
    bad = cli("agents", "create", "no/slashes")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error[invalid_input]: ")
    assert "(field: name)" in bad.stderr
    assert bad.stdout == "" and "Traceback" not in bad.output

    limit = cli("call", "agents.list", "limit=0")
    assert limit.exit_code == 2 and "(field: limit)" in limit.stderr

    unknown = cli("call", "agents.get", "agent=x", "colour=red")
    assert unknown.exit_code == 2 and "(field: colour)" in unknown.stderr

    meta = cli("agents", "create", "m", "--meta", "novalue")
    assert meta.exit_code == 2 and "(field: metadata)" in meta.stderr

    word = cli("call", "agents.get", "just-a-word")
    assert word.exit_code == 2 and "key=value" in word.stderr

    not_json = cli("call", "agents.list", "-d", "{nope")
    assert not_json.exit_code == 2 and "(field: data)" in not_json.stderr


def test_errors_as_problem_json(cli: Cli) -> None:
    bad = cli("--json", "agents", "create", "no/slashes")
    assert bad.exit_code == 2
    problem = json.loads(bad.stdout)
    assert problem["code"] == "invalid_input" and problem["field"] == "name"
    assert problem["status"] == 400

    missing = cli("agents", "get", "ghost", "--json")
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["code"] == "not_found"
    assert "error[not_found]" in cli("agents", "get", "ghost").stderr

    unknown = cli("call", "no.such.syscall")
    assert unknown.exit_code == 1 and "error[not_found]" in unknown.stderr


def test_url_without_token_is_refused(cli: Cli) -> None:
    res = cli("--url", "http://127.0.0.1:9", "agents", "ls")
    assert res.exit_code == 2 and "(field: token)" in res.stderr


def test_unreachable_server_is_an_error_not_a_traceback(cli: Cli) -> None:
    res = cli("--url", "http://127.0.0.1:9", "--token", "ul_x", "agents", "ls")
    assert res.exit_code == 1 and "error[unavailable]" in res.stderr
    assert "Traceback" not in res.output


def test_syscalls_table_json_and_markdown(cli: Cli) -> None:
    rows = cli.json("syscalls")
    table = builtin_table()
    assert [r["name"] for r in rows] == [sc.name for sc in table]
    for row in rows:
        assert {"name", "capability", "mutating", "cost", "policy", "doc", "input_schema"} <= set(
            row
        )
    by_name = {r["name"]: r for r in rows}
    assert by_name["agents.create"]["mutating"] is True
    assert by_name["agents.get"]["capability"] == "agents.read"

    human = cli.ok("syscalls").stdout
    for sc in table:
        assert sc.name in human and sc.doc in human

    assert cli.ok("syscalls", "--markdown").stdout == syscalls_markdown(table)
    both = cli("syscalls", "--markdown", "--json")
    assert both.exit_code == 2 and json.loads(both.stdout)["field"] == "markdown"


def test_every_command_accepts_json_and_mutations_accept_idempotency_keys() -> None:
    import typer

    from underlay.cli.main import app

    def leaves(cmd: Any, path: str) -> list[tuple[str, Any]]:
        if hasattr(cmd, "commands"):
            return [
                leaf for name, sub in cmd.commands.items() for leaf in leaves(sub, f"{path} {name}")
            ]
        return [(path, cmd)]

    commands = dict(leaves(typer.main.get_command(app), "underlay"))
    assert {
        "underlay up",
        "underlay mcp",
        "underlay call",
        "underlay syscalls",
        "underlay audit verify",
        "underlay tokens revoke",
    } <= set(commands)
    for path, cmd in commands.items():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert "--json" in opts, path
    mutating = (
        "agents create",
        "agents disable",
        "tokens create",
        "tokens revoke",
        "budget fund",
        "budget grant",
        "call",
    )
    for path in mutating:
        opts = {o for p in commands[f"underlay {path}"].params for o in p.opts}
        assert "--idempotency-key" in opts, path


def test_home_option_chooses_the_installation_directory(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    cli.ok("--home", str(other), "agents", "create", "homed", env={"UNDERLAY_HOME": None})
    assert (other / "admin-token").exists()
    assert cli.json("agents", "get", "homed")["name"] == "homed"  # same database
