"""Shared fixtures: a fresh kernel per test on the backend UNDERLAY_TEST_DB selects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from underlay.config import Config
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport
from underlay.testing import databases


def pytest_report_header() -> str:
    return f"underlay test database: {databases.backend()}"


def pytest_sessionfinish() -> None:
    databases.drop_template()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def compute_settings() -> dict[str, object] | None:
    """The ``compute:`` settings of the test installation (a test package may override)."""
    return None


@pytest.fixture
def memory_settings() -> dict[str, object] | None:
    """The ``memory:`` settings of the test installation (a test package may override)."""
    return None


@pytest.fixture
def config(
    home: Path,
    tmp_path: Path,
    compute_settings: dict[str, object] | None,
    memory_settings: dict[str, object] | None,
) -> Config:
    url = databases.fresh_database_url(tmp_path)
    cfg = Config.load(home=home, database_url=url, compute=compute_settings, memory=memory_settings)
    yield cfg
    databases.drop_database(url)


@pytest.fixture
async def kernel(config: Config) -> AsyncIterator[Kernel]:
    k = await Kernel.open(config)
    yield k
    await k.close()


@pytest.fixture
def admin_token(kernel: Kernel) -> str:
    return kernel.admin_token()


@pytest.fixture
async def ul(kernel: Kernel) -> AsyncUnderlay:
    """The local admin's async client over the test kernel."""
    return AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))


@pytest.fixture
async def base(kernel: Kernel) -> AsyncIterator[str]:
    """The test kernel served over HTTP (REST and MCP) on a free loopback port."""
    from underlay.server.app import serving

    async with serving(kernel, "127.0.0.1", 0) as url:
        yield url
