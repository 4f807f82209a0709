"""Metering: sandbox-seconds and CPU-seconds charged into the ledger.

Usage is charged from the sandbox owner's account (the org's for humans) to the org's
usage account, every ``compute.meter_every_seconds`` and when a sandbox ends. Each
charge is a ledger transfer ``meter:<sandbox>:<n>`` whose transaction also records the
charge on the sandbox (and, at the end, its final state), so a charge and its
bookkeeping commit together or not at all; an interval is charged at most once. An
owner out of budget gets the sandbox stopped (ephemeral: destroyed), recorded in the
audit trail as ``sandbox.budget_stop``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, update

from underlay import errors
from underlay.storage import schema
from underlay.types import Money

if TYPE_CHECKING:
    from underlay.compute.manager import ComputeManager

log = logging.getLogger("underlay.compute.metering")
S = schema.sandboxes


class Meter:
    def __init__(self, manager: ComputeManager) -> None:
        self.m = manager
        self._metered: dict[str, tuple[float, float]] = {}  # sandbox: (time, cpu) charged
        self._locks: dict[str, asyncio.Lock] = {}
        self._currencies: dict[str, str] = {}

    def forget(self, sid: str) -> None:
        self._metered.pop(sid, None)
        self._locks.pop(sid, None)

    def _prices(self) -> tuple[Decimal, Decimal]:
        return Decimal(self.m.config.price_per_sandbox_second), Decimal(
            self.m.config.price_per_cpu_second
        )

    async def charge(
        self, row: Any, *, final: bool = False, finish: dict[str, Any] | None = None
    ) -> bool:
        """Charge what the instance of ``row`` used since it was last metered.

        Serialized per sandbox. Each charge is a ledger transfer ``meter:<sandbox>:<n>``;
        an interval is charged at most once, and the charge and its record are not split
        by a cancelled caller. ``finish`` (the record's final state) is written in the
        charge's transaction; True when it was.
        """
        async with self._locks.setdefault(row.id, asyncio.Lock()):
            inst = self.m.instances.get(row.id)
            if inst is None:
                return False
            row = await self.m._row_any(row.id)
            now = self.m.kernel.clock.now()
            t_last, cpu_last = self._metered.get(row.id, (inst.started_at, 0.0))
            cpu = self.m.driver.cpu_seconds(inst)
            d_sec, d_cpu = max(0.0, now - t_last), max(0.0, cpu - cpu_last)
            per_s, per_cpu = self._prices()
            amount = (Decimal(str(d_sec)) * per_s + Decimal(str(d_cpu)) * per_cpu).quantize(
                Decimal("0.000000001")
            )
            if amount <= 0:
                return False
            payer = ("agent", row.owner_id) if row.owner_kind == "agent" else ("org", row.org_id)
            charge = Money(amount, await self._currency(row.org_id))
            memo = f"sandbox {row.id}: {d_sec:.1f} s, {d_cpu:.2f} cpu-s"
            # shielded: a cancelled caller must not split the charge from its record
            budget_stop, written = await asyncio.shield(
                self._charge(row, payer, charge, memo, now, cpu, (d_sec, d_cpu), finish or {})
            )
        if budget_stop and not final:
            log.warning("sandbox %s: owner out of budget; stopping it", row.id)
            await self.m.kernel.record(
                row.org_id, (row.owner_kind, row.owner_id), "sandbox.budget_stop", "ok",
                {"sandbox": row.id, "destroyed": not row.persistent},
            )  # fmt: skip
            await self.m._end(row, destroy=not row.persistent)
        return written

    async def _charge(
        self, row: Any, payer: tuple[str, str], charge: Money, memo: str,
        now: float, cpu: float, deltas: tuple[float, float], finish: dict[str, Any],
    ) -> tuple[bool, bool]:  # fmt: skip
        """Post one meter transfer and, in the same transaction, its record on the
        sandbox (plus ``finish``). Returns (out of budget, record written).

        A transfer id already taken is skipped, never reused: the interval it charged
        stands, this one gets the next id.
        """
        seq = row.meter_seq + 1
        for _ in range(8):
            values = {
                "billed_seconds": row.billed_seconds + deltas[0],
                "billed_cpu_seconds": row.billed_cpu_seconds + deltas[1],
                "meter_seq": seq,
                **finish,
            }
            statement = update(S).where(S.c.id == row.id).values(**values)
            try:
                await self.m.kernel.ledger.transfer(
                    row.org_id, f"meter:{row.id}:{seq}", payer, ("usage", row.org_id), charge,
                    memo=memo, also=_executes(statement),
                )  # fmt: skip
            except errors.BudgetExceeded:
                return True, False
            except errors.Conflict:
                seq += 1
                continue
            self._metered[row.id] = (now, cpu)
            cached = self.m._cache.get(row.id)
            if cached is not None:
                for key, value in values.items():
                    setattr(cached, key, value)
            return False, True
        return False, False

    async def _currency(self, org_id: str) -> str:
        """The org's currency (fixed when the org is created, so it is kept once read)."""
        if org_id not in self._currencies:
            from underlay.identity import service as identity

            async with self.m.kernel.db.read() as conn:
                self._currencies[org_id] = await identity.org_currency(conn, org_id)
        return self._currencies[org_id]

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.m.config.meter_every_seconds)
            for sid in list(self.m.instances):
                try:
                    await self.charge(await self.m._row_any(sid))
                except Exception:  # one sandbox's failure must not stop the others' metering
                    log.exception("metering sandbox %s failed", sid)


def _executes(statement: Any) -> Callable[[Connection], Any]:
    return lambda conn: conn.execute(statement)
