"""Identity records: orgs, humans, agents and tokens, always filtered by org.

Every lookup takes the caller's ``org_id``: an id from another org is ``NotFound``,
never a leak. Functions that write take an open write transaction (``conn``) so a
handler can compose them atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay import errors
from underlay.identity.authn import mint_token
from underlay.identity.keys import KeyPair, b64
from underlay.identity.models import Agent, Token
from underlay.kernel.context import Principal
from underlay.storage import schema
from underlay.types import new_id

if TYPE_CHECKING:
    from underlay.kernel.kernel import Kernel

A, T, H = schema.agents, schema.tokens, schema.humans


@dataclass(frozen=True)
class NewOrg:
    org_id: str
    admin_id: str
    admin_token: str


async def create_org(
    k: Kernel, name: str, *, admin_name: str, operator: bool = False, currency: str = "USD"
) -> NewOrg:
    """An org with one admin human, its admin token, and its org and usage accounts."""
    now = k.clock.now()
    org_id, admin_id = new_id("org"), new_id("hum")
    try:
        async with k.db.write() as conn:
            await conn.execute(
                schema.orgs.insert().values(id=org_id, name=name, currency=currency, created_at=now)
            )
            await conn.execute(
                H.insert().values(
                    id=admin_id,
                    org_id=org_id,
                    name=admin_name,
                    is_operator=operator,
                    created_at=now,
                )
            )
            token, _ = await insert_token(conn, k, org_id, "human", admin_id, name="admin")
            await k.ledger.open_account(
                conn, org_id, ("org", org_id), currency, allow_negative=True
            )
            await k.ledger.open_account(
                conn, org_id, ("usage", org_id), currency, allow_negative=True
            )
    except IntegrityError:
        raise errors.Conflict(f"an org named {name!r} exists", field="name") from None
    return NewOrg(org_id=org_id, admin_id=admin_id, admin_token=token)


async def org_currency(conn: AsyncConnection, org_id: str) -> str:
    cur = (
        await conn.execute(select(schema.orgs.c.currency).where(schema.orgs.c.id == org_id))
    ).scalar()
    if cur is None:
        raise errors.NotFound(f"no org {org_id}")
    return str(cur)


async def first_operator(k: Kernel, org_id: str) -> str:
    async with k.db.read() as conn:
        q = select(H.c.id).where(H.c.org_id == org_id).order_by(H.c.is_operator.desc(), H.c.id)
        found = (await conn.execute(q)).scalar()
    if found is None:
        raise errors.NotFound(f"org {org_id} has no admin")
    return str(found)


async def mint_human_token(k: Kernel, org_id: str, human_id: str, *, name: str) -> str:
    async with k.db.write() as conn:
        token, _ = await insert_token(conn, k, org_id, "human", human_id, name=name)
    return token


async def insert_token(
    conn: AsyncConnection,
    k: Kernel,
    org_id: str,
    kind: str,
    subject_id: str | None,
    *,
    name: str,
    scopes: list[str] | None = None,
    ttl_seconds: int | None = None,
    limits: dict[str, Any] | None = None,
) -> tuple[str, Token]:
    """Mint a token; only its hash is stored. Returns (the token, its record)."""
    token, digest = mint_token()
    now = k.clock.now()
    row = dict(
        id=new_id("tok"),
        org_id=org_id,
        kind=kind,
        subject_id=subject_id,
        name=name,
        token_hash=digest,
        scopes=scopes,
        limits=limits or {},
        uses=0,
        expires_at=now + ttl_seconds if ttl_seconds else None,
        revoked_at=None,
        created_at=now,
    )
    await conn.execute(T.insert().values(**row))
    return token, token_model(row)


def token_model(row: Any) -> Token:
    m = row if isinstance(row, dict) else dict(row._mapping)
    return Token(
        id=m["id"],
        kind=m["kind"],
        subject_id=m["subject_id"],
        name=m["name"],
        scopes=m["scopes"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        created_at=m["created_at"],
        uses=m["uses"],
        limits=m["limits"] or {},
    )


def agent_model(row: Any) -> Agent:
    m = dict(row._mapping) if not isinstance(row, dict) else row
    return Agent(
        id=m["id"],
        org_id=m["org_id"],
        name=m["name"],
        did=m["did"],
        public_key=m["public_key"],
        capabilities=list(m["capabilities"]),
        status=m["status"],
        created_by=m["created_by"],
        metadata=dict(m["metadata"] or {}),
        created_at=m["created_at"],
    )


async def insert_agent(
    conn: AsyncConnection,
    k: Kernel,
    org_id: str,
    *,
    name: str,
    capabilities: list[str],
    created_by: str,
    metadata: dict[str, str],
) -> dict[str, Any]:
    """A new active agent with a fresh Ed25519 key pair and an (empty) budget account."""
    keys = KeyPair.generate()
    agent_id = new_id("agt")
    row: dict[str, Any] = dict(
        id=agent_id,
        org_id=org_id,
        name=name,
        capabilities=capabilities,
        public_key=b64(keys.public_key),
        did=keys.did,
        private_key_sealed=k.sealer.seal(keys.seed()),
        status="active",
        created_by=created_by,
        metadata=metadata,
        created_at=k.clock.now(),
    )
    try:
        async with conn.begin_nested():
            await conn.execute(A.insert().values(**row))
    except IntegrityError:
        raise errors.Conflict(f"an agent named {name!r} exists in this org", field="name") from None
    currency = await org_currency(conn, org_id)
    await k.ledger.open_account(conn, org_id, ("agent", agent_id), currency, allow_negative=False)
    return row


async def delete_agent(k: Kernel, org_id: str, agent_id: str) -> None:
    """Compensation for a half-made agent (no transfers may reference it yet)."""
    async with k.db.write() as conn:
        await conn.execute(
            schema.accounts.delete().where(
                schema.accounts.c.org_id == org_id, schema.accounts.c.owner_id == agent_id
            )
        )
        await conn.execute(A.delete().where(A.c.org_id == org_id, A.c.id == agent_id))


async def find_agent(conn: AsyncConnection, org_id: str, ref: str) -> Any:
    """The agent with id or name ``ref`` in ``org_id``, or ``NotFound``."""
    q = select(A).where(A.c.org_id == org_id, (A.c.id == ref) | (A.c.name == ref))
    row = (await conn.execute(q)).first()
    if row is None:
        raise errors.NotFound(f"no agent {ref!r} in this org", field="agent")
    return row


async def acting_agent(
    conn: AsyncConnection, org_id: str, agent_id: str, *, task_id: str | None = None,
    attempt: int | None = None,
) -> Principal | None:  # fmt: skip
    """The principal that acts as agent ``agent_id`` of ``org_id`` — its capabilities,
    the spend attributed to ``task_id``/``attempt`` — or None unless it is active."""
    q = select(A).where(A.c.org_id == org_id, A.c.id == agent_id)
    row = (await conn.execute(q)).first()
    if row is None or row.status != "active":
        return None
    return Principal(
        kind="agent", id=row.id, org_id=row.org_id, capabilities=tuple(row.capabilities),
        task_id=task_id, attempt=attempt,
    )  # fmt: skip


async def find_token(conn: AsyncConnection, org_id: str, token_id: str) -> Any:
    row = (await conn.execute(select(T).where(T.c.org_id == org_id, T.c.id == token_id))).first()
    if row is None:
        raise errors.NotFound(f"no token {token_id!r} in this org", field="token_id")
    return row


async def count_enrollment_use(conn: AsyncConnection, token_id: str, max_agents: int) -> None:
    """Take one of the enrollment token's ``max_agents`` places, atomically."""
    res = await conn.execute(
        update(T).where(T.c.id == token_id, T.c.uses < max_agents).values(uses=T.c.uses + 1)
    )
    if res.rowcount != 1:
        raise errors.LimitExceeded(
            f"enrollment token has registered its maximum of {max_agents} agents"
        )
