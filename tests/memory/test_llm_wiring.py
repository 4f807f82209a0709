"""memory.extractor = llm: the configured endpoint is used; when it fails, the built-in
extractor takes over (fallback) or the add fails with nothing written."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from underlay import errors
from underlay.config import Config
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.transports import LocalTransport
from underlay.testing import databases


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("fallback", [True, False])
async def test_unreachable_llm_endpoint(tmp_path: Path, fallback: bool) -> None:
    llm = {"base_url": f"http://127.0.0.1:{closed_port()}/v1", "model": "m",
           "timeout_seconds": 2, "fallback": fallback}
    url = databases.fresh_database_url(tmp_path)
    cfg = Config.load(home=tmp_path / "home", database_url=url,
                      memory={"extractor": "llm", "llm": llm})
    kernel = await Kernel.open(cfg)
    try:
        ul = AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))
        if fallback:
            out = await ul.memory.add("I live in Lyon.", user_id="u")
            assert [(o.event, o.memory) for o in out.results] == [("ADD", "I live in Lyon.")]
        else:
            with pytest.raises(errors.Unavailable) as info:
                await ul.memory.add("I live in Lyon.", user_id="u")
            assert "127.0.0.1" in info.value.message
            assert (await ul.memory.get_all(user_id="u")).items == []
    finally:
        await kernel.close()
        databases.drop_database(url)


async def test_llm_extractor_needs_its_settings(tmp_path: Path) -> None:
    url = databases.fresh_database_url(tmp_path)
    cfg = Config.load(home=tmp_path / "home", database_url=url, memory={"extractor": "llm"})
    kernel = await Kernel.open(cfg)
    try:
        ul = AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))
        with pytest.raises(errors.InvalidInput) as info:
            await ul.memory.add("I live in Lyon.", user_id="u")
        assert info.value.field == "memory.llm"
    finally:
        await kernel.close()
        databases.drop_database(url)
