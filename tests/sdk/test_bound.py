"""E2B-style sandbox handles, async and blocking, derived from the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from underlay import Underlay, errors
from underlay.config import Config
from underlay.sdk.client import AsyncUnderlay


@pytest.fixture
def compute_settings() -> dict[str, object]:
    return {"pool_size": 0}


async def test_async_handle_binds_the_sandbox_id(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandboxes.create(timeout=60, metadata={"k": "v"})
    assert sbx.info.metadata == {"k": "v"} and sbx.id.startswith("sbx_")
    out = await sbx.commands.run("echo $((6*7))")
    assert out.stdout == "42\n"
    await sbx.files.write("notes/a.txt", "hello")
    assert (await sbx.files.read("notes/a.txt")).content == "hello"
    assert {"commands", "files", "destroy", "pause"} <= set(dir(sbx))
    assert "create" not in dir(sbx)  # sandbox.create takes no sandbox id: not bound
    with pytest.raises(AttributeError):
        _ = sbx.create
    with pytest.raises(errors.InvalidInput):
        await sbx.files.write("a", "b", "utf-8", 0o644, "one too many")
    same = ul.sandboxes.attach(sbx.id)
    assert (await same.commands.run(["cat", "notes/a.txt"])).stdout == "hello"
    assert (await sbx.destroy()).state == "destroyed"


def test_blocking_handle(config: Config, tmp_path: Path) -> None:
    ul = Underlay.local(config=config)
    try:
        sbx = ul.sandboxes.create(timeout=60)
        assert sbx.commands.run("printf hi").stdout == "hi"
        sbx.files.write("x.txt", "blocking")
        assert sbx.files.read("x.txt").content == "blocking"
        assert sbx.destroy().state == "destroyed"
    finally:
        ul.close()
