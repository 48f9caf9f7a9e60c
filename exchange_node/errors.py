"""The one error shape every layer uses.

Every rejection the node makes carries a stable machine-readable ``code``
(lower_snake_case, never reworded once released), a ``message`` a person can act on,
and, where one field is to blame, the ``field`` (a dotted path such as
``document.number``). The local API turns these into RFC 9457 problem details; the
CLI prints them on one line; the audit log records the code only.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base class for errors with a stable code.

    Subclasses set ``status`` (the HTTP status the local API answers with).
    """

    status: int = 400

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field: {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field


class ValidationError(ExchangeError):
    """Input that does not meet the documented format or rules."""

    status = 422


class ConflictError(ExchangeError):
    """A request that is well-formed but not allowed in the current state."""

    status = 409


class NotFoundError(ExchangeError):
    status = 404
