"""Identity syscalls: orgs, agents, tokens, self-signup, signing."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy import select, update

from underlay import errors
from underlay.identity import service as svc
from underlay.identity.keys import b64, public_key_from_did, unb64, verify
from underlay.identity.models import (
    Agent,
    AgentPage,
    AgentRef,
    CreateAgent,
    CreateOrg,
    CreateToken,
    Enroll,
    Enrolled,
    EnrollmentLimits,
    IssuedToken,
    ListAgents,
    ListTokens,
    OrgCreated,
    Sign,
    Signature,
    Token,
    TokenList,
    TokenRef,
    Verified,
    Verify,
    WhoAmI,
)
from underlay.kernel.context import SELF, CallContext, Principal, covered_by
from underlay.kernel.syscall import SyscallGroup
from underlay.types import Empty, Money

group = SyscallGroup("identity")


def _check_delegable(ctx: CallContext, capabilities: list[str]) -> None:
    """A caller can hand out only capabilities it holds itself."""
    held = ctx.principal.effective_capabilities
    for cap in capabilities:
        if not covered_by(cap, held):
            raise errors.PermissionDenied(
                f"cannot grant {cap!r}: the caller does not hold it", field="capabilities"
            )


@group.syscall("orgs.create", mutating=True, operator_only=True)
async def create_org(ctx: CallContext, inp: CreateOrg) -> OrgCreated:
    """Create an org with its first admin; returns the admin's token once."""
    made = await svc.create_org(
        ctx.kernel, inp.name, admin_name=inp.admin_name, currency=inp.currency
    )
    ctx.audit["org_id"] = made.org_id
    return OrgCreated(
        org_id=made.org_id, admin_id=made.admin_id, admin_token=SecretStr(made.admin_token)
    )


@group.syscall("self.whoami", capability=SELF)
async def whoami(ctx: CallContext, inp: Empty) -> WhoAmI:
    """Who the caller is: kind, id, org, capabilities, token scopes, DID."""
    p = ctx.principal
    did = None
    if p.kind == "agent":
        async with ctx.db.read() as conn:
            did = (await svc.find_agent(conn, p.org_id, p.id)).did
    return WhoAmI(
        kind=p.kind,
        id=p.id,
        org_id=p.org_id,
        capabilities=list(p.capabilities),
        scopes=list(p.scopes) if p.scopes is not None else None,
        did=did,
        is_operator=p.is_operator,
    )


async def _fund_new_agent(ctx: CallContext, agent_id: str, budget: Money, payer: Principal) -> None:
    name = "budget.fund" if payer.kind in ("human", "system") else "budget.grant"
    key = f"{ctx.idempotency_key}:budget" if ctx.idempotency_key else None
    try:
        await ctx.invoke(
            name, {"to": agent_id, "amount": str(budget)}, principal=payer, idempotency_key=key
        )
    except errors.UnderlayError:
        await svc.delete_agent(ctx.kernel, ctx.org_id, agent_id)  # compensate: no half agent
        raise


@group.syscall("agents.create", mutating=True)
async def create_agent(ctx: CallContext, inp: CreateAgent) -> Agent:
    """Create an agent with an Ed25519 identity, capabilities and an optional budget."""
    _check_delegable(ctx, inp.capabilities)
    async with ctx.db.write() as conn:
        row = await svc.insert_agent(
            conn,
            ctx.kernel,
            ctx.org_id,
            name=inp.name,
            capabilities=inp.capabilities,
            created_by=ctx.principal.id,
            metadata=inp.metadata,
        )
    if inp.budget:
        await _fund_new_agent(ctx, row["id"], inp.budget, ctx.principal)
    ctx.audit["agent_id"] = row["id"]
    return svc.agent_model(row)


@group.syscall("agents.get", capability="agents.read")
async def get_agent(ctx: CallContext, inp: AgentRef) -> Agent:
    """One agent of the caller's org, by id or name."""
    async with ctx.db.read() as conn:
        return svc.agent_model(await svc.find_agent(conn, ctx.org_id, inp.agent))


