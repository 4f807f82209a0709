"""Bearer tokens: minted once, stored hashed, checked on every call.

A token is ``ul_`` + 43 URL-safe characters (256 random bits); only its SHA-256 is
stored. ``authenticate`` rejects unknown, expired and revoked tokens and tokens whose
agent is disabled. Results are cached for ``cache_seconds`` (default 1 s) to keep the
hot path off the database; revocations in this process take effect at once
(``forget``), in other processes within ``cache_seconds``. Expiry is checked on every
call, cached or not.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import select

from underlay import errors
from underlay.kernel.audit import TOKEN_PREFIX
from underlay.kernel.context import Principal
from underlay.storage import schema
from underlay.storage.engine import Database


def mint_token() -> tuple[str, str]:
    """A new token and its hash. The token itself is shown once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuthenticator:
    def __init__(self, db: Database, now: Any, cache_seconds: float = 1.0) -> None:
        self.db = db
        self.now = now
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise errors.Unauthenticated("missing bearer token")
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise errors.Unauthenticated("malformed token")
        digest = hash_token(token)
        now = self.now()
        cached = self._cache.get(digest)
        if cached and now - cached[0] < self.cache_seconds:
            principal = cached[1]
        else:
            principal = await self._load(digest)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, principal)
        if principal.expires_at is not None and principal.expires_at <= now:
            raise errors.Unauthenticated("token expired")
        return principal

    def forget(self, *, token_id: str | None = None, subject_id: str | None = None) -> None:
        """Drop cached principals of a revoked token or a disabled subject."""
        for digest, (_, p) in list(self._cache.items()):
            if (token_id and p.token_id == token_id) or (subject_id and p.id == subject_id):
                self._cache.pop(digest, None)

    async def _load(self, digest: str) -> Principal:
        t = schema.tokens
        async with self.db.read() as conn:
            tok = (await conn.execute(select(t).where(t.c.token_hash == digest))).first()
            if tok is None:
                raise errors.Unauthenticated("unknown token")
            if tok.revoked_at is not None:
                raise errors.Unauthenticated("token revoked")
            scopes = tuple(tok.scopes) if tok.scopes is not None else None
            base = dict(
                org_id=tok.org_id, token_id=tok.id, expires_at=tok.expires_at, scopes=scopes
            )
            if tok.kind == "enrollment":
                return Principal(
                    kind="enrollment", id=tok.id, capabilities=("agents.enroll",), **base
                )
            if tok.kind == "human":
                h = schema.humans
                human = (await conn.execute(select(h).where(h.c.id == tok.subject_id))).first()
                if human is None:
                    raise errors.Unauthenticated("token subject no longer exists")
                return Principal(
                    kind="human",
                    id=human.id,
                    capabilities=("*",),
                    is_operator=bool(human.is_operator),
                    **base,
                )
            a = schema.agents
            agent = (await conn.execute(select(a).where(a.c.id == tok.subject_id))).first()
            if agent is None or agent.status != "active":
                raise errors.Unauthenticated("token's agent is disabled or gone")
            return Principal(
                kind="agent", id=agent.id, capabilities=tuple(agent.capabilities), **base
            )
