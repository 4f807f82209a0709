"""Idempotency keys: a repeated key returns the first result and never runs twice.

Protocol, per (org, principal, key):

1. ``claim`` inserts a ``running`` row with a lease. A concurrent duplicate finds the row
   and waits until it is ``done`` (then replays it) or its lease has lapsed (the first
   runner died; the duplicate takes the claim over).
2. ``finish`` stores the result (or a non-retryable error, which is replayed too).
3. ``release`` deletes the claim after a retryable error, so a retry may run afresh.

The same key with a different syscall or input is ``IdempotencyKeyReused``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.exc import IntegrityError

from underlay import errors
from underlay.storage import schema
from underlay.storage.engine import Database

t = schema.idempotency


def request_hash(syscall: str, payload: dict[str, Any], key: bytes = b"") -> str:
    """A keyed hash (HMAC-SHA256) of the request: the payload may carry secrets (a vault
    value, say), which an unkeyed hash in the database would expose to guessing."""
    text = json.dumps([syscall, payload], sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


class IdempotencyStore:
    def __init__(self, db: Database, now: Any, wait_seconds: float) -> None:
        self.db = db
        self.now = now
        self.wait_seconds = wait_seconds

    def _pk(self, org_id: str, principal_id: str, key: str) -> Any:
        return and_(t.c.org_id == org_id, t.c.principal_id == principal_id, t.c.key == key)

    async def claim(
        self, org_id: str, principal_id: str, key: str, syscall: str, rhash: str, lease: float
    ) -> dict[str, Any] | None:
        """Claim the key. Returns None when claimed, or the stored response to replay."""
        if not key or len(key) > 200:
            raise errors.InvalidInput("idempotency key must be 1..200 characters", field="key")
        deadline = self.now() + self.wait_seconds
        delay = 0.005
        while True:
            outcome = await self._try_claim(org_id, principal_id, key, syscall, rhash, lease)
            if outcome != "wait":
                return outcome  # type: ignore[return-value]
            if self.now() > deadline:
                raise errors.Busy(f"a request with idempotency key {key!r} is still running")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _try_claim(
        self, org_id: str, principal_id: str, key: str, syscall: str, rhash: str, lease: float
    ) -> dict[str, Any] | str | None:
        now = self.now()
        try:
            async with self.db.write() as conn:
                row = (
                    await conn.execute(select(t).where(self._pk(org_id, principal_id, key)))
                ).first()
                if row is None:
                    await conn.execute(
                        t.insert().values(
                            org_id=org_id,
                            principal_id=principal_id,
                            key=key,
                            syscall=syscall,
                            request_hash=rhash,
                            state="running",
                            response=None,
                            locked_until=now + lease,
                            created_at=now,
                        )
                    )
                    return None
                if row.syscall != syscall or row.request_hash != rhash:
                    raise errors.IdempotencyKeyReused(
                        f"idempotency key {key!r} was used for a different request",
                        field="idempotency_key",
                    )
                if row.state == "done":
                    return dict(row.response or {})
                if row.locked_until < now:  # the first runner died: take over
                    taken = await conn.execute(  # compare-and-set: one waiter wins
                        update(t)
                        .where(
                            self._pk(org_id, principal_id, key),
                            t.c.state == "running",
                            t.c.locked_until == row.locked_until,
                        )
                        .values(locked_until=now + lease)
                    )
                    return None if taken.rowcount == 1 else "wait"
                return "wait"
        except IntegrityError:
            return "wait"  # a concurrent duplicate inserted first (PostgreSQL)

    async def finish(
        self, org_id: str, principal_id: str, key: str, response: dict[str, Any]
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(t)
                .where(self._pk(org_id, principal_id, key))
                .values(state="done", response=response)
            )

    async def release(self, org_id: str, principal_id: str, key: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(t).where(self._pk(org_id, principal_id, key)))
