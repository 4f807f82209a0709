"""Inputs and outputs of the budget syscalls."""

from __future__ import annotations

from pydantic import Field

from underlay.types import MoneyField, StrictModel


class BalanceQuery(StrictModel):
    agent: str | None = Field(default=None, description="agent id or name; default: the caller")


class BalanceOut(StrictModel):
    owner: str
    posted: MoneyField
    pending: MoneyField
    available: MoneyField


class Fund(StrictModel):
    to: str = Field(min_length=1, max_length=200, description="agent id or name")
    amount: MoneyField
    transfer_id: str | None = Field(default=None, min_length=1, max_length=100)
    memo: str = Field(default="", max_length=500)


class Transfer(StrictModel):
    id: str
    kind: str
    debit_account_id: str
    credit_account_id: str
    amount: MoneyField
    memo: str
    created_at: float


class ListTransfers(StrictModel):
    agent: str | None = None
    cursor: int | None = Field(default=None, ge=0)
    limit: int = Field(default=50, ge=1, le=500)


class TransferPage(StrictModel):
    items: list[Transfer]
    next_cursor: int | None = None
