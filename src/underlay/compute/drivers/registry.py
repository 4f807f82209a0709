"""Sandbox drivers by name: built-in ones, and third-party ones from entry points.

A package adds a driver by declaring an entry point in the group
``underlay.compute.drivers`` (``name = "package.module:DriverClass"``); the class is
imported only when a configuration names it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from underlay import errors
from underlay.compute.interface import SandboxDriver

BUILTIN = {"bwrap": "underlay.compute.drivers.bwrap:BwrapDriver"}
GROUP = "underlay.compute.drivers"


def load_driver(name: str, home: Path) -> SandboxDriver:
    """An instance of the driver called ``name``; NotFound listing the known ones."""
    target = BUILTIN.get(name)
    if target is None:
        found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
        target = found.get(name)
        if target is None:
            known = ", ".join(sorted({*BUILTIN, *found}))
            raise errors.NotFound(
                f"no sandbox driver {name!r} (known: {known})", field="compute.driver"
            )
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    driver: SandboxDriver = cls(home)
    return driver
