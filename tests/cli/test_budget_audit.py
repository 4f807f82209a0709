"""``underlay budget`` and ``underlay audit`` (including a tampered chain)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from underlay.storage.engine import Database

from .conftest import Cli


def test_fund_balance_grant_transfers(cli: Cli) -> None:
    cli.ok("agents", "create", "payer", "--cap", "budget.grant")
    cli.ok("agents", "create", "payee")

    funded = cli.ok("budget", "fund", "payer", "5.00 USD", "--memo", "seed")
    assert "funded 5.00 USD to payer" in funded.stdout
    cli.ok("budget", "fund", "payer", "2.50", "USD")  # the amount may be two words

    balance = cli.json("budget", "balance", "--agent", "payer")
    assert balance["available"] == "7.50 USD" and balance["pending"] == "0.00 USD"
    assert "7.50 USD" in cli.ok("budget", "balance", "--agent", "payer").stdout

    token = cli.json("tokens", "create", "--agent", "payer")["token"]
    as_payer = {"UNDERLAY_TOKEN": token}
    granted = cli.json("budget", "grant", "payee", "1.25 USD", env=as_payer)
    assert granted["kind"] and granted["amount"] == "1.25 USD"
    assert cli.json("budget", "balance", env=as_payer)["available"] == "6.25 USD"
    assert cli.json("budget", "balance", "--agent", "payee")["available"] == "1.25 USD"

    history = cli.json("budget", "transfers", "--agent", "payer")
    assert [t["amount"] for t in history["items"]] == ["5.00 USD", "2.50 USD", "1.25 USD"]
    assert history["items"][0]["memo"] == "seed"
    paged = cli.json("budget", "transfers", "--agent", "payer", "--limit", "1", "--all")
    assert [t["id"] for t in paged["items"]] == [t["id"] for t in history["items"]]
    assert "seed" in cli.ok("budget", "transfers", "--agent", "payer").stdout


def test_fund_with_transfer_id_applies_once(cli: Cli) -> None:
    cli.ok("agents", "create", "once")
    cli.ok("budget", "fund", "once", "1.00 USD", "--transfer-id", "t-1")
    assert cli.json("budget", "fund", "once", "1.00 USD", "--transfer-id", "t-1")["id"] == "t-1"
    assert cli.json("budget", "balance", "--agent", "once")["available"] == "1.00 USD"
    clash = cli("budget", "fund", "once", "2.00 USD", "--transfer-id", "t-1")
    assert clash.exit_code == 1 and "error[conflict]" in clash.stderr


def test_bad_amount_names_the_field(cli: Cli) -> None:
    cli.ok("agents", "create", "x")
    bad = cli("budget", "fund", "x", "lots")
    assert bad.exit_code == 2 and "error[invalid_input]" in bad.stderr and "amount" in bad.stderr


def _tamper(url: str, seq: int) -> None:
    async def run() -> None:
        db = Database(url)
        async with db.write() as conn:
            await conn.execute(
                text("UPDATE audit_events SET outcome = 'forged' WHERE seq = :seq"), {"seq": seq}
            )
        await db.dispose()

    asyncio.run(run())


def test_audit_tail_and_verify_detects_tampering(cli: Cli) -> None:
    cli.ok("agents", "create", "a1")
    cli.ok("agents", "create", "a2")
    cli.ok("budget", "fund", "a2", "1.00 USD")

    events = cli.json("audit", "tail", "-n", "20")["items"]
    assert [e["syscall"] for e in events] == ["budget.fund", "agents.create", "agents.create"]
    only = cli.json("audit", "tail", "--syscall", "agents.create")["items"]
    assert len(only) == 2 and all(e["syscall"] == "agents.create" for e in only)
    assert len(cli.json("audit", "tail", "-n", "1")["items"]) == 1
    assert "agents.create" in cli.ok("audit", "tail").stdout

    intact = cli.ok("audit", "verify")
    assert "audit chain intact: 3 events verified" in intact.stdout
    assert cli.json("audit", "verify") == {"ok": True, "events": 3, "problems": []}

    victim = next(e["seq"] for e in events if e["syscall"] == "budget.fund")
    _tamper(cli.env["UNDERLAY_DATABASE_URL"] or "", victim)

    broken = cli("audit", "verify")
    assert broken.exit_code == 1
    assert "audit chain BROKEN" in broken.stdout
    assert str(victim) in broken.stdout and "content altered" in broken.stdout
    as_json = cli("--json", "audit", "verify")
    assert as_json.exit_code == 1
    report = __import__("json").loads(as_json.stdout)
    assert report["ok"] is False
    assert {"seq": victim, "problem": "content altered"} in report["problems"]
