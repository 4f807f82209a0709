"""Fixtures of the MCP surface tests.

This directory has no ``__init__.py`` on purpose: ``tests/`` is on ``sys.path``, and a
package named ``mcp`` there would shadow the official SDK.
"""

from __future__ import annotations

import pytest

from underlay.sdk.client import AsyncUnderlay


@pytest.fixture
async def agent_token(ul: AsyncUnderlay) -> str:
    """The token of an agent that holds only ``system.*``."""
    await ul.agents.create("narrow", capabilities=["system.*"])
    return (await ul.tokens.create(subject="narrow")).token.get_secret_value()
