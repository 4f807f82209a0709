"""The double-entry ledger: holds (pending / post / void / expire), replays, conflicts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kernel.helpers import OpenKernel, balance, default_org, make_agent, rows, usd
from underlay import errors
from underlay.billing.ledger import Ledger
from underlay.kernel.kernel import Kernel
from underlay.storage import schema
from underlay.testing.clock import FakeClock
from underlay.types import Money


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def k(open_kernel: OpenKernel, clock: FakeClock) -> Kernel:
    return await open_kernel(clock=clock)


@pytest.fixture
async def funded(k: Kernel) -> str:
    return (await make_agent(k, "spender", budget="10.00 USD")).id


def usage(k: Kernel) -> tuple[str, str]:
    return ("usage", default_org(k))


async def hold(k: Kernel, agent: str, hold_id: str, amount: str, ttl: float = 60) -> Any:
    return await k.ledger.transfer(
        default_org(k), hold_id, ("agent", agent), usage(k), usd(amount), pending_ttl=ttl
    )


async def assert_balanced(k: Kernel) -> None:
    """Double entry: over all accounts, debits equal credits, posted and pending."""
    accounts = await rows(k, schema.accounts)
    assert sum(a["debits_posted"] for a in accounts) == sum(a["credits_posted"] for a in accounts)
    assert all(a["credits_pending"] == 0 for a in accounts)  # credits land on post only
    for a in accounts:
        if not a["allow_negative"]:
            assert a["credits_posted"] - a["debits_posted"] - a["debits_pending"] >= 0


async def test_a_hold_reserves_then_posts_in_full(k: Kernel, funded: str) -> None:
    await hold(k, funded, "h1", "3.00")
    bal = await balance(k, funded)
    assert (bal.posted, bal.pending, bal.available) == (usd("10"), usd("3"), usd("7"))
    posted = await k.ledger.resolve(default_org(k), "h1")
    assert (posted["kind"], posted["amount"]) == ("post", usd("3").to_units())
    bal = await balance(k, funded)
    assert (bal.posted, bal.pending, bal.available) == (usd("7"), usd("0"), usd("7"))
    assert (await k.ledger.balance(default_org(k), usage(k), "USD")).posted == usd("3")
    await assert_balanced(k)


async def test_a_hold_posts_partly_and_releases_the_rest(k: Kernel, funded: str) -> None:
    await hold(k, funded, "h1", "3.00")
    await k.ledger.resolve(default_org(k), "h1", post=usd("1.25"))
    bal = await balance(k, funded)
    assert (bal.posted, bal.pending, bal.available) == (usd("8.75"), usd("0"), usd("8.75"))
    await assert_balanced(k)


async def test_posting_more_than_held_or_in_another_currency_is_invalid(
    k: Kernel, funded: str
) -> None:
    await hold(k, funded, "h1", "1.00")
    with pytest.raises(errors.InvalidInput):
        await k.ledger.resolve(default_org(k), "h1", post=usd("1.01"))
    with pytest.raises(errors.InvalidInput) as caught:
        await k.ledger.resolve(default_org(k), "h1", post=Money("0.50", "EUR"))
    assert caught.value.code == "invalid_input"
    await k.ledger.resolve(default_org(k), "h1", post=usd("1.00"))  # still resolvable


async def test_a_voided_hold_returns_everything(k: Kernel, funded: str) -> None:
    await hold(k, funded, "h1", "4.00")
    voided = await k.ledger.resolve(default_org(k), "h1", void=True)
    assert (voided["kind"], voided["amount"]) == ("void", 0)
    bal = await balance(k, funded)
    assert (bal.posted, bal.pending, bal.available) == (usd("10"), usd("0"), usd("10"))
    await assert_balanced(k)


async def test_holds_expire_at_their_ttl(k: Kernel, clock: FakeClock, funded: str) -> None:
    await hold(k, funded, "short", "1.00", ttl=10)
    await hold(k, funded, "long", "2.00", ttl=100)
    clock.advance(9)
    assert await k.ledger.expire_holds() == 0
    clock.advance(2)
    assert await k.ledger.expire_holds() == 1
    assert (await balance(k, funded)).available == usd("8.00")
    [void] = [t for t in await rows(k, schema.transfers) if t["id"] == "short:void"]
    assert void["memo"] == "expired"
    with pytest.raises(errors.Conflict):  # an expired hold cannot be posted any more
        await k.ledger.resolve(default_org(k), "short")
    clock.advance(100)
    assert await k.ledger.expire_holds() == 1
    assert await k.ledger.expire_holds() == 0  # nothing is expired twice
    assert (await balance(k, funded)).available == usd("10.00")


async def test_a_hold_is_resolved_exactly_once(k: Kernel, funded: str) -> None:
    await hold(k, funded, "h1", "1.00")
    await k.ledger.resolve(default_org(k), "h1")
    for kwargs in ({}, {"void": True}, {"post": usd("0.5")}):
        with pytest.raises(errors.Conflict):
            await k.ledger.resolve(default_org(k), "h1", **kwargs)
    assert (await balance(k, funded)).posted == usd("9.00")


async def test_concurrent_resolutions_of_one_hold_let_one_win(
    open_kernel: OpenKernel, k: Kernel, funded: str
) -> None:
    other = await open_kernel()
    await hold(k, funded, "h1", "1.00")
    results = await asyncio.gather(
        k.ledger.resolve(default_org(k), "h1"),
        other.ledger.resolve(default_org(k), "h1", void=True),
        k.ledger.resolve(default_org(k), "h1", void=True),
        other.ledger.resolve(default_org(k), "h1"),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, dict)]
    assert len(wins) == 1
    assert all(isinstance(r, errors.Conflict) for r in results if not isinstance(r, dict))
    expected = usd("9.00") if wins[0]["kind"] == "post" else usd("10.00")
    bal = await balance(k, funded)
    assert (bal.posted, bal.pending) == (expected, usd("0"))


async def test_only_pending_transfers_can_be_resolved(k: Kernel, funded: str) -> None:
    await k.ledger.transfer(default_org(k), "plain", ("agent", funded), usage(k), usd("1"))
    for ref in ("plain", "missing"):
        with pytest.raises(errors.NotFound):
            await k.ledger.resolve(default_org(k), ref)


async def test_the_same_transfer_id_replays_the_first_transfer(k: Kernel, funded: str) -> None:
    org = default_org(k)
    first = await k.ledger.transfer(org, "t1", ("agent", funded), usage(k), usd("2"), memo="a")
    again = await k.ledger.transfer(org, "t1", ("agent", funded), usage(k), usd("2"), memo="b")
    assert again["seq"] == first["seq"] and again["memo"] == "a"
    assert (await balance(k, funded)).posted == usd("8")
    with pytest.raises(errors.Conflict) as caught:
        await k.ledger.transfer(org, "t1", ("agent", funded), usage(k), usd("3"))
    assert caught.value.field == "id"
    with pytest.raises(errors.Conflict):
        await k.ledger.transfer(org, "t1", ("agent", funded), usage(k), usd("2"), pending_ttl=5)
    assert (await balance(k, funded)).posted == usd("8")


async def test_concurrent_transfers_with_one_id_move_money_once(
    open_kernel: OpenKernel, k: Kernel, funded: str
) -> None:
    other = await open_kernel()
    org = default_org(k)
    results = await asyncio.gather(
        *(
            kk.ledger.transfer(org, "same", ("agent", funded), usage(k), usd("1"))
            for kk in (k, other) * 5
        ),
        return_exceptions=True,
    )
    assert all(isinstance(r, dict) for r in results), results
    assert len({r["seq"] for r in results}) == 1  # type: ignore[index]
    assert (await balance(k, funded)).posted == usd("9")


async def test_a_hold_beyond_the_available_balance_is_budget_exceeded(
    k: Kernel, funded: str
) -> None:
    await hold(k, funded, "h1", "8.00")
    with pytest.raises(errors.BudgetExceeded) as caught:
        await hold(k, funded, "h2", "2.01")
    assert caught.value.code == "budget_exceeded"
    await hold(k, funded, "h3", "2.00")  # exactly what is left
    assert (await balance(k, funded)).available == usd("0")
    assert [t["id"] for t in await rows(k, schema.transfers, kind="pending")] == ["h1", "h3"]


async def test_amounts_must_be_positive(k: Kernel, funded: str) -> None:
    for amount in ("0", "-1"):
        with pytest.raises(errors.InvalidInput):
            await k.ledger.transfer(default_org(k), "t", ("agent", funded), usage(k), usd(amount))


async def test_accounts_are_per_currency(k: Kernel, funded: str) -> None:
    with pytest.raises(errors.NotFound):
        await k.ledger.transfer(
            default_org(k), "t", ("agent", funded), usage(k), Money("1", "EUR")
        )
    with pytest.raises(errors.InvalidInput):
        await k.ledger.transfer(default_org(k), "t", ("agent", funded), ("agent", funded), usd("1"))


async def test_open_account_is_idempotent(k: Kernel) -> None:
    ledger: Ledger = k.ledger
    org = default_org(k)
    async with k.db.write() as conn:
        first = await ledger.open_account(conn, org, ("human", "h1"), "USD", allow_negative=False)
        again = await ledger.open_account(conn, org, ("human", "h1"), "USD", allow_negative=True)
    assert first == again
