"""Assertions shared by the MCP tests (imported as ``mcp_helpers``)."""

from __future__ import annotations

import json
from typing import Any


def problem_of(result: Any) -> dict[str, Any]:
    """The problem JSON of a failed ``tools/call``: an error result, never an exception."""
    assert result.is_error, result
    body: dict[str, Any] = json.loads(result.content[0].text)
    assert body["code"] and body["detail"] and body["type"].endswith(body["code"])
    return body
