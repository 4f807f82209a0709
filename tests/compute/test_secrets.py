"""Secrets from the vault in sandboxes: only granted ones, only where asked for, and
their values nowhere else (not the audit trail, not the host's environment)."""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import select

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.storage import schema

VALUE = "ghp_sandbox-secret-9876543210"
BUDGET = "1.00 USD"  # metering charges the owner: without budget its sandbox is stopped
PRINT_ENV = ["python3", "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


async def env_in(ul: AsyncUnderlay, sandbox: str, **fields: object) -> dict[str, str]:
    out = await ul.sandbox.commands.run(sandbox, PRINT_ENV, **fields)
    assert out.exit_code == 0, out.stderr
    env: dict[str, str] = json.loads(out.stdout)
    return env


async def test_a_granted_secret_is_in_the_sandbox_and_nowhere_else(
    ul: AsyncUnderlay, kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_ONLY_SECRET", "host-value")  # the caller's environment
    await ul.vault.put(name="github", value=VALUE)
    builder = await ul.agents.create("builder", capabilities=["sandbox.*"], budget=BUDGET)
    await ul.vault.grant(name="github", agent="builder")
    ua = await ul.as_agent(builder)
    sbx = await ua.sandbox.create(timeout=60, secrets={"GITHUB_TOKEN": "github"})
    assert sbx.env_names == ["GITHUB_TOKEN"]
    env = await env_in(ua, sbx.id)
    assert env["GITHUB_TOKEN"] == VALUE and "HOST_ONLY_SECRET" not in env
    assert os.environ.get("GITHUB_TOKEN") != VALUE
    async with kernel.db.read() as conn:
        events = (await conn.execute(select(schema.audit_events))).all()
    trail = "\n".join(json.dumps(dict(e._mapping), default=str) for e in events)
    assert VALUE not in trail
    [created] = [e for e in events if e.syscall == "sandbox.create"]
    assert created.detail["result"]["secrets"] == ["github"]  # which ones: names only


async def test_an_ungranted_secret_is_refused_before_anything_starts(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    await ul.vault.put(name="prod-db", value=VALUE)
    intruder = await ul.as_agent(
        await ul.agents.create("intruder", capabilities=["sandbox.*"], budget=BUDGET)
    )
    with pytest.raises(errors.PermissionDenied, match="'prod-db' is not granted") as denied:
        await intruder.sandbox.create(timeout=60, secrets={"DB": "prod-db"})
    assert VALUE not in str(denied.value)
    assert (await kernel.compute()).instances == {}
    sbx = await intruder.sandbox.create(timeout=60)
    with pytest.raises(errors.PermissionDenied, match="'prod-db' is not granted"):
        await intruder.sandbox.commands.run(sbx.id, "env", secrets={"DB": "prod-db"})
    with pytest.raises(errors.PermissionDenied, match="'nope' is not granted"):
        await intruder.sandbox.create(timeout=60, secrets={"X": "nope"})  # no names told
    with pytest.raises(errors.NotFound, match="no secret 'nope'"):
        await ul.sandbox.create(timeout=60, secrets={"X": "nope"})


async def test_a_command_gets_a_secret_for_itself_only(ul: AsyncUnderlay) -> None:
    await ul.vault.put(name="api", value=VALUE)
    sbx = await ul.sandbox.create(timeout=60)
    assert (await env_in(ul, sbx.id, secrets={"API_KEY": "api"}))["API_KEY"] == VALUE
    assert "API_KEY" not in await env_in(ul, sbx.id)  # the next command does not have it


async def test_revoking_stops_the_next_use_not_a_sandbox_already_given_it(
    ul: AsyncUnderlay,
) -> None:
    await ul.vault.put(name="api", value=VALUE)
    await ul.agents.create("worker", capabilities=["sandbox.*"], budget=BUDGET)
    await ul.vault.grant(name="api", agent="worker")
    uw = await ul.as_agent("worker")
    sbx = await uw.sandbox.create(timeout=60, secrets={"API_KEY": "api"})
    await ul.vault.revoke(name="api", agent="worker")
    with pytest.raises(errors.PermissionDenied):
        await uw.sandbox.create(timeout=60, secrets={"API_KEY": "api"})
    assert (await env_in(uw, sbx.id))["API_KEY"] == VALUE


async def test_a_variable_given_twice_is_refused(ul: AsyncUnderlay) -> None:
    with pytest.raises(errors.InvalidInput, match="API is given both in env and in secrets"):
        await ul.sandbox.create(timeout=60, env={"API": "x"}, secrets={"API": "api"})
    with pytest.raises(errors.InvalidInput, match="invalid secret name 'Nope!'"):
        await ul.sandbox.create(timeout=60, secrets={"API": "Nope!"})


async def test_a_sandbox_holding_secrets_is_for_those_who_may_use_them(
    ul: AsyncUnderlay,
) -> None:
    """Its environment holds the values: a human token scoped without ``vault.use``, or
    a ``compute.admin`` agent without the grant, may not run commands in it."""
    await ul.vault.put(name="api", value=VALUE)
    await ul.agents.create("owner", capabilities=["sandbox.*"], budget=BUDGET)
    await ul.vault.grant(name="api", agent="owner")
    owner = await ul.as_agent("owner")
    sbx = await owner.sandbox.create(timeout=60, secrets={"API_KEY": "api"})
    scoped = await ul.tokens.create(kind="human", scopes=["sandbox.*"])
    narrow = ul.with_token(scoped.token.get_secret_value())
    admin_agent = await ul.as_agent(
        await ul.agents.create("ops", capabilities=["sandbox.*", "compute.admin"], budget=BUDGET)
    )
    for stranger in (narrow, admin_agent):
        with pytest.raises(errors.PermissionDenied, match="'api' is not granted"):
            await stranger.sandbox.commands.run(sbx.id, "env")
    assert (await env_in(ul, sbx.id))["API_KEY"] == VALUE  # an admin holds vault.use
    plain = await owner.sandbox.create(timeout=60)  # no secrets: as before
    assert (await admin_agent.sandbox.commands.run(plain.id, "true")).exit_code == 0
