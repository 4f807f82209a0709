"""The credential vault: an organisation's named secrets, and who may use each.

Guarantees:

- A value is stored sealed twice over (envelope encryption): with a random key of its
  own, and that key with the installation's master key. The database never holds a
  value, or a value's key, in the clear.
- No syscall returns a value. A value leaves the vault only into what a caller who may
  use it asks for: a sandbox's environment (``sandbox.create`` / ``commands.run`` with
  ``secrets``). Nothing here puts a value into a log, an error or an audit event.
- Who may use a secret: a human of the organisation holding ``vault.use``, the system,
  or an agent the secret was granted to (``vault.grant``). A revoked grant, or a
  deleted secret, stops the next use; what was already handed to a sandbox stays there.
- Replacing a value (``put`` on an existing name) keeps its grants and counts up its
  ``version``; ``delete`` removes the secret and its grants.
"""

from __future__ import annotations

import base64
from typing import Any

import nacl.utils
from nacl.secret import SecretBox
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay import errors
from underlay.identity.keys import Sealer
from underlay.kernel.context import Principal
from underlay.storage import schema
from underlay.storage.engine import Database
from underlay.tools.models import PutSecret, SecretInfo

V = schema.vault_secrets
G = schema.vault_grants
USE = "vault.use"  # what a human needs to use the organisation's secrets


def seal(sealer: Sealer, value: str) -> tuple[str, str]:
    """(sealed key, sealed value): the value under a fresh key, the key under the master."""
    key = nacl.utils.random(SecretBox.KEY_SIZE)
    sealed_value = base64.b64encode(bytes(SecretBox(key).encrypt(value.encode()))).decode()
    return sealer.seal(key), sealed_value


def unseal(sealer: Sealer, sealed_key: str, sealed_value: str) -> str:
    key = sealer.open(sealed_key)
    return SecretBox(key).decrypt(base64.b64decode(sealed_value)).decode()


async def put(
    db: Database, sealer: Sealer, org_id: str, by: str, inp: PutSecret, now: float
) -> SecretInfo:
    """Store ``inp.value`` under ``inp.name``: a new secret, or a new version of one."""
    sealed_key, sealed_value = seal(sealer, inp.value.get_secret_value())
    values = {"description": inp.description, "sealed_key": sealed_key,
              "sealed_value": sealed_value, "updated_at": now}  # fmt: skip

    def write(conn: Connection) -> SecretInfo:
        where = (V.c.org_id == org_id) & (V.c.name == inp.name)
        first = insert(V).values(
            org_id=org_id, name=inp.name, version=1, created_by=by, created_at=now, **values
        )
        if not _inserted(conn, first):
            version = conn.execute(select(V.c.version).where(where).with_for_update()).scalar_one()
            conn.execute(update(V).where(where).values(version=version + 1, **values))
        row = conn.execute(select(V).where(where)).one()  # what this call wrote
        grants = select(G.c.agent_id).where(G.c.org_id == org_id, G.c.name == inp.name)
        return _info(row, list(conn.execute(grants.order_by(G.c.agent_id)).scalars()))

    return await db.run_write(write)


async def info(conn: AsyncConnection, org_id: str, name: str) -> SecretInfo:
    """One secret, without its value; ``NotFound`` naming it when there is none."""
    row = (await conn.execute(select(V).where(V.c.org_id == org_id, V.c.name == name))).first()
    if row is None:
        raise errors.NotFound(f"no secret {name!r} in the vault", field="name")
    grants = await conn.execute(
        select(G.c.agent_id).where(G.c.org_id == org_id, G.c.name == name).order_by(G.c.agent_id)
    )
    return _info(row, list(grants.scalars()))


