"""``underlay sandbox ...`` in the embedded mode (persistent sandboxes span invocations)."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli


def test_persistent_sandbox_across_cli_invocations(cli: Cli, tmp_path: Path) -> None:
    sbx = cli.json("sandbox", "create", "--persistent", "--timeout", "0", "--disk-mb", "32")
    assert sbx["persistent"] and sbx["state"] == "running" and sbx["expires_at"] is None
    sid = sbx["id"]

    src = tmp_path / "hello.py"
    src.write_text("print('hello from a file')\n")
    wrote = cli.json("sandbox", "files", "write", sid, "app/hello.py", str(src))
    assert wrote["path"] == "/workspace/app/hello.py"

    run = cli.ok("sandbox", "run", sid, "python3 app/hello.py")
    assert run.stdout == "hello from a file\n"
    failed = cli("sandbox", "run", sid, "echo oops >&2; exit 7")
    assert failed.exit_code == 7 and "oops" in failed.stderr

    listing = cli.json("sandbox", "files", "ls", sid, "app")
    assert [f["path"] for f in listing["items"]] == ["/workspace/app/hello.py"]
    assert cli.ok("sandbox", "files", "read", sid, "app/hello.py").stdout.startswith("print(")

    ids = [s["id"] for s in cli.json("sandbox", "ls")["items"]]
    assert sid in ids
    gone = cli.json("sandbox", "destroy", sid)
    assert gone["state"] == "destroyed"
    assert sid not in [s["id"] for s in cli.json("sandbox", "ls")["items"]]


def test_run_with_argv_and_json_output(cli: Cli) -> None:
    sid = cli.json("sandbox", "create", "--persistent", "--timeout", "0")["id"]
    out = cli.json("sandbox", "run", sid, "--", "printf", "%s-", "a", "b")
    assert out["stdout"] == "a-b-" and out["exit_code"] == 0
    cli.ok("sandbox", "destroy", sid)


def test_bad_input_is_a_clear_error(cli: Cli) -> None:
    result = cli("sandbox", "create", "--template", "no-such-template")
    assert result.exit_code != 0 and "no-such-template" in result.stderr
    assert "default" in cli.ok("sandbox", "template", "ls").stdout
