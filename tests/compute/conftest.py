"""Fixtures of the compute tests: a kernel whose compute layer meters fast, no pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from underlay.config import Config
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport
from underlay.testing import databases


@pytest.fixture
def compute_settings() -> dict[str, object]:
    return {"pool_size": 0, "meter_every_seconds": 0.2}


@pytest.fixture
def config(home: Path, tmp_path: Path, compute_settings: dict[str, object]) -> Config:
    url = databases.fresh_database_url(tmp_path)
    cfg = Config.load(home=home, database_url=url, compute=compute_settings)
    yield cfg
    databases.drop_database(url)


@pytest.fixture
async def kernel(config: Config) -> AsyncIterator[Kernel]:
    k = await Kernel.open(config)
    yield k
    await k.close()


@pytest.fixture
async def ul(kernel: Kernel) -> AsyncUnderlay:
    return AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))


@pytest.fixture
async def sbx(ul: AsyncUnderlay):  # type: ignore[no-untyped-def]
    """A fresh default sandbox of the local admin."""
    return await ul.sandbox.create(timeout=120)
