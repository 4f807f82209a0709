"""The credential vault: sealed storage, names and grants, never a value out."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import pytest
from sqlalchemy import select

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.storage import schema
from underlay.tools import vault

VALUE = "ghp_s3cr3t-value-0123456789"


async def every_text(kernel: Kernel) -> str:
    """Every row of every table, as one string: where a leaked value would show."""
    out = []
    async with kernel.db.read() as conn:
        for table in schema.metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                out.append(json.dumps(dict(row._mapping), default=str))
    return "\n".join(out)


async def test_a_value_is_stored_sealed_twice_and_never_shown(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    made = await ul.vault.put(name="github", value=VALUE, description="CI bot")
    assert (made.name, made.version, made.description, made.grants) == (
        "github", 1, "CI bot", []
    )  # fmt: skip
    assert VALUE not in made.model_dump_json()
    [listed] = (await ul.vault.list()).items
    assert listed == made and VALUE not in (await ul.vault.list()).model_dump_json()
    assert VALUE not in await every_text(kernel)  # not in the vault, not in the audit trail
    async with kernel.db.read() as conn:
        row = (await conn.execute(select(schema.vault_secrets))).one()
    key = kernel.sealer.open(row.sealed_key)  # the value's own key, under the master key
    assert (
        len(key) == 32
        and vault.unseal(kernel.sealer, row.org_id, "github", row.sealed_key, row.sealed_value)
        == VALUE
    )
    assert not any(s.name.startswith("vault.get") for s in kernel.table)


async def test_replacing_a_value_counts_up_and_keeps_the_grants(ul: AsyncUnderlay) -> None:
    agent = await ul.agents.create("builder", capabilities=["sandbox.*"])
    await ul.vault.put(name="api", value="one")
    granted = await ul.vault.grant(name="api", agent="builder")
    assert granted.grants == [agent.id]
    again = await ul.vault.put(name="api", value="two", description="rotated")
    assert (again.version, again.grants, again.description) == (2, [agent.id], "rotated")
    revoked = await ul.vault.revoke(name="api", agent=agent.id)
    assert revoked.grants == []
    with pytest.raises(errors.NotFound, match="not granted"):
        await ul.vault.revoke(name="api", agent="builder")


async def test_delete_removes_the_secret_and_its_grants(ul: AsyncUnderlay, kernel: Kernel) -> None:
    await ul.agents.create("builder", capabilities=["sandbox.*"])
    await ul.vault.put(name="gone", value="x")
    await ul.vault.grant(name="gone", agent="builder")
    await ul.vault.delete(name="gone")
    assert (await ul.vault.list()).items == []
    async with kernel.db.read() as conn:
        assert (await conn.execute(select(schema.vault_grants))).all() == []
    with pytest.raises(errors.NotFound, match="no secret 'gone'"):
        await ul.vault.delete(name="gone")
    with pytest.raises(errors.NotFound, match="no secret 'gone'"):
        await ul.vault.grant(name="gone", agent="builder")


async def test_bad_input_is_named_and_the_value_never_echoed(ul: AsyncUnderlay) -> None:
    with pytest.raises(errors.InvalidInput, match="'Bad Name' is not a secret name") as bad:
        await ul.vault.put(name="Bad Name", value=VALUE)
    assert VALUE not in str(bad.value)
    with pytest.raises(errors.InvalidInput, match="must not be empty"):
        await ul.vault.put(name="empty", value="")
    with pytest.raises(errors.InvalidInput, match="at most 65536 bytes") as big:
        await ul.vault.put(name="big", value="x" * 70_000)
    assert "xxxx" not in str(big.value)
    await ul.vault.put(name="real", value="v")
    with pytest.raises(errors.NotFound, match="no agent 'nobody'"):
        await ul.vault.grant(name="real", agent="nobody")


async def test_only_holders_of_vault_write_manage_and_of_vault_read_list(
    ul: AsyncUnderlay,
) -> None:
    reader = await ul.as_agent(await ul.agents.create("reader", capabilities=["vault.read"]))
    await ul.vault.put(name="api", value=VALUE)
    assert [s.name for s in (await reader.vault.list()).items] == ["api"]
    with pytest.raises(errors.PermissionDenied, match=r"vault\.write"):
        await reader.vault.put(name="api", value="mine now")
    with pytest.raises(errors.PermissionDenied, match=r"vault\.write"):
        await reader.vault.grant(name="api", agent="reader")


async def test_who_may_use_a_secret(ul: AsyncUnderlay, kernel: Kernel) -> None:
    await ul.vault.put(name="api", value=VALUE)
    agent = await ul.agents.create("user", capabilities=["sandbox.*"])
    admin = await kernel.authn.authenticate(kernel.admin_token())
    assert await vault.resolve(kernel.db, kernel.sealer, admin, {"API": "api"}) == {"API": VALUE}
    issued = await ul.tokens.create(kind="agent", subject=agent.id)
    who = await kernel.authn.authenticate(issued.token.get_secret_value())
    with pytest.raises(errors.PermissionDenied, match=f"'api' is not granted to agent {agent.id}"):
        await vault.resolve(kernel.db, kernel.sealer, who, {"API": "api"})
    await ul.vault.grant(name="api", agent="user")
    assert await vault.resolve(kernel.db, kernel.sealer, who, {"API": "api"}) == {"API": VALUE}
    with pytest.raises(errors.PermissionDenied, match="'nope' is not granted"):
        await vault.resolve(kernel.db, kernel.sealer, who, {"API": "api", "X": "nope"})
    with pytest.raises(errors.NotFound, match="no secret 'nope'") as missing:
        await vault.resolve(kernel.db, kernel.sealer, admin, {"API": "api", "X": "nope"})
    assert missing.value.field == "secrets.X"


async def test_concurrent_puts_of_a_new_name_all_land_as_versions(ul: AsyncUnderlay) -> None:
    await ul.agents.create("builder", capabilities=["sandbox.*"])
    made = await asyncio.gather(*(ul.vault.put(name="race", value=f"v{i}") for i in range(6)))
    assert sorted(m.version for m in made) == [1, 2, 3, 4, 5, 6]
    granted = await asyncio.gather(
        *(ul.vault.grant(name="race", agent="builder") for _ in range(4))
    )
    assert all(len(g.grants) == 1 for g in granted)


async def test_a_sealed_value_opens_only_under_its_own_name(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    """Copying another secret's sealed blobs (a database-level attacker) does not work."""
    await ul.vault.put(name="theirs", value=VALUE)
    await ul.vault.put(name="mine", value="harmless")
    async with kernel.db.read() as conn:
        theirs = (
            await conn.execute(
                select(schema.vault_secrets).where(schema.vault_secrets.c.name == "theirs")
            )
        ).one()
    with pytest.raises(errors.InternalError, match="'mine' does not open"):
        vault.unseal(kernel.sealer, theirs.org_id, "mine", theirs.sealed_key, theirs.sealed_value)


