"""Value types shared by every layer: money, identifiers, pages of results.

``Money`` is a ``Decimal`` amount with an ISO-like currency code, never a float. On the
wire it is the string ``"5.00 USD"``; an object ``{"amount": "5.00", "currency": "USD"}``
is accepted too. Storage keeps integer nano-units (``Money.to_units``), exact both ways.
"""

from __future__ import annotations

import re
import secrets
import time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    WithJsonSchema,
)

from underlay.errors import InvalidInput

UNITS_PER_WHOLE = 10**9  # storage scale: nano-units of the currency
_MONEY_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]{3,8})\s*$")


class Money:
    """An exact amount of one currency. Immutable; arithmetic keeps the currency."""

    __slots__ = ("amount", "currency")
    amount: Decimal
    currency: str

    def __init__(self, amount: Decimal | int | str, currency: str = "USD") -> None:
        try:
            value = Decimal(str(amount))
        except InvalidOperation as exc:
            raise InvalidInput(f"not a decimal amount: {amount!r}", field="amount") from exc
        if not value.is_finite():
            raise InvalidInput(f"amount must be finite: {amount!r}", field="amount")
        if value != value.quantize(Decimal(1) / UNITS_PER_WHOLE):
            raise InvalidInput(f"amount has more than 9 decimal places: {amount}", field="amount")
        object.__setattr__(self, "amount", value)
        object.__setattr__(self, "currency", currency.upper())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Money is immutable")

    @classmethod
    def parse(cls, value: Any) -> Money:
        """Accept ``Money``, ``"5.00 USD"``, ``{"amount": .., "currency": ..}`` or a number."""
        if isinstance(value, Money):
            return value
        if isinstance(value, dict):
            if "amount" not in value:
                raise InvalidInput("money object needs 'amount'", field="amount")
            return cls(value["amount"], str(value.get("currency", "USD")))
        if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            return cls(value)
        if isinstance(value, str):
            match = _MONEY_RE.match(value)
            if match:
                return cls(match.group(1), match.group(2))
            try:
                return cls(Decimal(value.strip()))
            except (InvalidOperation, InvalidInput):
                pass
        raise InvalidInput(f"not an amount of money: {value!r} (expected e.g. '5.00 USD')")

    @classmethod
    def zero(cls, currency: str = "USD") -> Money:
        return cls(0, currency)

    @classmethod
    def from_units(cls, units: int, currency: str) -> Money:
        return cls(Decimal(units) / UNITS_PER_WHOLE, currency)

    def to_units(self) -> int:
        return int(self.amount * UNITS_PER_WHOLE)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise InvalidInput(f"currency mismatch: {self.currency} vs {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Money)
            and self.amount == other.amount
            and self.currency == other.currency
        )

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __hash__(self) -> int:
        return hash((self.amount, self.currency))

    def __bool__(self) -> bool:
        return self.amount != 0

    def __str__(self) -> str:
        text = format(self.amount.normalize(), "f")
        if "." not in text:
            text += ".00"
        elif len(text.split(".")[1]) < 2:
            text += "0"
        return f"{text} {self.currency}"

    def __repr__(self) -> str:
        return f"Money('{self}')"


def _validate_money(value: Any) -> Money:
    """``Money.parse`` for pydantic: a ``ValueError`` lets pydantic name the field."""
    try:
        return Money.parse(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


MoneyField = Annotated[
    Money,
    BeforeValidator(_validate_money),
    PlainSerializer(str, return_type=str, when_used="always"),
    WithJsonSchema({"type": "string", "examples": ["5.00 USD"], "format": "money"}),
]


REVEAL = {"reveal_secrets": True}
"""Serialization context under which ``Secret`` fields show their value (surfaces only)."""


def _serialize_secret(value: SecretStr, info: SerializationInfo) -> str:
    if info.context and info.context.get("reveal_secrets"):
        return value.get_secret_value()
    return "[redacted]"


Secret = Annotated[
    SecretStr,
    PlainSerializer(_serialize_secret, return_type=str, when_used="always"),
]
"""A secret value: ``[redacted]`` in every dump (audit, idempotency store, logs) except
``to_wire``, which a surface uses to hand it to the caller it belongs to."""


def to_wire(model: BaseModel) -> dict[str, Any]:
    """The JSON form sent to the caller, with its own secrets shown."""
    return model.model_dump(mode="json", context=REVEAL)


def new_id(prefix: str) -> str:
    """A sortable, unique identifier: prefix, millisecond time, 80 random bits."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


class StrictModel(BaseModel):
    """Base of every syscall input and output: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Empty(StrictModel):
    """The input or output of a syscall that takes or returns nothing."""


T = TypeVar("T")


class Page(StrictModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None = None
