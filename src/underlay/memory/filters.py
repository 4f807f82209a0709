"""Search and list filters over a memory's fields and metadata.

A filter names a field — ``actor``, ``key``, ``value``, ``created_at``, ``valid_from``, or
``metadata.NAME`` (a bare ``NAME`` means the same) — an operator (``eq``, ``ne``, ``in``,
``gte``, ``lte``, ``contains``) and a value. A filter that cannot apply (``in`` without a
list, ``gte`` on text against a number) is an ``invalid_input`` error naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from underlay import errors
from underlay.memory.interface import Row
from underlay.memory.models import Filter

BUILTIN = {"actor", "key", "value", "created_at", "valid_from"}


def _value(row: Row, field: str) -> Any:
    if field in BUILTIN:
        return getattr(row, field)
    return row.metadata.get(field.removeprefix("metadata."))


def check(filters: list[Filter]) -> None:
    """Reject filters that could never be evaluated, before anything runs."""
    for i, f in enumerate(filters):
        where = f"filters[{i}]"
        if f.op == "in" and not isinstance(f.value, list):
            raise errors.InvalidInput(f"{where}: 'in' needs a list value", field=where)
        if f.op in ("gte", "lte") and not isinstance(f.value, (int, float, str)):
            raise errors.InvalidInput(
                f"{where}: '{f.op}' needs a number, text or time", field=where
            )
        if f.field.startswith("_") or (not f.field.startswith("metadata.") and "." in f.field):
            raise errors.InvalidInput(f"{where}: unknown field {f.field!r}", field=where)


def _comparable(have: Any, want: Any) -> tuple[Any, Any]:
    if isinstance(have, float) and isinstance(want, str):  # times are stored as epoch
        try:
            return have, datetime.fromisoformat(want).timestamp()
        except ValueError:
            return str(have), want
    return have, want


def matches(row: Row, filters: list[Filter]) -> bool:
    for f in filters:
        have = _value(row, f.field)
        if f.op == "eq" and have != f.value:
            return False
        if f.op == "ne" and have == f.value:
            return False
        if f.op == "in" and have not in f.value:
            return False
        if f.op == "contains" and (have is None or str(f.value) not in str(have)):
            return False
        if f.op in ("gte", "lte"):
            if have is None:
                return False
            a, b = _comparable(have, f.value)
            try:
                if (a < b) if f.op == "gte" else (a > b):
                    return False
            except TypeError:
                return False
    return True
