"""``underlay vault``: put from stdin or the environment (never argv), list without
values, grant and revoke, remove; and ``sandbox run --secret``."""

from __future__ import annotations

from .conftest import Cli

VALUE = "cli-secret-value-42"


def test_put_list_grant_revoke_rm(cli: Cli) -> None:
    made = cli.ok("vault", "put", "github", "--description", "CI bot", input=VALUE + "\n")
    assert "stored github, version 1" in made.stdout and VALUE not in made.stdout
    again = cli.json("vault", "put", "github", "--from-env", "GH", env={"GH": VALUE + "-rotated"})
    assert (again["version"], again["description"]) == (2, "")
    listed = cli.ok("vault", "ls").stdout
    assert "github" in listed and VALUE not in listed
    agent = cli.json("agents", "create", "builder", "--cap", "sandbox.*")
    assert cli.ok("vault", "grant", "github", "builder").stdout.strip().endswith(agent["id"])
    assert cli.json("vault", "ls")["items"][0]["grants"] == [agent["id"]]
    assert "no agent" in cli.ok("vault", "revoke", "github", "builder").stdout
    cli.ok("vault", "rm", "github")
    assert cli.json("vault", "ls")["items"] == []


def test_bad_input_is_named(cli: Cli) -> None:
    bad = cli("vault", "put", "Not Valid", input=VALUE)
    assert bad.exit_code != 0 and "is not a secret name" in bad.stderr
    assert VALUE not in bad.stdout + bad.stderr
    missing = cli("vault", "put", "x", "--from-env", "NOT_SET_ANYWHERE")
    assert missing.exit_code != 0 and "no variable NOT_SET_ANYWHERE" in missing.stderr
    gone = cli("vault", "rm", "nope")
    assert gone.exit_code != 0 and "no secret 'nope'" in gone.stderr


def test_sandbox_run_with_a_secret(cli: Cli) -> None:
    cli.ok("vault", "put", "api", input=VALUE)
    sbx = cli.json("sandbox", "create", "--persistent", "--timeout", "0", "--secret", "TOK=api")
    assert sbx["env_names"] == ["TOK"]
    assert cli.ok("sandbox", "run", sbx["id"], "printenv TOK").stdout.strip() == VALUE
    out = cli.ok("sandbox", "run", sbx["id"], "--secret", "API_KEY=api", "printenv API_KEY")
    assert out.stdout.strip() == VALUE
    plain = cli("sandbox", "run", sbx["id"], "printenv API_KEY")
    assert plain.exit_code == 1 and plain.stdout == ""
    cli.ok("sandbox", "destroy", sbx["id"])
