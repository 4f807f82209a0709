"""Turning shell words into syscall input: ``k=v`` pairs, ``k:=json`` and ``--data``.

Conventions (as in HTTPie): ``key=value`` is a string (the kernel's validation coerces
``limit=5`` to a number), ``key:=json`` is a raw JSON value (``caps:='["a.*"]'``,
``force:=true``). ``--data`` takes a JSON object, ``@file`` or ``@-`` for stdin; pairs
override its keys. Malformed words are ``InvalidInput`` naming the field, like any other.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from underlay import errors


def pairs(items: list[str] | None, field: str) -> dict[str, str]:
    """``["k=v", ...]`` as a dict of strings (``--meta team=infra``)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.InvalidInput(f"expected key=value, got {item!r}", field=field)
        out[key] = value
    return out


def read_data(data: str | None, field: str = "data") -> dict[str, Any]:
    """A JSON-object option (``--data``, or ``--<field>``): inline JSON, ``@path`` or
    ``@-`` (stdin)."""
    if data is None:
        return {}
    text = data
    if data.startswith("@"):
        source = data[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise errors.InvalidInput(
                f"cannot read {source}: {exc.strerror}", field=field
            ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.InvalidInput(f"--{field} is not valid JSON: {exc.msg}", field=field) from None
    if not isinstance(value, dict):
        raise errors.InvalidInput(f"--{field} must be a JSON object", field=field)
    return value


def call_payload(data: str | None, words: list[str] | None) -> dict[str, Any]:
    """``--data`` merged with ``key=value`` / ``key:=json`` words (the words win)."""
    payload = read_data(data)
    for word in words or []:
        key, sep, value = word.partition("=")
        if not sep or not key or key == ":":
            raise errors.InvalidInput(
                f"expected key=value or key:=json, got {word!r}", field="data"
            )
        if key.endswith(":"):
            key = key[:-1]
            try:
                payload[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise errors.InvalidInput(
                    f"{key}: not valid JSON after ':=': {exc.msg}", field=key
                ) from None
        else:
            payload[key] = value
    return payload
