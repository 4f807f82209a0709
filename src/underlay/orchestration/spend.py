"""What tasks cost in money, joined with their outcomes (``tasks.costs``).

The worker-time columns come from ``attempts.costs``; this module adds the ledger's
spend (``billing.spend.posted``: syscall costs and metering, posted, in the org's
currency) to each row:

* ``spend``: all spend attributed to an attempt (``task_id``, ``attempt``) of the
  group's tasks whose lease started at or after ``since``. Spend made outside any task
  is in no group's ``spend``.
* An attempt is a task's attempt number. A lease that waited on a person and the lease
  that resumed the task share their number (the wait is not an attempt), so they are
  one attempt, which succeeded when one of its leases did.
* ``spend_per_success``: ``spend`` over the tasks that succeeded, rounded half up to
  the nano-unit; ``None`` without a success.
* ``spend_retry_tax``: the share of ``spend`` made in attempts that did not succeed
  (retried, failed, lost, cancelled, still running); 0.0 when nothing was spent.
* ``agent_spend`` (``by="agent"`` only, else ``None``): everything the agent's account
  spent in transfers posted at or after ``since``, in tasks or not (sandbox metering,
  calls outside tasks). Agents that spent without running tasks get a row of their
  own; a key that is not an agent of the org (a human submitter) has ``None``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, select

from underlay.billing import spend as ledger_spend
from underlay.identity import service as identity
from underlay.orchestration import attempts
from underlay.storage.engine import Database
from underlay.storage.schema import agents, task_attempts, transfers
from underlay.types import Money

MONEY_COLUMNS = ("spend", "spend_per_success", "spend_retry_tax", "agent_spend")


async def costs(
    db: Database, org_id: str, by: str, since: float, *, money: bool = True
) -> list[dict[str, Any]]:
    """``attempts.costs`` rows, each with the money columns (all ``None`` unless
    ``money``), ordered by key."""
    rows = {r[by]: r for r in await attempts.costs(db, org_id, by, since)}
    if not money:
        return [{**r, **dict.fromkeys(MONEY_COLUMNS)} for r in rows.values()]
    async with db.read() as conn:
        currency = await identity.org_currency(conn, org_id)
        spent = {r.key: r for r in (await conn.execute(_by_attempt(org_id, currency, by, since)))}
        per_agent: dict[str, int] = {}
        is_agent: set[str] = set()
        if by == "agent":
            per_agent = {
                r.payer_id: int(r.units)
                for r in await conn.execute(_by_agent(org_id, currency, since))
            }
            keys = set(rows) | set(per_agent)
            found = select(agents.c.id).where(agents.c.org_id == org_id, agents.c.id.in_(keys))
            is_agent = set((await conn.execute(found)).scalars())
    for key in per_agent.keys() - rows.keys():
        rows[key] = _no_tasks(by, key)
    out = []
    for key in sorted(rows):
        row = rows[key]
        total = int(spent[key].units) if key in spent else 0
        wasted = int(spent[key].wasted) if key in spent else 0
        ok = row["succeeded"]
        row["spend"] = Money.from_units(total, currency)
        row["spend_per_success"] = (
            Money.from_units((2 * total + ok) // (2 * ok), currency) if ok else None
        )
        row["spend_retry_tax"] = round(wasted / total, 4) if total else 0.0
        row["agent_spend"] = (
            Money.from_units(per_agent.get(key, 0), currency) if key in is_agent else None
        )
        out.append(row)
    return out


def _by_attempt(org_id: str, currency: str, by: str, since: float) -> Any:
    """Per key: spend attributed to its attempts, and the part in attempts that did not
    succeed. Attempts are grouped by number first, so a transfer is counted once."""
    a = task_attempts
    key = attempts.group_key(by)
    tried = (
        attempts.with_task(
            select(
                a.c.task_id,
                a.c.attempt,
                key.label("key"),
                func.max(case((a.c.outcome == "succeeded", 1), else_=0)).label("ok"),
            ),
            by,
        )
        .where(a.c.org_id == org_id, a.c.started_at >= since)
        .group_by(a.c.task_id, a.c.attempt, key)
        .subquery("tried")
    )
    paid = (
        ledger_spend.posted(org_id, currency)
        .where(transfers.c.task_id.is_not(None))
        .subquery("paid")
    )
    on = and_(paid.c.task_id == tried.c.task_id, paid.c.attempt == tried.c.attempt)
    return (
        select(
            tried.c.key,
            func.sum(paid.c.units).label("units"),
            func.sum(case((tried.c.ok == 1, 0), else_=paid.c.units)).label("wasted"),
        )
        .select_from(tried.join(paid, on))
        .group_by(tried.c.key)
    )


def _by_agent(org_id: str, currency: str, since: float) -> Any:
    """Per agent: everything its account spent since ``since``, in tasks or not."""
    paid = ledger_spend.posted(org_id, currency).subquery("paid")
    return (
        select(paid.c.payer_id, func.sum(paid.c.units).label("units"))
        .where(paid.c.payer_kind == "agent", paid.c.created_at >= since)
        .group_by(paid.c.payer_id)
    )


def _no_tasks(by: str, key: str) -> dict[str, Any]:
    """The worker-time columns of an agent that spent without running a task."""
    return {
        by: key, "tasks": 0, "succeeded": 0, "attempts": 0, "worker_seconds": 0.0,
        "seconds_per_success": None, "attempts_per_success": None, "retry_tax": 0.0,
    }  # fmt: skip