async def listing(conn: AsyncConnection, org_id: str) -> list[SecretInfo]:
    rows = (await conn.execute(select(V).where(V.c.org_id == org_id).order_by(V.c.name))).all()
    grants: dict[str, list[str]] = {}
    for g in await conn.execute(
        select(G.c.name, G.c.agent_id).where(G.c.org_id == org_id).order_by(G.c.agent_id)
    ):
        grants.setdefault(g.name, []).append(g.agent_id)
    return [_info(r, grants.get(r.name, [])) for r in rows]


def _info(row: Any, grants: list[str]) -> SecretInfo:
    return SecretInfo(
        name=row.name, description=row.description, version=row.version,
        created_at=row.created_at, updated_at=row.updated_at, grants=grants,
    )  # fmt: skip


async def remove(db: Database, org_id: str, name: str) -> None:
    def write(conn: Connection) -> int:
        conn.execute(delete(G).where(G.c.org_id == org_id, G.c.name == name))
        return conn.execute(delete(V).where(V.c.org_id == org_id, V.c.name == name)).rowcount

    if not await db.run_write(write):
        raise errors.NotFound(f"no secret {name!r} in the vault", field="name")


async def grant(db: Database, org_id: str, name: str, agent_id: str, by: str, now: float) -> None:
    """Let ``agent_id`` use ``name`` (again granting changes nothing)."""

    def write(conn: Connection) -> None:
        exists = select(V.c.name).where(V.c.org_id == org_id, V.c.name == name)
        if conn.execute(exists).first() is None:
            raise errors.NotFound(f"no secret {name!r} in the vault", field="name")
        _inserted(conn, insert(G).values(org_id=org_id, name=name, agent_id=agent_id,
                                         granted_by=by, granted_at=now))  # fmt: skip

    await db.run_write(write)


def _inserted(conn: Connection, statement: Any) -> bool:
    """Insert a row unless its key exists (also when a concurrent writer just made it)."""
    try:
        with conn.begin_nested():
            conn.execute(statement)
    except IntegrityError:
        return False
    return True


async def revoke(db: Database, org_id: str, name: str, agent_id: str) -> None:
    def write(conn: Connection) -> int:
        key = (G.c.org_id == org_id) & (G.c.name == name) & (G.c.agent_id == agent_id)
        return conn.execute(delete(G).where(key)).rowcount

    if not await db.run_write(write):
        raise errors.NotFound(f"secret {name!r} is not granted to {agent_id}", field="agent")


async def resolve(
    db: Database, sealer: Sealer, principal: Principal, wanted: dict[str, str]
) -> dict[str, str]:
    """``{variable: value}`` for ``wanted`` (``{variable: secret name}``), if ``principal``
    may use every one of them; otherwise nothing, and an error naming the first secret
    that is missing (``NotFound``) or not granted (``PermissionDenied``)."""
    if not wanted:
        return {}
    names = sorted(set(wanted.values()))
    org = principal.org_id
    async with db.read() as conn:
        rows = {r.name: r for r in await conn.execute(
            select(V).where(V.c.org_id == org, V.c.name.in_(names))
        )}  # fmt: skip
        granted: set[str] = set()
        if principal.kind == "agent":
            granted = set((await conn.execute(select(G.c.name).where(
                G.c.org_id == org, G.c.agent_id == principal.id, G.c.name.in_(names)
            ))).scalars())  # fmt: skip
    for variable, name in wanted.items():
        if name not in rows:
            raise errors.NotFound(f"no secret {name!r} in the vault", field=f"secrets.{variable}")
        if not may_use(principal, name, granted):
            raise errors.PermissionDenied(
                f"secret {name!r} is not granted to {principal.kind} {principal.id}",
                capability=USE,
            )
    return {v: unseal(sealer, rows[n].sealed_key, rows[n].sealed_value) for v, n in wanted.items()}


def may_use(principal: Principal, name: str, granted: set[str]) -> bool:
    if principal.kind == "agent":
        return name in granted
    if principal.kind == "system":
        return True
    return principal.kind == "human" and principal.allows(USE)
