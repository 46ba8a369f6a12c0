"""The errors patterns and storage raise: plain Python, no gRPC.

Each error carries its category (what kind of failure it is, named like the gRPC code it
becomes) and a stable UPPER_SNAKE `reason` that clients switch on. `runtime.guard` turns
them into statuses through one table; a pattern used without gRPC raises them as ordinary
exceptions. Anything else that escapes a pattern is a bug: INTERNAL.
"""

import enum
from datetime import timedelta
from typing import ClassVar


class Category(enum.Enum):
    """What went wrong, in the vocabulary of google.rpc.Code (without depending on it)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"


class PatternError(Exception):
    """A failure the caller is told about: `message` for people, `reason` for programs,
    and `retry_after` when trying again later is the remedy."""

    category: ClassVar[Category]
    default_reason: ClassVar[str]

    def __init__(
        self, message: str, reason: str | None = None, retry_after: timedelta | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.retry_after = retry_after


class InvalidArgument(PatternError):
    """The request breaks a documented limit: `field` is its path in the request
    (`checks[2].policy.limit`), `description` says what is wrong."""

    category = Category.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, reason: str | None = None) -> None:
        super().__init__(f"{field}: {description}" if field else description, reason)
        self.field = field
        self.description = description

    def under(self, parent: str) -> "InvalidArgument":
        """The same error, its field path nested under `parent` (for batch requests)."""
        return InvalidArgument(f"{parent}.{self.field}", self.description, self.reason)


class Unauthenticated(PatternError):
    """The call carries no credentials the server accepts (no API key, an unknown one, or
    one revoked since a stream began)."""

    category = Category.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(PatternError):
    """The caller is known, and may not do this (call a service its tenant does not have)."""

    category = Category.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(PatternError):
    """What the request names does not exist (a session that expired, say)."""

    category = Category.NOT_FOUND
    default_reason = "NOT_FOUND"


class Aborted(PatternError):
    """The operation lost a race it cannot win now (a lease that lapsed, say)."""

    category = Category.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(PatternError):
    """A bound was reached: the server is overloaded, or a stream's consumer fell behind."""

    category = Category.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(PatternError):
    """Redis (or the server) cannot serve now; the same request may succeed later."""

    category = Category.UNAVAILABLE
    default_reason = "UNAVAILABLE"

    def __init__(
        self, message: str, reason: str | None = None, retry_after: timedelta | None = None
    ) -> None:
        super().__init__(message, reason, retry_after or timedelta(seconds=1))
