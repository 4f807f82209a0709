"""The credential vault: an organisation's named secrets, and who may use each.

Guarantees:

- A value is stored sealed twice over (envelope encryption): with a random key of its
  own, and that key with the installation's master key. The database never holds a
  value, or a value's key, in the clear.
- No syscall returns a value. A value leaves the vault only into what a caller who may
  use it asks for: a sandbox's environment (``sandbox.create`` / ``commands.run`` with
  ``secrets``). Nothing here puts a value into a log, an error or an audit event.
- Who may use a secret: a human of the organisation holding ``vault.use``, the system,
  or an agent the secret was granted to (``vault.grant``) whose token's scopes, if any,
  include ``vault.use``. A revoked grant, or a deleted secret, stops the next use; what
  was already handed to a sandbox stays there. One who may not use a secret learns
  nothing of it (``permission_denied`` before ``not_found``).
- A sealed value opens only under its own organisation and name.
- Replacing a value (``put`` on an existing name) keeps its grants and counts up its
  ``version``; ``delete`` removes the secret and its grants.
"""

from __future__ import annotations

import base64
from typing import Any

import nacl.bindings as aead
import nacl.utils
from nacl.exceptions import CryptoError
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay import errors
from underlay.identity.keys import Sealer
from underlay.kernel.context import Principal, pattern_allows
from underlay.storage import schema
from underlay.storage.engine import Database
from underlay.tools.models import PutSecret, SecretInfo

V = schema.vault_secrets
G = schema.vault_grants
USE = "vault.use"  # what a human needs to use the organisation's secrets


def seal(sealer: Sealer, org_id: str, name: str, value: str) -> tuple[str, str]:
    """(sealed key, sealed value): the value under a fresh key (XChaCha20-Poly1305, bound
    to its organisation and name, so a sealed value copied elsewhere does not open), the
    key under the master key."""
    key, nonce = nacl.utils.random(32), nacl.utils.random(24)
    box = aead.crypto_aead_xchacha20poly1305_ietf_encrypt(
        value.encode(), _bound(org_id, name), nonce, key
    )
    return sealer.seal(key), base64.b64encode(nonce + box).decode()


def unseal(sealer: Sealer, org_id: str, name: str, sealed_key: str, sealed_value: str) -> str:
    key, raw = sealer.open(sealed_key), base64.b64decode(sealed_value)
    try:
        plain = aead.crypto_aead_xchacha20poly1305_ietf_decrypt(
            raw[24:], _bound(org_id, name), raw[:24], key
        )
    except CryptoError as exc:
        raise errors.InternalError(f"secret {name!r} does not open (altered?)") from exc
    return bytes(plain).decode()


def _bound(org_id: str, name: str) -> bytes:
    return f"underlay vault\0{org_id}\0{name}".encode()


async def put(
    db: Database, sealer: Sealer, org_id: str, by: str, inp: PutSecret, now: float
) -> SecretInfo:
    """Store ``inp.value`` under ``inp.name``: a new secret, or a new version of one."""
    sealed_key, sealed_value = seal(sealer, org_id, inp.name, inp.value.get_secret_value())
    values = {"description": inp.description, "sealed_key": sealed_key,
              "sealed_value": sealed_value, "updated_at": now}  # fmt: skip

    def write(conn: Connection) -> SecretInfo:
        where = (V.c.org_id == org_id) & (V.c.name == inp.name)
        first = insert(V).values(
            org_id=org_id, name=inp.name, version=1, created_by=by, created_at=now, **values
        )
        for _ in range(3):  # a delete may commit between the insert and the update
            if _inserted(conn, first):
                # a new secret: grants left by an old one of this name do not carry over
                conn.execute(delete(G).where(G.c.org_id == org_id, G.c.name == inp.name))
                break
            locked = select(V.c.version).where(where).with_for_update()
            version = conn.execute(locked).scalar_one_or_none()
            if version is not None:
                conn.execute(update(V).where(where).values(version=version + 1, **values))
                break
        row = conn.execute(select(V).where(where)).one()  # what this call wrote
        return _info(row, list(conn.execute(_grants_of(org_id, inp.name)).scalars()))

    return await db.run_write(write)


async def info(conn: AsyncConnection, org_id: str, name: str) -> SecretInfo:
    """One secret, without its value; ``NotFound`` naming it when there is none."""
    row = (await conn.execute(select(V).where(V.c.org_id == org_id, V.c.name == name))).first()
    if row is None:
        raise errors.NotFound(f"no secret {name!r} in the vault", field="name")
    return _info(row, list((await conn.execute(_grants_of(org_id, name))).scalars()))


def _grants_of(org_id: str, name: str) -> Any:
    """The ids of the agents ``name`` is granted to, in order."""
    return select(G.c.agent_id).where(G.c.org_id == org_id, G.c.name == name).order_by(G.c.agent_id)


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
        # locked: a delete committing meanwhile must not leave this grant behind
        exists = select(V.c.name).where(V.c.org_id == org_id, V.c.name == name)
        if conn.execute(exists.with_for_update()).first() is None:
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
        granted = await _granted(conn, principal, names)
    _require(principal, list(wanted.values()), granted)  # first: strangers learn no names
    for variable, name in wanted.items():
        if name not in rows:
            raise errors.NotFound(f"no secret {name!r} in the vault", field=f"secrets.{variable}")
    return {
        v: unseal(sealer, org, n, rows[n].sealed_key, rows[n].sealed_value)
        for v, n in wanted.items()
    }


async def check(db: Database, principal: Principal, names: list[str]) -> None:
    """``PermissionDenied`` naming the first of ``names`` that ``principal`` may not use."""
    async with db.read() as conn:
        _require(principal, names, await _granted(conn, principal, names))


def _require(principal: Principal, names: list[str], granted: set[str]) -> None:
    for name in names:
        if not may_use(principal, name, granted):
            raise errors.PermissionDenied(
                f"secret {name!r} is not granted to {principal.kind} {principal.id}",
                capability=USE,
            )


async def _granted(conn: AsyncConnection, principal: Principal, names: list[str]) -> set[str]:
    """Which of ``names`` are granted to ``principal`` (an agent; nothing for others)."""
    if principal.kind != "agent":
        return set()
    found = await conn.execute(select(G.c.name).where(
        G.c.org_id == principal.org_id, G.c.agent_id == principal.id, G.c.name.in_(names)
    ))  # fmt: skip
    return set(found.scalars())


def may_use(principal: Principal, name: str, granted: set[str]) -> bool:
    """Humans by ``vault.use``; agents by a grant, unless their token's scopes leave out
    ``vault.use``; the system always."""
    if principal.kind == "agent":
        scoped_out = principal.scopes is not None and not pattern_allows(principal.scopes, USE)
        return name in granted and not scoped_out
    if principal.kind == "system":
        return True
    return principal.kind == "human" and principal.allows(USE)
