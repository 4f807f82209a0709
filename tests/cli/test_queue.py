"""``underlay repos add|ls`` and ``underlay queue submit|ls|status`` (the landing itself is
the queue's loop in ``underlay up``; tests/coordination covers it)."""

from __future__ import annotations

from pathlib import Path

from coordination.repo import Repo

from .conftest import Cli


def test_register_submit_list_and_status(cli: Cli, tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    base = repo.commit({"a.txt": "a\n"})
    repo.push(f"{base}:refs/heads/main")
    for name, text in (("ours", "ours\n"), ("theirs", "theirs\n")):
        repo.branch(name, base)
        repo.commit({"a.txt": text})
        repo.push(name)
    added = cli.json("repos", "add", "app", "--path", str(repo.bare), "--check", "true")
    assert (added["name"], added["target_head"], added["checks"]) == ("app", base, ["true"])
    assert "app" in cli.ok("repos", "ls").stdout
    first = cli.json("queue", "submit", "app", "ours", "--task", "task_1")
    cli.json("queue", "submit", "app", "theirs")
    assert (first["state"], first["task_id"]) == ("queued", "task_1")
    listed = cli.ok("queue", "ls", "app", "--predict").stdout
    assert "queued" in listed and "conflict:" in listed and "a.txt" in listed
    assert cli.json("queue", "status", first["id"])["head"] == repo.git("rev-parse", "ours")
    bad = cli("queue", "submit", "app", "nope")
    assert bad.exit_code != 0 and "nope names no commit in app" in bad.stderr
    both = cli("repos", "add", "x", "--path", str(tmp_path), "--create")
    assert both.exit_code == 2 and "exactly one of path" in both.stderr
