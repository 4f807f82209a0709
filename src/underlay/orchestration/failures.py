"""Standard failure classes for a task attempt, and what each one does.

Every failure of an attempt falls in one class, the same way everywhere:

* ``transient`` — retryable errors (``unavailable``, ``busy``, ``timeout``...) and plain
  exceptions out of a handler: retried with exponential backoff and jitter until the
  task's ``max_attempts``; then it is ``failed``.
* ``permanent`` — errors that another try will not fix (``invalid_input``, ``not_found``,
  ``conflict``...): ``failed`` at once.
* ``needs_human`` — ``permission_denied``, ``unauthenticated``, or ``NeedsHuman`` raised
  by a handler: the task waits on an escalation in the inbox (with the error as context).
* ``budget`` — ``budget_exceeded``: the same wait, so that a human can top the budget up.

A final failure (permanent, or transient on the last attempt) first runs the
compensations of the steps done (``run.step(..., compensate=undo)``), last first; the
task's error lists them under ``compensated``.

A human resolves such an escalation with ``{"retry": true}`` (the task runs again; the
wait is not an attempt) or ``{"retry": false}`` (the task is ``failed``).
"""

from __future__ import annotations

from typing import Any, Literal

from underlay import errors

FailureClass = Literal["transient", "permanent", "needs_human", "budget"]


class NeedsHuman(Exception):
    """Raise from a handler when only a person can unblock the task (with a reason)."""


def classify(exc: BaseException) -> FailureClass:
    if isinstance(exc, NeedsHuman):
        return "needs_human"
    if isinstance(exc, errors.BudgetExceeded):
        return "budget"
    if isinstance(exc, errors.PermissionDenied | errors.Unauthenticated):
        return "needs_human"
    if isinstance(exc, errors.UnderlayError):
        return "transient" if exc.retryable else "permanent"
    return "transient"  # a handler's own exception: another attempt may well succeed


def describe(exc: BaseException) -> dict[str, Any]:
    """The error as a task or an escalation records it (code and message; no traceback),
    with the steps compensated, if the failure was final and some were."""
    if isinstance(exc, errors.UnderlayError):
        out: dict[str, Any] = {"code": exc.code, "message": exc.message}
    else:
        code = "needs_human" if isinstance(exc, NeedsHuman) else "handler_error"
        out = {"code": code, "message": f"{type(exc).__name__}: {exc}"}
    out["class"] = classify(exc)
    if getattr(exc, "compensated", None):
        out["compensated"] = list(exc.compensated)  # type: ignore[attr-defined]
    return out
