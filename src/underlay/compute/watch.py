"""``files.watch``: what changed under a workspace path since a cursor.

A cursor names a recorded state of the tree (every entry's type, size and mtime),
kept in memory per sandbox (the latest ``KEEP`` per sandbox). A watch compares the
current state with the cursor's and returns created / modified / removed paths and a
new cursor; with ``wait`` it polls every ``POLL_S`` until something changed or the wait
is over. The first call (no cursor) returns no events, only the starting cursor.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from underlay import errors
from underlay.compute.files import WorkspaceFiles
from underlay.compute.models import FileEvent, FileEvents
from underlay.types import new_id

KEEP = 32
POLL_S = 0.1
State = dict[str, tuple[int, int, int]]


class Watches:
    def __init__(self) -> None:
        self._states: dict[str, OrderedDict[str, State]] = {}

    def _remember(self, sandbox: str, state: State) -> str:
        kept = self._states.setdefault(sandbox, OrderedDict())
        cursor = new_id("watch")
        kept[cursor] = state
        while len(kept) > KEEP:
            kept.popitem(last=False)
        return cursor

    def forget(self, sandbox: str) -> None:
        self._states.pop(sandbox, None)

    async def watch(
        self, sandbox: str, files: WorkspaceFiles, path: str, since: str | None, wait: float
    ) -> FileEvents:
        now = await asyncio.to_thread(files.state, path)
        if since is None:
            return FileEvents(events=[], cursor=self._remember(sandbox, now))
        before = self._states.get(sandbox, OrderedDict()).get(since)
        if before is None:
            raise errors.NotFound(f"unknown or expired watch cursor {since!r}", field="since")
        deadline = time.monotonic() + wait
        events = _diff(before, now)
        while not events and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            now = await asyncio.to_thread(files.state, path)
            events = _diff(before, now)
        return FileEvents(events=events, cursor=self._remember(sandbox, now))


def _diff(before: State, after: State) -> list[FileEvent]:
    events = [FileEvent(path=p, type="created") for p in sorted(after.keys() - before.keys())]
    events += [
        FileEvent(path=p, type="modified")
        for p in sorted(after.keys() & before.keys())
        if after[p] != before[p]
    ]
    events += [FileEvent(path=p, type="removed") for p in sorted(before.keys() - after.keys())]
    return events
