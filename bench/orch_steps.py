"""A task handler for bench/orchestration.py: ``steps`` no-op durable steps."""

from __future__ import annotations

from typing import Any


async def _noop() -> None:
    return None


async def many(run: Any, payload: dict[str, Any]) -> dict[str, Any]:
    for i in range(payload["steps"]):
        await run.step(f"s{i}", _noop)
    return {"steps": payload["steps"]}

