"""Fixtures of the REST surface tests: the app over the test kernel, in process.

Helpers are imported as ``from server.rest_helpers import ...`` (``tests/`` is on sys.path)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from underlay.kernel.kernel import Kernel
from underlay.server.app import create_app


@pytest.fixture
def app(kernel: Kernel) -> FastAPI:
    return create_app(kernel)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling the app in process (no socket, no lifespan)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        yield c


@pytest.fixture
def auth(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}
