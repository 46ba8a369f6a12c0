"""patterns_client: the Python client of patterns-server.

    from datetime import timedelta
    from patterns_client import Client, Policy

    with Client("localhost:50051") as client:
        decision = client.ratelimit.check("user:42", Policy.gcra(100, timedelta(minutes=1)))

`Client("host:50051", api_key=..., tls=True)` calls a server that has tenants, over TLS
(`tls=TLS(ca=..., cert=..., key=...)` for a private CA and a client certificate).
`patterns_client.aio.Client` is the same on asyncio. Arguments and results are Python
values (str, bytes, timedelta, datetime, frozen dataclasses); every failure is a
`PatternsError` (see `patterns_client.errors`). The generated stubs stay available as
`patterns.<service>.v1`.
"""

from importlib.metadata import version as _version

from patterns_client import aio
from patterns_client._channel import TLS
from patterns_client._client import Client
from patterns_client.cache import Entry
from patterns_client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    LockNotAcquired,
    NotFound,
    PatternsError,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from patterns_client.events import Event, Gap
from patterns_client.leaderboard import Board, Mode, Order, Page, Period, Standing, Submitted
from patterns_client.locks import AsyncHeldLock, HeldLock, Lease, LockState, ReleaseStatus
from patterns_client.ratelimit import Algorithm, Decision, Policy
from patterns_client.sessions import Session, SessionList
from patterns_client.streams import (
    Appended,
    AsyncMessage,
    ConsumerInfo,
    GroupInfo,
    Message,
    Retention,
    Start,
    StreamEntry,
    StreamInfo,
)

# The installed distribution's, the number in pyproject.toml (and VERSION).
__version__ = _version("patterns-client")

__all__ = [
    "TLS",
    "Aborted",
    "Algorithm",
    "AlreadyExists",
    "Appended",
    "AsyncHeldLock",
    "AsyncMessage",
    "Board",
    "Cancelled",
    "Client",
    "ConsumerInfo",
    "DeadlineExceeded",
    "Decision",
    "Entry",
    "Event",
    "FailedPrecondition",
    "FieldViolation",
    "Gap",
    "GroupInfo",
    "HeldLock",
    "Internal",
    "InvalidArgument",
    "Lease",
    "LockNotAcquired",
    "LockState",
    "Message",
    "Mode",
    "NotFound",
    "Order",
    "Page",
    "PatternsError",
    "Period",
    "PermissionDenied",
    "Policy",
    "RateLimited",
    "ReleaseStatus",
    "ResourceExhausted",
    "Retention",
    "Session",
    "SessionList",
    "Standing",
    "Start",
    "StreamEntry",
    "StreamInfo",
    "Submitted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "aio",
]
