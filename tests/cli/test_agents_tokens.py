"""``underlay agents`` and ``underlay tokens`` against a real embedded kernel."""

from __future__ import annotations

from .conftest import Cli


def test_create_list_get_disable_agent(cli: Cli) -> None:
    made = cli.ok(
        "agents",
        "create",
        "fixer",
        "--cap",
        "system.*",
        "--cap",
        "budget.*",
        "--budget",
        "5.00 USD",
        "--meta",
        "team=infra",
    )
    assert "created agent fixer" in made.stdout
    assert "did:key:z6Mk" in made.stdout  # printed as is, no emoji substitution

    cli.ok("agents", "create", "helper")
    table = cli.ok("agents", "ls").stdout
    assert "fixer" in table and "helper" in table and "system.*, budget.*" in table

    agent = cli.json("agents", "get", "fixer")
    assert agent["name"] == "fixer"
    assert agent["capabilities"] == ["system.*", "budget.*"]
    assert agent["metadata"] == {"team": "infra"}
    assert agent["status"] == "active"
    # --json after the command works as well as before it
    assert cli.json("agents", "get", agent["id"]) == agent
    by_id = cli.ok("agents", "get", agent["id"], "--json")
    assert by_id.stderr == "" and __import__("json").loads(by_id.stdout)["id"] == agent["id"]

    disabled = cli.json("agents", "disable", "fixer")
    assert disabled["status"] == "disabled"
    active = cli.json("agents", "ls", "--status", "active")
    assert [a["name"] for a in active["items"]] == ["helper"]


def test_agents_ls_pages(cli: Cli) -> None:
    for name in ("a1", "a2", "a3"):
        cli.ok("agents", "create", name)
    first = cli.json("agents", "ls", "--limit", "2")
    assert len(first["items"]) == 2 and first["next_cursor"] is not None
    assert "more results" in cli.ok("agents", "ls", "--limit", "2").stdout
    everything = cli.json("agents", "ls", "--limit", "2", "--all")
    assert [a["name"] for a in everything["items"]] == ["a1", "a2", "a3"]
    assert everything["next_cursor"] is None


def test_idempotency_key_returns_the_first_result(cli: Cli) -> None:
    one = cli.json("agents", "create", "once", "--idempotency-key", "k-1")
    two = cli.json("agents", "create", "once", "--idempotency-key", "k-1")
    assert one["id"] == two["id"]
    assert len(cli.json("agents", "ls")["items"]) == 1


def test_token_create_use_revoke(cli: Cli) -> None:
    cli.ok("agents", "create", "worker", "--cap", "system.*")
    human = cli.ok("tokens", "create", "--agent", "worker", "--ttl", "600")
    assert "shown this once" in human.stdout
    secret_line = [ln for ln in human.stdout.splitlines() if ln.startswith("ul_")]
    assert len(secret_line) == 1

    issued = cli.json("tokens", "create", "--agent", "worker", "--name", "ci")
    token, token_id = issued["token"], issued["info"]["id"]
    assert token.startswith("ul_") and issued["info"]["kind"] == "agent"

    me = cli.json("call", "self.whoami", env={"UNDERLAY_TOKEN": token})
    assert me["kind"] == "agent" and me["id"] == issued["info"]["subject_id"]
    listed = cli.json("tokens", "ls", "--agent", "worker")
    assert token_id in [t["id"] for t in listed["items"]]
    assert token not in cli.ok("tokens", "ls").stdout  # secrets are never listed

    revoked = cli.json("tokens", "revoke", token_id)
    assert revoked["revoked_at"] is not None
    assert token_id not in [t["id"] for t in cli.json("tokens", "ls")["items"]]
    assert token_id in [t["id"] for t in cli.json("tokens", "ls", "--all")["items"]]

    denied = cli("call", "self.whoami", env={"UNDERLAY_TOKEN": token})
    assert denied.exit_code == 1
    assert "error[unauthenticated]" in denied.stderr
    assert denied.stdout == "" and "Traceback" not in denied.output


def test_agent_token_cannot_do_admin_work(cli: Cli) -> None:
    cli.ok("agents", "create", "narrow", "--cap", "system.noop")
    token = cli.json("tokens", "create", "--agent", "narrow")["token"]
    denied = cli("agents", "create", "sneaky", env={"UNDERLAY_TOKEN": token})
    assert denied.exit_code == 1 and "error[permission_denied]" in denied.stderr


def test_enrollment_token_and_its_flags(cli: Cli) -> None:
    issued = cli.json(
        "tokens",
        "create",
        "--kind",
        "enrollment",
        "--max-agents",
        "2",
        "--enroll-cap",
        "system.*",
        "--enroll-budget",
        "1.00 USD",
    )
    assert issued["info"]["kind"] == "enrollment"
    assert issued["info"]["limits"]["max_agents"] == 2
    enrolled = cli.json(
        "call",
        "agents.enroll",
        "name=self-made",
        "budget=1.00 USD",
        'capabilities:=["system.noop"]',
        env={"UNDERLAY_TOKEN": issued["token"]},
    )
    assert enrolled["agent"]["name"] == "self-made" and enrolled["token"].startswith("ul_")

    misuse = cli("tokens", "create", "--max-agents", "2")
    assert misuse.exit_code == 2 and "(field: kind)" in misuse.stderr
