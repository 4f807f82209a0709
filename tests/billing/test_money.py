"""Money: an exact Decimal amount with a currency, never a float."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from underlay import errors
from underlay.types import Money, MoneyField, StrictModel


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("5.00 USD", "5.00 USD"), ("5 usd", "5.00 USD"), (" 0.1 EUR ", "0.10 EUR"),
        ("-2.5 USD", "-2.50 USD"), ({"amount": "1.234", "currency": "gbp"}, "1.234 GBP"),
        ({"amount": 3}, "3.00 USD"), (7, "7.00 USD"), (Decimal("0.000000001"), "0.000000001 USD"),
        ("12", "12.00 USD"), ("5.00", "5.00 USD"),
    ],
)
def test_parse_and_format(value: object, text: str) -> None:
    assert str(Money.parse(value)) == text


@pytest.mark.parametrize(
    "value",
    ["lots", "USD", 1.5, True, None, {"currency": "USD"}, "0.0000000001 USD", "NaN USD",
     "Infinity"],
)
def test_bad_amounts_are_invalid_input(value: object) -> None:
    with pytest.raises(errors.InvalidInput):
        Money.parse(value)


def test_arithmetic_is_exact_and_keeps_the_currency() -> None:
    total = Money.zero()
    for _ in range(10):
        total = total + Money("0.1")
    assert total == Money("1.0") and str(total) == "1.00 USD"
    assert Money("1", "EUR") - Money("0.25", "EUR") == Money("0.75", "EUR")
    with pytest.raises(errors.InvalidInput, match="currency"):
        Money("1", "USD") + Money("1", "EUR")
    with pytest.raises(errors.InvalidInput):
        assert Money("1", "USD") < Money("2", "EUR")
    assert Money("1") < Money("2") and Money("2") <= Money("2")
    assert not Money.zero() and Money("0.01")
    assert Money("1", "USD") != Money("1", "EUR")
    assert len({Money("1.0"), Money("1.00")}) == 1


def test_units_round_trip_exactly() -> None:
    for text in ("0.000000001", "123456789.987654321", "-5.5"):
        m = Money(text, "USD")
        assert Money.from_units(m.to_units(), "USD") == m
    assert Money("1").to_units() == 10**9


def test_money_is_immutable() -> None:
    m = Money("1")
    with pytest.raises(AttributeError):
        m.amount = Decimal(2)


class Priced(StrictModel):
    price: MoneyField


def test_money_field_validates_and_serializes_as_a_string() -> None:
    priced = Priced.model_validate({"price": "2.5 USD"})
    assert priced.model_dump(mode="json") == {"price": "2.50 USD"}
    assert Priced.model_json_schema()["properties"]["price"]["format"] == "money"
    with pytest.raises(ValidationError) as caught:
        Priced.model_validate({"price": "a lot"})
    assert caught.value.errors()[0]["loc"] == ("price",)