@group.syscall("agents.list", capability="agents.read")
async def list_agents(ctx: CallContext, inp: ListAgents) -> AgentPage:
    """The agents of the caller's org, oldest first, a page at a time."""
    a = svc.A
    q = select(a).where(a.c.org_id == ctx.org_id).order_by(a.c.id).limit(inp.limit + 1)
    if inp.cursor:
        q = q.where(a.c.id > inp.cursor)
    if inp.status:
        q = q.where(a.c.status == inp.status)
    async with ctx.db.read() as conn:
        rows = (await conn.execute(q)).all()
    items = [svc.agent_model(r) for r in rows[: inp.limit]]
    more = len(rows) > inp.limit
    return AgentPage(items=items, next_cursor=items[-1].id if more else None)


@group.syscall("agents.disable", mutating=True)
async def disable_agent(ctx: CallContext, inp: AgentRef) -> Agent:
    """Disable an agent: its tokens stop working at once; its records are kept."""
    async with ctx.db.write() as conn:
        row = await svc.find_agent(conn, ctx.org_id, inp.agent)
        await conn.execute(update(svc.A).where(svc.A.c.id == row.id).values(status="disabled"))
        row = await svc.find_agent(conn, ctx.org_id, row.id)
    ctx.kernel.authn.forget(subject_id=row.id)
    ctx.audit["agent_id"] = row.id
    return svc.agent_model(row)


@group.syscall("agents.enroll", mutating=True)
async def enroll(ctx: CallContext, inp: Enroll) -> Enrolled:
    """Self-signup: an agent holding an enrollment token registers itself within its limits."""
    p = ctx.principal
    if p.kind != "enrollment":
        raise errors.PermissionDenied("agents.enroll needs an enrollment token")
    async with ctx.db.write() as conn:
        tok = await svc.find_token(conn, ctx.org_id, p.token_id or "")
        limits = tok.limits or {}
        allowed = tuple(limits.get("capabilities") or ())
        for cap in inp.capabilities:
            if not covered_by(cap, allowed):
                raise errors.PermissionDenied(
                    f"capability {cap!r} is outside this enrollment token's limits",
                    field="capabilities",
                )
        cap_budget = limits.get("budget_per_agent")
        if inp.budget and (cap_budget is None or Money.parse(cap_budget) < inp.budget):
            raise errors.LimitExceeded(
                f"budget {inp.budget} is above this enrollment token's {cap_budget or 'zero'}",
                field="budget",
            )
        await svc.count_enrollment_use(conn, tok.id, int(limits.get("max_agents", 1)))
        row = await svc.insert_agent(
            conn,
            ctx.kernel,
            ctx.org_id,
            name=inp.name,
            capabilities=inp.capabilities,
            created_by=tok.id,
            metadata=inp.metadata,
        )
        token, _ = await svc.insert_token(
            conn, ctx.kernel, ctx.org_id, "agent", row["id"], name="enrolled"
        )
    if inp.budget:
        await _fund_new_agent(ctx, row["id"], inp.budget, Principal.system(ctx.org_id))
    ctx.audit["agent_id"] = row["id"]
    return Enrolled(agent=svc.agent_model(row), token=SecretStr(token))


