"""Task handlers every worker has: ``noop``, ``sleep`` and ``python`` (an entry point).

``python`` runs ``{"entry": "package.module:function", "input": {...}}``: the function is
imported in the worker and called as a handler, ``await function(run, input)``, so a
user's code gets durable steps (``run.step``) without registering anything.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from underlay import errors
from underlay.orchestration.durable import TaskRun, handler


@handler("noop", steps=False)
async def noop(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    return {}


@handler("sleep", steps=False)
async def sleep(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    seconds = float(payload.get("seconds", 1.0))
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@handler("python")
async def python_entry(run: TaskRun, payload: dict[str, Any]) -> dict[str, Any]:
    entry = payload.get("entry")
    if not isinstance(entry, str) or ":" not in entry:
        raise errors.InvalidInput(
            "python tasks need entry: 'package.module:function'", field="entry"
        )
    module_name, _, attr = entry.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise errors.InvalidInput(f"cannot import {entry}: {exc}", field="entry") from None
    result = await fn(run, payload.get("input") or {})
    if not isinstance(result, dict):
        raise errors.InvalidInput(f"{entry} returned {type(result).__name__}, not a dict")
    return result
