"""Fixtures of the compute tests: a compute layer that meters fast and keeps no pool."""

from __future__ import annotations

import pytest

from underlay.sdk.client import AsyncUnderlay


@pytest.fixture
def compute_settings() -> dict[str, object]:
    return {"pool_size": 0, "meter_every_seconds": 0.2}


@pytest.fixture
async def sbx(ul: AsyncUnderlay):  # type: ignore[no-untyped-def]
    """A fresh default sandbox of the local admin."""
    return await ul.sandbox.create(timeout=120)
