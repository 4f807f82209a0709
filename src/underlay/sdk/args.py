"""Positional arguments of SDK methods: they fill a syscall's input fields in order."""

from __future__ import annotations

from typing import Any

from underlay import errors


def fill(syscall: str, names: list[str], args: tuple[Any, ...], fields: dict[str, Any]) -> None:
    """Put ``args`` into ``fields`` under ``names`` in order; clear errors on excess or
    on a field given both ways."""
    if len(args) > len(names):
        raise errors.InvalidInput(f"{syscall} takes at most {len(names)} positional arguments")
    for name, value in zip(names, args, strict=False):
        if name in fields:
            raise errors.InvalidInput(f"{name} given twice", field=name)
        fields[name] = value
