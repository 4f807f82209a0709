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
