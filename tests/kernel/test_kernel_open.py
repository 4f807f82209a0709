"""Opening an installation: home, migration, and a bootstrap that happens exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

from kernel.helpers import OpenKernel, count
from underlay.config import Config
from underlay.storage import schema


async def test_first_open_bootstraps_the_default_org_and_a_private_admin_token(
    open_kernel: OpenKernel, config: Config
) -> None:
    k = await open_kernel()
    info = k.bootstrap_info
    assert info is not None
    token_file = config.home / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (config.home / "master.key").stat().st_mode & 0o777 == 0o600
    me: Any = await k.invoke("self.whoami", {}, token=k.admin_token())
    assert (me.kind, me.id, me.org_id) == ("human", info.admin_id, info.org_id)
    assert me.is_operator


async def test_reopening_keeps_the_org_and_the_token(
    open_kernel: OpenKernel, config: Config
) -> None:
    first = await open_kernel()
    token = first.admin_token()
    second = await open_kernel()
    assert second.bootstrap_info == first.bootstrap_info
    assert second.admin_token() == token
    assert await count(second, schema.orgs) == 1


async def test_a_lost_or_revoked_admin_token_is_replaced_on_open(
    open_kernel: OpenKernel, config: Config
) -> None:
    k = await open_kernel()
    old = k.admin_token()
    me: Any = await k.invoke("self.whoami", {}, token=old)
    await k.invoke(
        "tokens.revoke", {"token_id": (await k.authn.authenticate(old)).token_id}, token=old
    )
    again = await open_kernel()
    new = again.admin_token()
    assert new != old
    assert (await again.invoke("self.whoami", {}, token=new)).id == me.id  # type: ignore[attr-defined]
    (config.home / "admin-token").unlink()
    third = await open_kernel()
    assert (await third.invoke("self.whoami", {}, token=third.admin_token())).id == me.id  # type: ignore[attr-defined]


async def test_concurrent_first_opens_bootstrap_once(open_kernel: OpenKernel) -> None:
    kernels = await asyncio.gather(*(open_kernel() for _ in range(4)))
    assert len({k.bootstrap_info.org_id for k in kernels if k.bootstrap_info}) == 1
    assert await count(kernels[0], schema.orgs) == 1
    assert await count(kernels[0], schema.humans) == 1
    for k in kernels:
        await k.invoke("self.whoami", {}, token=k.admin_token())