async def test_a_scoped_agent_token_needs_vault_use_and_strangers_learn_no_names(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    await ul.vault.put(name="api", value=VALUE)
    agent = await ul.agents.create("scoped", capabilities=["sandbox.*"])
    await ul.vault.grant(name="api", agent="scoped")

    async def principal(scopes: list[str] | None) -> Any:
        issued = await ul.tokens.create(kind="agent", subject=agent.id, scopes=scopes)
        return await kernel.authn.authenticate(issued.token.get_secret_value())

    narrow = await principal(["sandbox.*"])
    with pytest.raises(errors.PermissionDenied, match="'api' is not granted"):
        await vault.resolve(kernel.db, kernel.sealer, narrow, {"API": "api"})
    wide = await principal(["sandbox.*", "vault.use"])
    assert await vault.resolve(kernel.db, kernel.sealer, wide, {"API": "api"}) == {"API": VALUE}
    with pytest.raises(errors.PermissionDenied, match="'no-such' is not granted"):
        await vault.resolve(kernel.db, kernel.sealer, wide, {"X": "no-such"})


async def test_an_idempotent_put_stores_no_guessable_hash_of_the_value(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    """The idempotency store hashes requests with a key derived from the master key: a
    database reader cannot test guesses of a secret against it."""
    await ul.vault.put(name="pin", value="1234", idempotency_key="put-pin")
    async with kernel.db.read() as conn:
        stored = (await conn.execute(select(schema.idempotency.c.request_hash))).scalar_one()
    wire = {"name": "pin", "value": "1234", "description": ""}
    text = json.dumps(["vault.put", wire], sort_keys=True, separators=(",", ":"))
    assert stored != hashlib.sha256(text.encode()).hexdigest()
    assert stored == hmac.new(kernel.request_key, text.encode(), hashlib.sha256).hexdigest()
    again = await ul.vault.put(name="pin", value="1234", idempotency_key="put-pin")
    assert again.version == 1  # replayed, not stored twice
