"""Advisory claims on a repository's paths: overlaps seen, exclusive refused, expiry,
and only the holder renews or releases."""

from __future__ import annotations

import asyncio

import pytest

from kernel.helpers import make_agent
from underlay import errors
from underlay.coordination.claims import overlap
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport


def test_overlap_is_conservative() -> None:
    assert overlap("src/auth/*", "src/auth/login.py")
    assert overlap("src", "src/auth/login.py")  # a directory holds its files
    assert overlap("src/*.py", "src/a/*")  # unsure: yes
    assert overlap("/docs/api.md", "docs/api.md")
    assert not overlap("src/auth/*", "src/billing/*")
    assert not overlap("docs/api.md", "docs/api.mdx")
    assert not overlap("src/a*.py", "src/b.py")


async def test_claims_are_seen_refused_when_exclusive_and_expire(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    await ul.repos.register(name="app", create=True)
    agents = [await make_agent(kernel, n, ["claims.*"]) for n in ("ann", "bob")]
    ann, bob = (AsyncUnderlay(LocalTransport(kernel, a.token)) for a in agents)
    mine = await ann.claims.acquire(repo="app", paths=["src/auth/*"], note="login flow")
    assert mine.overlapping == []
    theirs = await bob.claims.acquire(repo="app", paths=["src/auth/login.py", "docs/*"])
    assert [c.id for c in theirs.overlapping] == [mine.claim.id]  # bob learns of ann's
    with pytest.raises(errors.Conflict, match=f"already claimed by {agents[0].id}"):
        await bob.claims.acquire(repo="app", paths=["src/*"], exclusive=True)
    with pytest.raises(errors.PermissionDenied, match="not yours"):
        await bob.claims.release(claim=mine.claim.id)
    listed = await bob.claims.list(name="app")
    assert {c.holder for c in listed.items} == {a.id for a in agents}
    short = await bob.claims.acquire(repo="app", paths=["tmp/x"], ttl_seconds=0.2)
    await asyncio.sleep(0.3)
    assert short.claim.id not in {c.id for c in (await ann.claims.list(name="app")).items}
    with pytest.raises(errors.NotFound, match="no live claim"):
        await bob.claims.renew(claim=short.claim.id)
    renewed = await ann.claims.renew(claim=mine.claim.id, ttl_seconds=3600)
    assert renewed.expires_at > mine.claim.expires_at
    await ann.claims.release(claim=mine.claim.id)
    assert [c.holder for c in (await ul.claims.list(name="app")).items] == [agents[1].id]
    for bad in (["../etc/passwd"], ["/abs"], []):
        with pytest.raises(errors.InvalidInput):
            await ann.claims.acquire(repo="app", paths=bad)
    with pytest.raises(errors.NotFound, match="no repository"):
        await ann.claims.acquire(repo="nope", paths=["a"])
