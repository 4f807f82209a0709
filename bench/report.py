"""How every benchmark ends: a table of its figures, then ONE JSON line (the last)."""

from __future__ import annotations

import json
from typing import Any


def figures(out: dict[str, Any], width: int = 12) -> None:
    print(f"\n{'figure':<28}{'value':>{width}}")
    for key, value in out.items():
        print(f"{key:<28}{value!s:>{width}}")
    print(json.dumps(out))
