"""A double-entry ledger with TigerBeetle-style two-phase transfers.

Guarantees:

* Transfers are immutable rows with client-chosen ids, unique per org. Repeating a
  transfer with the same id and the same fields returns the first one; with other fields
  it is a ``Conflict``.
* Every transfer debits one account and credits another by the same amount, in one
  currency; account totals change in the same transaction as the transfer row.
* An account without ``allow_negative`` never has ``debits_posted + debits_pending``
  above ``credits_posted``: the check and the debit are one conditional ``UPDATE``, so
  concurrent holds cannot overspend (SQLite's write lock, PostgreSQL's row lock).
* A pending transfer (a hold) is resolved exactly once: posted (fully or partly),
  voided, or voided on expiry. A second resolution is a ``Conflict``.
* A transfer may name the task attempt it was made for (``task_id``, ``attempt``); the
  post or void of a hold carries its hold's. Attribution never changes what moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay import errors
from underlay.storage import schema
from underlay.storage.engine import Database
from underlay.types import Money, new_id

A = schema.accounts
T = schema.transfers
Owner = tuple[str, str]  # (owner_kind, owner_id)


@dataclass(frozen=True)
class Balance:
    posted: Money  # credits_posted - debits_posted
    pending: Money  # debits held, not yet posted
    available: Money  # posted - pending


class Ledger:
    def __init__(self, db: Database, now: Any) -> None:
        self.db = db
        self.now = now

    async def open_account(
        self,
        conn: AsyncConnection,
        org_id: str,
        owner: Owner,
        currency: str,
        *,
        allow_negative: bool,
    ) -> str:
        """Create the account of ``owner`` in ``currency`` if absent; return its id."""
        found = await self._account_id(conn, org_id, owner, currency)
        if found:
            return found
        account_id = new_id("acct")
        await conn.execute(
            A.insert().values(
                id=account_id,
                org_id=org_id,
                owner_kind=owner[0],
                owner_id=owner[1],
                currency=currency,
                allow_negative=allow_negative,
                debits_pending=0,
                debits_posted=0,
                credits_pending=0,
                credits_posted=0,
                created_at=self.now(),
            )
        )
        return account_id

    async def _account_id(
        self, conn: AsyncConnection, org_id: str, owner: Owner, currency: str
    ) -> str | None:
        return await conn.run_sync(_account_of, org_id, owner, currency)

    async def balance(self, org_id: str, owner: Owner, currency: str) -> Balance:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(A).where(
                        A.c.org_id == org_id,
                        A.c.owner_kind == owner[0],
                        A.c.owner_id == owner[1],
                        A.c.currency == currency,
                    )
                )
            ).first()
        if row is None:
            raise errors.NotFound(f"no {currency} account for {owner[0]} {owner[1]}")
        posted = row.credits_posted - row.debits_posted
        return Balance(
            posted=Money.from_units(posted, currency),
            pending=Money.from_units(row.debits_pending, currency),
            available=Money.from_units(posted - row.debits_pending, currency),
        )

    async def transfer(
        self,
        org_id: str,
        transfer_id: str,
        debit: Owner,
        credit: Owner,
        amount: Money,
        *,
        pending_ttl: float | None = None,
        memo: str = "",
        also: Callable[[Connection], Any] | None = None,
        task_id: str | None = None,
        attempt: int | None = None,
    ) -> dict[str, Any]:
        """A posted transfer, or a pending one (a hold) when ``pending_ttl`` is given.

        ``also(connection)`` runs in the same transaction when the transfer is new, so a
        caller's own bookkeeping of the transfer commits with it or not at all.
        ``task_id`` and ``attempt`` record the task attempt the transfer was made for."""
        if amount.amount <= 0:
            raise errors.InvalidInput("a transfer amount must be positive", field="amount")
        task = {"task_id": task_id, "attempt": attempt}
        args = (org_id, transfer_id, debit, credit, amount, pending_ttl, memo, also, task)
        try:
            return await self._transfer(*args)
        except IntegrityError:  # a concurrent twin with this id committed first: replay it
            return await self._transfer(*args)

    async def _transfer(
        self,
        org_id: str,
        transfer_id: str,
        debit: Owner,
        credit: Owner,
        amount: Money,
        pending_ttl: float | None,
        memo: str,
        also: Callable[[Connection], Any] | None,
        task: dict[str, Any],
    ) -> dict[str, Any]:
        now = self.now()

        def work(conn: Connection) -> dict[str, Any]:
            row, created = _transfer_in(
                conn, org_id, transfer_id, debit, credit, amount, pending_ttl, memo, now, task
            )
            if also is not None and created:
                also(conn)
            return row

        return await self.db.run_write(work)

    async def resolve(
        self,
        org_id: str,
        pending_id: str,
        *,
        post: Money | None = None,
        void: bool = False,
        memo: str = "",
    ) -> dict[str, Any]:
        """Post (all, or ``post`` of it) or void a pending transfer, exactly once."""
        now = self.now()
        return await self.db.run_write(
            lambda conn: _resolve_in(conn, org_id, pending_id, post, void, memo, now)
        )

    async def expire_holds(self) -> int:
        """Void every pending transfer past its expiry; return how many."""
        r = T.alias("r")
        q = (
            select(T.c.org_id, T.c.id)
            .outerjoin(r, r.c.pending_seq == T.c.seq)
            .where(T.c.kind == "pending", T.c.expires_at < self.now(), r.c.seq.is_(None))
        )
        async with self.db.read() as conn:
            due = (await conn.execute(q)).all()
        count = 0
        for org_id, transfer_id in due:
            try:
                await self.resolve(org_id, transfer_id, void=True, memo="expired")
                count += 1
            except errors.Conflict:
                pass  # resolved meanwhile
        return count


def _seq(inserted: Any) -> int:
    """The ``seq`` the database gave a new transfer row."""
    return int(inserted.inserted_primary_key[0])


def _add(conn: Connection, account_id: str, column: str, units: int) -> None:
    if units:
        conn.execute(A.update().where(A.c.id == account_id).values({column: A.c[column] + units}))


def _same_or_conflict(existing: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    keys = ("kind", "debit_account_id", "credit_account_id", "amount", "currency")
    if any(existing[k] != row[k] for k in keys):
        raise errors.Conflict(f"transfer id {row['id']!r} exists with other fields", field="id")
    return existing


# -- transaction bodies (synchronous: run by ``Database.run_write`` in one hop) ---------


def _find(conn: Connection, org_id: str, transfer_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(T).where(and_(T.c.org_id == org_id, T.c.id == transfer_id))).first()
    return dict(row._mapping) if row else None


def _account_of(conn: Connection, org_id: str, owner: Owner, currency: str) -> str | None:
    q = select(A.c.id).where(
        A.c.org_id == org_id,
        A.c.owner_kind == owner[0],
        A.c.owner_id == owner[1],
        A.c.currency == currency,
    )
    found = conn.execute(q).scalar()
    return str(found) if found else None


def _require_account(conn: Connection, org_id: str, owner: Owner, currency: str) -> str:
    found = _account_of(conn, org_id, owner, currency)
    if not found:
        raise errors.NotFound(f"no {currency} account for {owner[0]} {owner[1]}")
    return found


def _debit(
    conn: Connection, account_id: str, column: str, units: int, owner: Owner, amount: Money
) -> None:
    """Debit ``units`` unless that takes a no-overdraft account below zero: one
    conditional UPDATE, so concurrent debits cannot both pass the check."""
    res = conn.execute(
        A.update()
        .where(
            A.c.id == account_id,
            (A.c.allow_negative == True)  # noqa: E712  (SQL expression, not Python)
            | (A.c.credits_posted - A.c.debits_posted - A.c.debits_pending >= units),
        )
        .values({column: A.c[column] + units})
    )
    if res.rowcount != 1:
        raise errors.BudgetExceeded(
            f"{owner[0]} {owner[1]} has less than {amount} available", needed=str(amount)
        )


def _transfer_in(
    conn: Connection,
    org_id: str,
    transfer_id: str,
    debit: Owner,
    credit: Owner,
    amount: Money,
    pending_ttl: float | None,
    memo: str,
    now: float,
    task: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """The transfer, and whether it was created now (False: an identical replay)."""
    kind = "pending" if pending_ttl is not None else "single"
    units = amount.to_units()
    existing = _find(conn, org_id, transfer_id)
    debit_id = _require_account(conn, org_id, debit, amount.currency)
    credit_id = _require_account(conn, org_id, credit, amount.currency)
    row = dict(
        id=transfer_id,
        org_id=org_id,
        kind=kind,
        debit_account_id=debit_id,
        credit_account_id=credit_id,
        amount=units,
        currency=amount.currency,
        pending_seq=None,
        memo=memo[:500],
        created_at=now,
        expires_at=now + pending_ttl if pending_ttl is not None else None,
        **task,
    )
    if existing is not None:
        return _same_or_conflict(existing, row), False
    if debit_id == credit_id:
        raise errors.InvalidInput("debit and credit accounts are the same", field="to")
    pending_col, posted_col = (
        ("debits_pending", "credits_pending")
        if kind == "pending"
        else ("debits_posted", "credits_posted")
    )
    _debit(conn, debit_id, pending_col, units, debit, amount)
    _add(conn, credit_id, posted_col, units)
    row["seq"] = _seq(conn.execute(T.insert().values(**row)))
    return row, True


def _resolve_in(
    conn: Connection,
    org_id: str,
    pending_id: str,
    post: Money | None,
    void: bool,
    memo: str,
    now: float,
) -> dict[str, Any]:
    pending = _find(conn, org_id, pending_id)
    if pending is None or pending["kind"] != "pending":
        raise errors.NotFound(f"no pending transfer {pending_id!r}", field="pending_id")
    units = pending["amount"] if post is None else post.to_units()
    if void:
        units = 0
    elif post is not None and post.currency != pending["currency"]:
        raise errors.InvalidInput("currency differs from the hold", field="amount")
    if not 0 <= units <= pending["amount"]:
        raise errors.InvalidInput("cannot post more than was held", field="amount")
    row = dict(
        id=f"{pending_id}:{'void' if void else 'post'}",
        org_id=org_id,
        kind="void" if void else "post",
        debit_account_id=pending["debit_account_id"],
        credit_account_id=pending["credit_account_id"],
        amount=units,
        currency=pending["currency"],
        pending_seq=pending["seq"],
        expires_at=None,
        memo=memo[:500],
        created_at=now,
        task_id=pending["task_id"],  # the hold's attribution
        attempt=pending["attempt"],
    )
    try:
        inserted = conn.execute(T.insert().values(**row))
    except IntegrityError:
        raise errors.Conflict(f"transfer {pending_id!r} is already resolved") from None
    row["seq"] = _seq(inserted)
    held = pending["amount"]
    _add(conn, pending["debit_account_id"], "debits_pending", -held)
    _add(conn, pending["credit_account_id"], "credits_pending", -held)
    _add(conn, pending["debit_account_id"], "debits_posted", units)
    _add(conn, pending["credit_account_id"], "credits_posted", units)
    return row
