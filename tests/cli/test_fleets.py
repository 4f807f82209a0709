"""``underlay apply -f``, ``get fleets``, ``describe fleet``, ``delete fleet``."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli

FLEET = """
name: crew
agents:
  - name: helper
    program: {python: "orchestration.steps_handler:agent_done"}
    replicas: 2
    restart: transient
supervision: {strategy: one_for_all, intensity: 5, period: 30}
"""


def test_apply_get_describe_delete(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    dry = cli.ok("apply", "-f", str(path), "--dry-run").stdout
    assert "+ agent helper: 2 x orchestration.steps_handler:agent_done (transient)" in dry
    assert "not applied (dry run)" in dry
    assert cli.json("get", "fleets")["items"] == []
    applied = cli.json("apply", "-f", str(path))
    assert (applied["applied"], applied["generation"]) == (True, 1)
    path.write_text(FLEET.replace("replicas: 2", "replicas: 4"))
    assert "~ agent helper: replicas 2 -> 4" in cli.ok("apply", "-f", str(path)).stdout
    [fleet] = cli.json("get", "fleets")["items"]
    assert (fleet["name"], fleet["generation"]) == ("crew", 2)
    described = cli.ok("describe", "fleet", "crew").stdout
    assert "one_for_all" in described and "helper" in described
    gone = cli.json("delete", "fleet", "crew")
    assert gone["changes"] == ["- agent helper: 4 replicas stop"]
    assert cli.json("get", "fleets")["items"][0]["deleted"] is True


def test_bad_files_and_kinds_are_named(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("name: [unclosed")
    bad = cli("apply", "-f", str(path))
    assert bad.exit_code == 2 and "(field: file)" in bad.stderr
    path.write_text(FLEET.replace("replicas: 2", "replicas: -1"))
    negative = cli("apply", "-f", str(path))
    assert negative.exit_code == 2 and "replicas" in negative.stderr
    missing = cli("apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    kind = cli("get", "pods")
    assert kind.exit_code == 2 and "(field: kind)" in kind.stderr
    assert cli("describe", "fleet", "nothere").exit_code != 0
