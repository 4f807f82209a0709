"""The one error tree of underlay.

Every failure that crosses a surface (SDK, REST, CLI, MCP) is an ``UnderlayError``
with a stable ``code``, an HTTP ``status``, a ``retryable`` flag and, where one input
field is to blame, that ``field``. Backend errors (database, drivers) are translated
into this tree at the boundary where they occur; nothing else escapes the kernel.

    UnderlayError
    ├── InvalidInput            400 invalid_input        the request is malformed
    │   └── PayloadTooLarge     413 payload_too_large
    ├── Unauthenticated         401 unauthenticated      missing / forged / expired / revoked
    ├── PermissionDenied        403 permission_denied    capability or scope missing
    ├── NotFound                404 not_found            absent, or in another org
    ├── Conflict                409 conflict             state forbids the operation
    │   ├── IdempotencyKeyReused 409 idempotency_key_reused
    │   └── StaleLease          409 stale_lease          a fencing token was overtaken
    ├── BudgetExceeded          402 budget_exceeded      not enough budget; nothing ran
    ├── LimitExceeded           429 limit_exceeded       quota or enrollment limit
    ├── Unavailable             503 unavailable          retryable: backend down
    │   ├── CircuitOpen         503 circuit_open
    │   └── Busy                503 busy                 lock or contention; retry soon
    ├── Timeout                 504 timeout              retryable
    └── InternalError           500 internal             a bug; reported, never a secret
"""

from __future__ import annotations

from typing import Any, ClassVar


class UnderlayError(Exception):
    """Base of every underlay error. ``code`` is stable and safe to branch on."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by every surface (RFC 9457 members plus our own)."""
        body: dict[str, Any] = {
            "type": f"https://underlay.dev/errors/{self.code}",
            "title": self.code.replace("_", " "),
            "status": self.status,
            "detail": self.message,
            "code": self.code,
            "retryable": self.retryable,
        }
        if self.field is not None:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body

    @staticmethod
    def from_dict(body: dict[str, Any]) -> UnderlayError:
        """Rebuild the typed error from its JSON form (used by the HTTP client)."""
        cls = ERRORS_BY_CODE.get(str(body.get("code")), UnderlayError)
        err = cls(
            str(body.get("detail", "")), field=body.get("field"), **(body.get("details") or {})
        )
        return err

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class InvalidInput(UnderlayError):
    code, status = "invalid_input", 400


class PayloadTooLarge(InvalidInput):
    code, status = "payload_too_large", 413


class Unauthenticated(UnderlayError):
    code, status = "unauthenticated", 401


class PermissionDenied(UnderlayError):
    code, status = "permission_denied", 403


class NotFound(UnderlayError):
    code, status = "not_found", 404


class Conflict(UnderlayError):
    code, status = "conflict", 409


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class StaleLease(Conflict):
    code = "stale_lease"


class BudgetExceeded(UnderlayError):
    code, status = "budget_exceeded", 402


class LimitExceeded(UnderlayError):
    code, status = "limit_exceeded", 429


class Unavailable(UnderlayError):
    code, status, retryable = "unavailable", 503, True


class CircuitOpen(Unavailable):
    code = "circuit_open"


class Busy(Unavailable):
    code = "busy"


class Timeout(UnderlayError):
    code, status, retryable = "timeout", 504, True


class InternalError(UnderlayError):
    code, status = "internal", 500


def _all_subclasses(cls: type[UnderlayError]) -> list[type[UnderlayError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


ERRORS_BY_CODE: dict[str, type[UnderlayError]] = {c.code: c for c in _all_subclasses(UnderlayError)}
