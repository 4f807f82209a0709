"""Spend: what callers paid into their org's usage account, as SQL for other layers.

Spend is every posted transfer (``single`` or the ``post`` of a hold) credited to the
org's ``usage`` account in one currency: syscall costs (the kernel's budget step) and
sandbox metering. Funding and grants between accounts are not spend, and a voided or
still-pending hold spent nothing. Each row names its payer (the debited account's owner)
and, when the syscall was made by a task's attempt, that attempt (``task_id``,
``attempt``); metering and calls outside tasks have neither.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, select

from underlay.storage import schema

A = schema.accounts
T = schema.transfers

POSTED = ("single", "post")


def posted(org_id: str, currency: str) -> Select[Any]:
    """One row per posted spend transfer of ``org_id`` in ``currency``: ``payer_kind``,
    ``payer_id``, ``task_id``, ``attempt``, ``units`` (nano-units) and ``created_at``."""
    payer = A.alias("payer")
    usage = A.alias("usage")
    return (
        select(
            payer.c.owner_kind.label("payer_kind"),
            payer.c.owner_id.label("payer_id"),
            T.c.task_id,
            T.c.attempt,
            T.c.amount.label("units"),
            T.c.created_at,
        )
        .select_from(T)
        .join(payer, payer.c.id == T.c.debit_account_id)
        .join(
            usage,
            and_(
                usage.c.id == T.c.credit_account_id,
                usage.c.owner_kind == "usage",
                usage.c.owner_id == org_id,
            ),
        )
        .where(T.c.org_id == org_id, T.c.kind.in_(POSTED), T.c.currency == currency)
    )
