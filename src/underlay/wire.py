"""What the SDK and the REST server agree on: paths, headers, limits."""

from __future__ import annotations

API_PREFIX = "/v1"
IDEMPOTENCY_HEADER = "Idempotency-Key"
PROBLEM_JSON = "application/problem+json"


def route_path(syscall: str) -> str:
    """``agents.create`` is served at ``POST /v1/agents/create``."""
    return f"{API_PREFIX}/{syscall.replace('.', '/')}"
