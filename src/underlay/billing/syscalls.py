"""Budget syscalls: balances, funding an agent from its org, grants between agents."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from underlay import errors
from underlay.billing.ledger import Owner
from underlay.billing.models import (
    BalanceOut,
    BalanceQuery,
    Fund,
    ListTransfers,
    Transfer,
    TransferPage,
)
from underlay.identity import service as identity
from underlay.kernel.context import SELF, CallContext
from underlay.kernel.syscall import SyscallGroup
from underlay.storage import schema
from underlay.types import Money, new_id

group = SyscallGroup("billing")


async def _owner(ctx: CallContext, agent_ref: str | None, capability: str) -> Owner:
    """The account owner a call names: the caller itself, or (with ``capability``) an agent."""
    p = ctx.principal
    if agent_ref is None:
        return p.payer
    async with ctx.db.read() as conn:
        agent = await identity.find_agent(conn, ctx.org_id, agent_ref)
    if agent.id != p.id and not p.allows(capability):
        raise errors.PermissionDenied(f"reading another agent's budget needs {capability!r}")
    return ("agent", agent.id)


async def _currency(ctx: CallContext) -> str:
    async with ctx.db.read() as conn:
        return await identity.org_currency(conn, ctx.org_id)


@group.syscall("budget.balance", capability=SELF)
async def balance(ctx: CallContext, inp: BalanceQuery) -> BalanceOut:
    """What an account has: posted, held (pending) and available, in the org's currency."""
    owner = await _owner(ctx, inp.agent, "budget.read")
    bal = await ctx.kernel.ledger.balance(ctx.org_id, owner, await _currency(ctx))
    return BalanceOut(
        owner=f"{owner[0]}:{owner[1]}",
        posted=bal.posted,
        pending=bal.pending,
        available=bal.available,
    )


async def _move(ctx: CallContext, inp: Fund, source: Owner, memo: str) -> Transfer:
    currency = await _currency(ctx)
    if inp.amount.currency != currency:
        raise errors.InvalidInput(f"this org budgets in {currency}", field="amount")
    async with ctx.db.read() as conn:
        target = await identity.find_agent(conn, ctx.org_id, inp.to)
    transfer_id = inp.transfer_id or (
        f"{memo}:{ctx.idempotency_key}" if ctx.idempotency_key else new_id("xfer")
    )
    row = await ctx.kernel.ledger.transfer(
        ctx.org_id, transfer_id, source, ("agent", target.id), inp.amount, memo=inp.memo or memo
    )
    ctx.audit.update(transfer_id=row["id"], to=target.id)
    return _transfer_model(row)


@group.syscall("budget.fund", mutating=True)
async def fund(ctx: CallContext, inp: Fund) -> Transfer:
    """Move budget from the org's account to an agent."""
    return await _move(ctx, inp, ("org", ctx.org_id), "fund")


@group.syscall("budget.grant", mutating=True)
async def grant(ctx: CallContext, inp: Fund) -> Transfer:
    """Give part of the caller's own budget to another agent of the same org."""
    return await _move(ctx, inp, ctx.principal.payer, "grant")


@group.syscall("budget.transfers", capability=SELF)
async def transfers(ctx: CallContext, inp: ListTransfers) -> TransferPage:
    """Transfers in and out of an account (the caller's by default), oldest first."""
    owner = await _owner(ctx, inp.agent, "budget.read")
    t, a = schema.transfers, schema.accounts
    async with ctx.db.read() as conn:
        account_ids = (
            (
                await conn.execute(
                    select(a.c.id).where(
                        a.c.org_id == ctx.org_id,
                        a.c.owner_kind == owner[0],
                        a.c.owner_id == owner[1],
                    )
                )
            )
            .scalars()
            .all()
        )
        q = (
            select(t)
            .where(
                t.c.org_id == ctx.org_id,
                t.c.debit_account_id.in_(account_ids) | t.c.credit_account_id.in_(account_ids),
            )
            .order_by(t.c.seq)
            .limit(inp.limit + 1)
        )
        if inp.cursor is not None:
            q = q.where(t.c.seq > inp.cursor)
        rows = (await conn.execute(q)).all()
    items = [dict(r._mapping) for r in rows[: inp.limit]]
    more = len(rows) > inp.limit
    return TransferPage(
        items=[_transfer_model(r) for r in items], next_cursor=items[-1]["seq"] if more else None
    )


def _transfer_model(row: dict[str, Any]) -> Transfer:
    return Transfer(
        id=row["id"],
        kind=row["kind"],
        debit_account_id=row["debit_account_id"],
        credit_account_id=row["credit_account_id"],
        amount=Money.from_units(row["amount"], row["currency"]),
        memo=row["memo"],
        created_at=row["created_at"],
    )
