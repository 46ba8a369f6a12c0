"""Which redis-py errors mean "Redis cannot serve now", and what the caller is told then.

A Redis reply that refuses a request for a passing reason (unreachable, too slow, loading,
failing over, read-only, out of memory, busy with a script) becomes `Unavailable`; any
other error is left as it is, for the runtime to report as an internal error.
"""

import builtins
import re

from redis.exceptions import (
    ClusterCrossSlotError,
    ClusterError,
    ConnectionError,
    CrossSlotTransactionError,
    InvalidPipelineStack,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from patterns_server.core.errors import Unavailable

# redis-py turns most such replies into classes; from inside a script (on Redis 6.2) they
# arrive as text.
_UNAVAILABLE_ERRORS = (
    ConnectionError,
    TimeoutError,
    ClusterError,
    SlotNotCoveredError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)
_PROGRAMMING_ERRORS = (ClusterCrossSlotError, CrossSlotTransactionError, InvalidPipelineStack)
_UNAVAILABLE_REPLY = re.compile(
    r"(^|-)(OOM|READONLY|LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|NOREPLICAS)\b"
)


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` means Redis cannot serve now, as opposed to a request it refuses."""
    if isinstance(error, _UNAVAILABLE_ERRORS):
        return True
    if isinstance(error, RedisClusterException):  # e.g. "Redis Cluster cannot be connected"
        return not isinstance(error, _PROGRAMMING_ERRORS)
    return isinstance(error, ResponseError) and bool(_UNAVAILABLE_REPLY.search(str(error)))


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the connection itself failed (not a reply of Redis's)."""
    return isinstance(error, ConnectionError | TimeoutError)


def translated(error: BaseException) -> BaseException:
    """The error a caller should see for `error` raised by redis-py (or by a timeout
    around a Redis call)."""
    if isinstance(error, TimeoutError | builtins.TimeoutError):
        return Unavailable("Redis did not answer in time", "REDIS_TIMEOUT")
    if is_unavailable(error):
        return Unavailable("Redis is unreachable or cannot serve now", "REDIS_UNAVAILABLE")
    return error
