"""What a client is told of an error: one mapping from exceptions to the parts of a gRPC
status, for the status that ends a call (`runtime.guard.status_for`) and for an error
answered on a stream's own message (CheckStream's CheckError).

A `PatternError` becomes its category's code, its reason, its message, the field at fault
for an `InvalidArgument`, and its retry delay; anything else is a bug: INTERNAL, logged
with an incident id that the message repeats (the client learns no more of it)."""

import logging
import uuid
from datetime import timedelta
from typing import NamedTuple

from google.rpc import code_pb2

from patterns_server.core.errors import InvalidArgument, PatternError

logger = logging.getLogger(__name__)
OVERLOAD_RETRY = timedelta(milliseconds=250)  # the wait asked of a caller turned away


class Failure(NamedTuple):
    """The parts of a status: the google.rpc.Code, the ErrorInfo reason, the message, the
    BadRequest field at fault and its description, the RetryInfo delay."""

    code: int
    reason: str
    message: str
    field: str = ""
    description: str = ""
    retry_after: timedelta | None = None


def failure_of(error: Exception, method: str) -> Failure:
    """What a client of `method` is told of `error`."""
    if not isinstance(error, PatternError):
        incident = uuid.uuid4().hex[:12]
        logger.error("internal error %s in %s", incident, method, exc_info=error)
        return Failure(code_pb2.INTERNAL, "INTERNAL", f"internal error (incident {incident})")
    field, description = "", ""
    if isinstance(error, InvalidArgument) and error.field:
        field, description = error.field, error.description
    # A category is named as its google.rpc.Code.
    code = code_pb2.Code.Value(error.category.value)
    return Failure(code, error.reason, error.message, field, description, error.retry_after)