@group.syscall("tokens.create", mutating=True)
async def create_token(ctx: CallContext, inp: CreateToken) -> IssuedToken:
    """Mint a scoped, expiring token for an agent, a human, or agent enrollment."""
    p = ctx.principal
    subject_id: str | None = None
    limits = None
    if inp.kind == "agent":
        async with ctx.db.read() as conn:
            agent = await svc.find_agent(conn, ctx.org_id, inp.subject or p.id)
        if p.kind == "agent" and agent.id != p.id:
            raise errors.PermissionDenied(
                "an agent may mint tokens only for itself", field="subject"
            )
        subject_id = agent.id
    elif p.kind not in ("human", "system"):
        raise errors.PermissionDenied(f"only humans may mint {inp.kind} tokens", field="kind")
    elif inp.kind == "human":
        subject_id = p.id if p.kind == "human" else None
        if subject_id is None:
            raise errors.InvalidInput("a human token is minted by that human", field="kind")
    else:
        limits = (inp.limits or EnrollmentLimits()).model_dump(mode="json")
        _check_delegable(ctx, limits["capabilities"])
    if inp.scopes is not None and p.kind == "agent":
        _check_delegable(ctx, inp.scopes)
    async with ctx.db.write() as conn:
        token, info = await svc.insert_token(
            conn,
            ctx.kernel,
            ctx.org_id,
            inp.kind,
            subject_id,
            name=inp.name,
            scopes=inp.scopes,
            ttl_seconds=inp.ttl_seconds,
            limits=limits,
        )
    ctx.audit["token_id"] = info.id
    return IssuedToken(token=SecretStr(token), info=info)


@group.syscall("tokens.list", capability="tokens.read")
async def list_tokens(ctx: CallContext, inp: ListTokens) -> TokenList:
    """Tokens of the caller's org (hashes are never shown), optionally for one subject."""
    t = svc.T
    q = select(t).where(t.c.org_id == ctx.org_id).order_by(t.c.id)
    if ctx.principal.kind == "agent":
        q = q.where(t.c.subject_id == ctx.principal.id)
    if inp.subject:
        async with ctx.db.read() as conn:
            agent = await svc.find_agent(conn, ctx.org_id, inp.subject)
        q = q.where(t.c.subject_id == agent.id)
    if not inp.include_revoked:
        q = q.where(t.c.revoked_at.is_(None))
    async with ctx.db.read() as conn:
        return TokenList(items=[svc.token_model(r) for r in (await conn.execute(q)).all()])


@group.syscall("tokens.revoke", mutating=True)
async def revoke_token(ctx: CallContext, inp: TokenRef) -> Token:
    """Revoke a token; calls with it fail from now on."""
    async with ctx.db.write() as conn:
        row = await svc.find_token(conn, ctx.org_id, inp.token_id)
        if ctx.principal.kind == "agent" and row.subject_id != ctx.principal.id:
            raise errors.NotFound(f"no token {inp.token_id!r} in this org", field="token_id")
        if row.revoked_at is None:
            await conn.execute(
                update(svc.T).where(svc.T.c.id == row.id).values(revoked_at=ctx.now())
            )
        row = await svc.find_token(conn, ctx.org_id, inp.token_id)
    ctx.kernel.authn.forget(token_id=row.id)
    ctx.audit["token_id"] = row.id
    return svc.token_model(row)


@group.syscall("keys.sign", capability=SELF)
async def sign(ctx: CallContext, inp: Sign) -> Signature:
    """Sign a message with the calling agent's Ed25519 key (the key never leaves)."""
    if ctx.principal.kind != "agent":
        raise errors.PermissionDenied("only agents hold signing keys")
    async with ctx.db.read() as conn:
        agent = await svc.find_agent(conn, ctx.org_id, ctx.principal.id)
        sealed = (
            await conn.execute(select(svc.A.c.private_key_sealed).where(svc.A.c.id == agent.id))
        ).scalar_one()
    message = _message_bytes(inp.message, inp.encoding)
    signature = ctx.kernel.sealer.keypair(sealed).sign(message)
    return Signature(did=agent.did, signature=b64(signature))


@group.syscall("keys.verify", capability=SELF)
async def verify_signature(ctx: CallContext, inp: Verify) -> Verified:
    """Verify an Ed25519 signature against a did:key (any agent's, any org's)."""
    public_key = public_key_from_did(inp.did)
    message = _message_bytes(inp.message, inp.encoding)
    return Verified(valid=verify(public_key, message, unb64(inp.signature, "signature")))


def _message_bytes(message: str, encoding: str) -> bytes:
    return unb64(message, "message") if encoding == "base64" else message.encode()
