"""The errors a pattern raises for the caller's mistakes: plain Python, no gRPC.

`rpc_errors` turns them (and Redis failures) into gRPC statuses; a pattern used without
gRPC raises them as ordinary exceptions.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (`checks[2].policy.limit`) and what is wrong."""

    field: str
    description: str


class PatternError(Exception):
    """Base of the errors a caller can act on."""


class InvalidArgument(PatternError):
    """The request breaks a documented limit; `violations` name the fields."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.violations = (FieldViolation(field, description),)

    def under(self, parent: str) -> "InvalidArgument":
        """The same error, its field paths nested under `parent` (for batch requests)."""
        (violation,) = self.violations
        return InvalidArgument(f"{parent}.{violation.field}", violation.description)
