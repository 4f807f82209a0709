"""The one error tree: stable codes, statuses, retryable flags, JSON round trip."""

from __future__ import annotations

import pytest

from underlay import errors

EXPECTED = {
    "invalid_input": (400, False), "payload_too_large": (413, False),
    "unauthenticated": (401, False), "permission_denied": (403, False),
    "not_found": (404, False), "conflict": (409, False), "idempotency_key_reused": (409, False),
    "stale_lease": (409, False),
    "budget_exceeded": (402, False), "limit_exceeded": (429, False),
    "unavailable": (503, True), "circuit_open": (503, True), "busy": (503, True),
    "timeout": (504, True), "internal": (500, False),
}


def test_every_code_has_its_status_and_retryable_flag() -> None:
    table = {c: (cls.status, cls.retryable) for c, cls in errors.ERRORS_BY_CODE.items()}
    table.pop("error")
    assert table == EXPECTED


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_errors_round_trip_through_their_json_form(code: str) -> None:
    cls = errors.ERRORS_BY_CODE[code]
    err = cls("something happened", field="name", limit=3)
    body = err.to_dict()
    assert body["type"].endswith("/" + code) and body["status"] == cls.status
    back = errors.UnderlayError.from_dict(body)
    assert type(back) is cls
    assert (back.message, back.field, back.details) == ("something happened", "name", {"limit": 3})


def test_subclasses_can_be_caught_by_their_family() -> None:
    assert issubclass(errors.CircuitOpen, errors.Unavailable)
    assert issubclass(errors.IdempotencyKeyReused, errors.Conflict)
    assert issubclass(errors.PayloadTooLarge, errors.InvalidInput)


def test_an_unknown_code_becomes_the_base_error() -> None:
    back = errors.UnderlayError.from_dict({"code": "from_the_future", "detail": "?"})
    assert type(back) is errors.UnderlayError and back.message == "?"
