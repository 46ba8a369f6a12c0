"""The exceptions of patterns_client: every failure of a call, as a Python exception.

A failed call raises the subclass of `PatternsError` that matches its gRPC status code
(`InvalidArgument`, `NotFound`, `Unavailable`, ...), carrying what the server's rich status
said: `reason` (the stable `google.rpc.ErrorInfo` reason, for programs to switch on),
`field_violations` (from `google.rpc.BadRequest`) and `retry_after` (from
`google.rpc.RetryInfo`). No public method lets a bare `grpc.RpcError` escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status

if TYPE_CHECKING:
    from patterns_client.ratelimit import Decision

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "LockNotAcquired",
    "NotFound",
    "PatternsError",
    "PermissionDenied",
    "RateLimited",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "falls_back",
]


@dataclass(frozen=True)
class FieldViolation:
    """A request field that broke a documented limit, and what is wrong with it."""

    field: str
    description: str


class PatternsError(Exception):
    """A call failed. `code` is its gRPC status code (None for the client's own errors),
    `message` the server's words, `reason` the ErrorInfo reason ("" when none)."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        retry_after: timedelta | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
        self.field_violations = field_violations

    def __str__(self) -> str:
        name = self.code.name if self.code is not None else type(self).__name__
        reason = f" ({self.reason})" if self.reason and self.reason != name else ""
        return f"{name}{reason}: {self.message}"


class InvalidArgument(PatternsError):
    """The request broke a documented limit; `field_violations` names the fields."""


class NotFound(PatternsError):
    """What the request names does not exist (a session that ended, say)."""


class AlreadyExists(PatternsError):
    """What the request would create exists already."""


class FailedPrecondition(PatternsError):
    """The request is valid, but not in the state things are in."""


class Aborted(PatternsError):
    """The call lost a race it cannot win now (a lock's lease that was lost, say)."""


class ResourceExhausted(PatternsError):
    """The server is overloaded (reason OVERLOADED, with `retry_after`), the caller's
    tenant is at its share of the server's limits (TENANT_OVERLOADED, with `retry_after`),
    a stream's reader fell behind (SLOW_CONSUMER), or the request was too large."""


class Unavailable(PatternsError):
    """The server or its Redis cannot serve now; the same call may succeed after
    `retry_after`."""


class DeadlineExceeded(PatternsError):
    """The call's deadline passed before the answer came."""


class Cancelled(PatternsError):
    """The call was cancelled."""


class PermissionDenied(PatternsError):
    """The caller may not do this: its tenant may not call this service (reason
    SERVICE_NOT_ALLOWED)."""


class Unauthenticated(PatternsError):
    """The caller did not say who it is (reason MISSING_CREDENTIALS: no API key, and no
    client certificate that names a tenant), not convincingly (INVALID_API_KEY), or its
    stream's key was revoked meanwhile (CREDENTIALS_REVOKED)."""


class Unimplemented(PatternsError):
    """The server does not offer this call (an older server, say)."""


class Internal(PatternsError):
    """The server failed unexpectedly; its message carries an incident id for its log."""


class RateLimited(PatternsError):
    """Raised by `limited`-decorated functions when the rate limit refuses the call: try
    again after `retry_after` (a timedelta, never None here; `retry_after_seconds` in
    whole seconds, rounded up). `decision` is the whole answer: `decision.headers()` gives
    a 429's headers::

        except RateLimited as refused:
            return Response("slow down", 429, headers=refused.decision.headers())
    """

    retry_after: timedelta
    decision: Decision

    def __init__(self, key: str, decision: Decision | timedelta) -> None:
        if isinstance(decision, timedelta):  # the older form: only the wait
            from patterns_client.ratelimit import Decision

            decision = Decision(False, 0, 0, decision, decision)
        retry_after = decision.retry_after
        super().__init__(
            f"rate limit reached for {key!r}: retry after {retry_after.total_seconds():.3f}s",
            reason="RATE_LIMITED",
            retry_after=retry_after,
        )
        self.key = key
        self.decision = decision

    @property
    def retry_after_seconds(self) -> int:
        """The wait in whole seconds, rounded up, at least 1: HTTP's `Retry-After`."""
        return self.decision.retry_after_seconds


class LockNotAcquired(PatternsError):
    """`locks.hold` did not get the lock within its wait."""

    def __init__(self, name: str) -> None:
        super().__init__(f"lock {name!r} was not acquired within the wait", reason="NOT_ACQUIRED")
        self.name = name


# What a fallback covers: the server or its Redis unreachable or too slow, or the server
# (or the caller's share of it) overloaded. Not covered: what the caller must fix (a wrong
# key, a refused argument, a request too large), which a fallback would only hide.
OVERLOAD_REASONS = frozenset({"OVERLOADED", "TENANT_OVERLOADED"})


def falls_back(error: PatternsError) -> bool:
    """Whether a recipe's fallback covers `error`: UNAVAILABLE (the server or its Redis
    unavailable, or no connection could be made), DEADLINE_EXCEEDED (no answer within the
    recipe's `fallback_after`: a paused server or Redis), RESOURCE_EXHAUSTED with reason
    OVERLOADED or TENANT_OVERLOADED."""
    if isinstance(error, Unavailable | DeadlineExceeded):
        return True
    return isinstance(error, ResourceExhausted) and error.reason in OVERLOAD_REASONS


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}
# google.rpc.Code numbers (a CheckError's `code`) to gRPC's status codes.
_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


def from_rpc_error(error: grpc.RpcError) -> PatternsError:
    """The PatternsError a failed call (sync or asyncio) stands for."""
    call: Any = error
    code: grpc.StatusCode = call.code()
    reason = ""
    retry_after = None
    violations: list[FieldViolation] = []
    for packed in _status_details(call):
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason = info.reason
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta()
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return _error(code, call.details() or "", reason, retry_after, tuple(violations))


def from_check_error(
    code: int, message: str, reason: str, field: str, retry_after: timedelta | None
) -> PatternsError:
    """The PatternsError of one check's error on a CheckStream (a `CheckError`: the status
    a unary Check would have ended with, flattened): the same class, reason, field and
    retry_after as that unary failure raises."""
    status = _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    violations: tuple[FieldViolation, ...] = ()
    if field:
        # The server's message is "<field>: <description>"; BadRequest carries the
        # description alone, and so does the unary failure's FieldViolation.
        description = message.removeprefix(f"{field}: ")
        violations = (FieldViolation(field, description),)
    return _error(status, message, reason, retry_after, violations)


def copy_error(error: PatternsError) -> PatternsError:
    """A new exception equal to `error`, for one caller of several that share a failure
    (one exception object raised in many threads would share its traceback)."""
    return type(error)(
        error.message,
        code=error.code,
        reason=error.reason,
        retry_after=error.retry_after,
        field_violations=error.field_violations,
    )


def _error(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    retry_after: timedelta | None,
    violations: tuple[FieldViolation, ...],
) -> PatternsError:
    kind = _BY_CODE.get(code, Internal)
    return kind(
        message, code=code, reason=reason, retry_after=retry_after, field_violations=violations
    )


def _status_details(call: Any) -> list[Any]:
    """The details of the google.rpc.Status the call's trailers carry (none when they
    carry none, or one that does not agree with the call's own code and message)."""
    try:
        status = rpc_status.from_call(call)
    except (ValueError, DecodeError):
        return []
    return list(status.details) if status is not None else []
