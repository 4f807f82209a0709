"""Rich renderings for humans: tables for lists, money as strings, times as local ISO.

Everything here works on the wire form of a syscall's output (``to_wire``), so a new
syscall renders sensibly through ``render_any`` the day it lands.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from underlay.types import to_wire

_TIME_FIELDS = ("ts",)


def wire(value: Any) -> Any:
    return to_wire(value) if isinstance(value, BaseModel) else value


def local_time(ts: float | None, *, offset: bool = True) -> str:
    """A Unix timestamp as local ISO 8601 to the second (with its UTC offset); ``-`` if absent."""
    if ts is None:
        return "-"
    local = datetime.fromtimestamp(ts).astimezone()
    return (local if offset else local.replace(tzinfo=None)).isoformat(timespec="seconds")


def is_time_field(name: str) -> bool:
    return name.endswith("_at") or name in _TIME_FIELDS


def cell(name: str, value: Any, *, offset: bool = True) -> str:
    """One value as text: times localised, lists joined, objects as compact JSON.

    Tables pass ``offset=False``: local times without the (same for every row) UTC offset.
    """
    if value is None:
        return "-"
    if is_time_field(name) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return local_time(value, offset=offset)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str) if value else "-"
    return str(value)


def table(
    rows: Iterable[Any],
    columns: Sequence[str],
    *,
    title: str | None = None,
    headers: Sequence[str] | None = None,
) -> Table:
    """A table of ``rows`` (models or dicts), one column per field name."""
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False)
    for name, header in zip(columns, headers or columns, strict=True):
        t.add_column(header, overflow="fold", no_wrap=name in ("id", "seq"))
    for row in rows:
        data = wire(row)
        t.add_row(*(Text(cell(c, data.get(c), offset=False)) for c in columns))
    return t


def fields(obj: Any, *, title: str | None = None, only: Sequence[str] | None = None) -> Table:
    """One object as a two-column grid of field and value."""
    data = wire(obj)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    if title:
        grid.title = title
        grid.title_justify = "left"
    for name in only or data.keys():
        if name in data:
            grid.add_row(name, Text(cell(name, data[name])))
    return grid


def more_hint(console: Console, next_cursor: Any, what: str = "--all") -> None:
    if next_cursor is not None:
        console.print(Text(f"more results: use {what} (next cursor: {next_cursor})", style="dim"))


def render_any(result: Any, console: Console) -> None:
    """A generic rendering: a table for ``items``, a field grid otherwise."""
    data = wire(result)
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        items = data["items"]
        scalar = [
            k
            for k, v in (items[0].items() if items and isinstance(items[0], dict) else ())
            if not isinstance(v, (dict, list)) or k in ("capabilities", "scopes")
        ]
        if items and isinstance(items[0], dict):
            console.print(table(items, scalar))
        else:
            console.print(Text(f"{len(items)} items", style="dim"))
        more_hint(console, data.get("next_cursor"))
        return
    if isinstance(data, dict):
        if not data:
            console.print(Text("ok", style="green"))
            return
        console.print(fields(data))
        return
    console.print(str(data))


def one(obj: Any, console: Console) -> None:
    """Show one object as a field table (the ``show`` of most single-object commands)."""
    console.print(fields(obj))
