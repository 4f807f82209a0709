"""underlay: an operating system for AI agents.

from underlay import Underlay
ul = Underlay.local()                  # embedded kernel, SQLite under ~/.underlay
ul = Underlay.connect(url, token)      # the same API, over HTTP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AsyncUnderlay", "Money", "Underlay", "UnderlayError", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: `import underlay` stays cheap
    if name in ("Underlay", "AsyncUnderlay"):
        from underlay import sdk

        return getattr(sdk, name)
    if name == "Money":
        from underlay.types import Money

        return Money
    if name == "UnderlayError":
        from underlay.errors import UnderlayError

        return UnderlayError
    raise AttributeError(name)
