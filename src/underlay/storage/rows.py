"""Tenant-confined row look-ups shared by the layers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select

from underlay.storage.engine import Database


async def in_org(db: Database, table: Table, org_id: str, row_id: str) -> Any | None:
    """The row of ``table`` with id ``row_id`` in organisation ``org_id``, else None.

    Another organisation's row is indistinguishable from a missing one (callers answer
    ``not_found`` for both)."""
    async with db.read() as conn:
        found = await conn.execute(
            select(table).where(table.c.id == row_id, table.c.org_id == org_id)
        )
        return found.first()


async def page(
    db: Database,
    table: Table,
    org_id: str,
    where: list[Any],
    *,
    limit: int,
    cursor: str | None,
    newest_first: bool = False,
) -> tuple[list[Any], str | None]:
    """One page of an organisation's rows by id (ids sort by time), and the next cursor."""
    query = select(table).where(table.c.org_id == org_id, *where)
    if cursor:
        query = query.where(table.c.id < cursor if newest_first else table.c.id > cursor)
    order = table.c.id.desc() if newest_first else table.c.id
    async with db.read() as conn:
        rows = (await conn.execute(query.order_by(order).limit(limit + 1))).all()
    more = len(rows) > limit
    return list(rows[:limit]), (rows[limit - 1].id if more else None)
