"""What the comms layer writes never carries a secret.

``scrub(value)`` is the audit trail's redaction (``kernel/audit.redact``: keys named like
secrets, whole token-shaped strings) plus token-shaped strings *inside* text — a check's
output that printed a token, say — replaced by ``[redacted]``. Events and messages are
scrubbed before they are written.
"""

from __future__ import annotations

import re
from typing import Any

from underlay.kernel.audit import REDACTED, redact

_TOKEN_IN_TEXT = re.compile(r"ul_[A-Za-z0-9_\-]{20,}")


def scrub(value: Any) -> Any:
    """A copy of ``value`` (JSON-shaped) with every secret the redaction knows removed."""
    return _text(redact(value))


def _text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, str):
        return _TOKEN_IN_TEXT.sub(REDACTED, value)
    return value


def first_line(text: str, limit: int = 200) -> str:
    """The first non-blank line of ``text``, scrubbed and cut to ``limit`` characters."""
    for line in text.splitlines():
        if line.strip():
            return str(scrub(line.strip()))[:limit]  # scrubbed whole, then cut
    return ""


def tail(text: str, limit: int = 2000) -> str:
    """The last ``limit`` characters of ``text`` (where a failure is printed), scrubbed
    before the cut so that no token is cut into a fragment the pattern would miss."""
    return str(scrub(text))[-limit:]
