"""Domain errors. Each carries a stable code; the entry points map them to HTTP/task outcomes."""

from __future__ import annotations


class IdentityError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "identity_error"


class InvalidInput(IdentityError):
    """The caller sent something the rules cannot accept (maps to 400)."""

    code = "invalid_input"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Unavailable(IdentityError):
    """The database could not be reached or stayed contended past every retry (maps to 503)."""

    code = "unavailable"

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        #: Why, as a short stable label: pool_timeout, unreachable, statement_timeout,
        #: contention, broker... (metrics and logs; never shown as the message).
        self.reason = reason


class TransientConflict(IdentityError):
    """Concurrent writers moved the data under us; the unit of work runs again."""

    code = "transient_conflict"
