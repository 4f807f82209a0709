"""A task handler for bench/orchestration.py: ``steps`` no-op durable steps."""

from __future__ import annotations

from typing import Any


async def _noop() -> None:
    return None


async def many(run: Any, payload: dict[str, Any]) -> dict[str, Any]:
    for i in range(payload["steps"]):
        await run.step(f"s{i}", _noop)
    return {"steps": payload["steps"]}


async def agent_loop(run: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A fleet member for the concurrency figure: it stays alive ``seconds``, ticking."""
    import asyncio

    ticks = 0
    deadline = asyncio.get_running_loop().time() + payload["seconds"]
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.25)
        ticks += 1
    return {"ticks": ticks}
