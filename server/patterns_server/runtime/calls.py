"""The calls in progress: what is admitted, what is refused, and what shutdown must end.

- Requests are read by `deserializer`, which never raises: bytes that are not a valid
  message become a `Malformed` request, which `guard` answers INVALID_ARGUMENT (gRPC's own
  answer would be UNKNOWN with a traceback in the log, a log-flooding lever).
- Unary calls are admitted up to `max_calls` at once and `max_bytes` of requests in
  progress; beyond either, `admit` refuses with RESOURCE_EXHAUSTED (reason OVERLOADED,
  with a RetryInfo), counted in a log line at most every 10 seconds. The explicit cap keeps
  memory flat and answers overload plainly, where gRPC's own queue would cancel calls.
- Streams (server-streaming and bidi calls) are tracked so that shutdown can end them
  (`end_streams`), and so that a stream whose credentials are revoked by a new auth file
  ends (`revoke`).
- Each tenant may have its share of both limits (`max_concurrent_rpcs`, `max_streams` in
  the auth file): beyond it, RESOURCE_EXHAUSTED (reason TENANT_OVERLOADED), so one noisy
  team cannot take what the others need.
"""

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError, Message

from patterns_server.core.errors import (
    InvalidArgument,
    PatternError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from patterns_server.core.settings import Settings
from patterns_server.rpc.errors import OVERLOAD_RETRY
from patterns_server.runtime.auth import DEFAULT_TENANT, Credential, Tenant

logger = logging.getLogger(__name__)

SHUTTING_DOWN = Unavailable("the server is shutting down: reconnect", "SHUTTING_DOWN")
OVERLOAD_REPORT_SECONDS = 10.0
SHUTDOWN_QUIET_SECONDS = 0.1
SHUTDOWN_QUIET_TURNS = 5  # the quiet moment is as many turns of the event loop, at least

# The size of the request the current call's task read (set by `deserializer`, which
# gRPC runs in the task that then runs the handler).
_request_size: contextvars.ContextVar[int] = contextvars.ContextVar("request_size", default=0)


@dataclass(frozen=True)
class Malformed:
    """A request whose bytes are not a valid message of its type."""

    error: InvalidArgument


# What a request is read as when its call will be refused anyway (see `deserializer`).
NOT_READ = object()


def deserializer(message_class: type[Message], calls: "Calls | None") -> Callable[[bytes], Any]:
    """Reads requests of `message_class`; a `Malformed` for bytes that are not one. With
    `calls` (unary methods), a request whose call `calls` will refuse is not even parsed
    (`NOT_READ`): overload must not cost the memory of the requests it refuses. (gRPC runs
    this in the call's task, then the handler, with nothing in between: the guard's
    admission sees the numbers this saw.)"""
    name = message_class.DESCRIPTOR.full_name
    malformed = Malformed(
        InvalidArgument(
            "",
            f"the request is not a valid {name} (is every string field UTF-8?)",
            "MALFORMED_REQUEST",
        )
    )
    parse = message_class.FromString

    def deserialize(data: bytes) -> Any:
        _request_size.set(len(data))
        if calls is not None and not calls.has_room(len(data)):
            return NOT_READ
        try:
            return parse(data)
        except DecodeError:
            return malformed

    return deserialize


def request_size() -> int:
    """The size in bytes of the current call's request."""
    return _request_size.get()


REVOKED = Unauthenticated(
    "the credentials of this stream were revoked: authenticate again", "CREDENTIALS_REVOKED"
)


@dataclass(eq=False)
class Stream:
    """An open stream (server-streaming or bidi), and what ends it when it must end before its time
    (shutdown, revoked credentials)."""

    task: "asyncio.Task[Any] | None"
    credential: Credential
    inside: bool = False  # suspended in the servicer's code (not in gRPC's write)
    ending: PatternError | None = None


@dataclass
class _Share:
    """A tenant's unary calls and streams in progress."""

    calls: int = 0
    streams: int = 0


@dataclass
class Calls:
    """The calls in progress (see the module), within the limits of `for_settings`."""

    max_calls: int
    max_bytes: int
    max_streams: int
    calls: int = 0
    bytes: int = 0
    _streams: set[Stream] = field(default_factory=set)
    _shares: dict[Tenant, _Share] = field(default_factory=dict)
    _shutting_down: bool = False
    _last_refused_at: float = 0.0
    _refused: int = 0
    _refused_reported: float = 0.0

    @classmethod
    def for_settings(cls, settings: Settings) -> "Calls":
        return cls(settings.max_concurrent_rpcs, settings.max_inflight_bytes, settings.max_streams)

    def has_room(self, size: int) -> bool:
        """Whether a unary call of `size` request bytes would be admitted now."""
        return (
            not self._shutting_down
            and self.calls < self.max_calls
            and self.bytes + size <= self.max_bytes
        )

    def admit(self, size: int, tenant: Tenant = DEFAULT_TENANT) -> PatternError | None:
        """Count a unary call of `size` request bytes of `tenant` in, or the error that
        refuses it; an admitted call is `release`d when it ends."""
        if not self.has_room(size):
            if self._shutting_down:
                self._last_refused_at = time.monotonic()
                return SHUTTING_DOWN
            return self._overloaded()
        share = self._share(tenant)
        if tenant.max_concurrent_rpcs is not None and share.calls >= tenant.max_concurrent_rpcs:
            return _tenant_overloaded(tenant, f"{tenant.max_concurrent_rpcs:,} calls")
        share.calls += 1
        self.calls += 1
        self.bytes += size
        return None

    def _share(self, tenant: Tenant) -> _Share:
        share = self._shares.get(tenant)
        if share is None:
            share = self._shares[tenant] = _Share()
        return share

    def _overloaded(self) -> ResourceExhausted:
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_reported >= OVERLOAD_REPORT_SECONDS:
            logger.warning(
                "overloaded: refused %d calls so far (%d calls, %d bytes of requests and %d "
                "streams in progress; limits %d calls, %d bytes, %d streams)",
                self._refused,
                self.calls,
                self.bytes,
                len(self._streams),
                self.max_calls,
                self.max_bytes,
                self.max_streams,
            )
            self._refused_reported = now
        return ResourceExhausted(
            "the server is at its limit of calls in progress: retry shortly",
            "OVERLOADED",
            OVERLOAD_RETRY,
        )

    def release(self, size: int, tenant: Tenant = DEFAULT_TENANT) -> None:
        self.calls -= 1
        self.bytes -= size
        share = self._shares[tenant]
        share.calls -= 1
        if not share.calls and not share.streams:  # tenants come and go with auth files
            del self._shares[tenant]

    async def shut(self, grace: float) -> None:
        """Answer every new call, unary or stream, with UNAVAILABLE (reason SHUTTING_DOWN,
        retry in a second: elsewhere), end the open streams, and wait up to `grace` seconds
        until the unary calls in progress are done and no call has come for a moment.

        The moment matters: gRPC cancels the calls it holds but has not handed over yet when
        the server stops, and clients keep sending until they hear that it is going. Told
        UNAVAILABLE with a RetryInfo, they back off (or go elsewhere) before it stops.

        The moment starts when shutdown does, and lasts SHUTDOWN_QUIET_TURNS turns of the
        event loop as well as SHUTDOWN_QUIET_SECONDS: on a busy machine a lagging loop has
        not yet seen the calls that came meanwhile (gRPC holds them), and each turn takes
        some of them in."""
        self._shutting_down = True
        self.end_streams()
        deadline = time.monotonic() + grace
        seen, quiet_turns = self._last_refused_at, 0
        while time.monotonic() < deadline:
            if self.calls or self._last_refused_at != seen:
                seen, quiet_turns = self._last_refused_at, 0
            elif quiet_turns >= SHUTDOWN_QUIET_TURNS:
                return
            await asyncio.sleep(SHUTDOWN_QUIET_SECONDS / SHUTDOWN_QUIET_TURNS)
            quiet_turns += 1

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return len(self._streams)

    def end_streams(self) -> None:
        """End every open stream (and any opened from now on) with UNAVAILABLE."""
        self._shutting_down = True
        for stream in self._streams:
            _end(stream, SHUTTING_DOWN)

    def revoke(self, still_valid: Callable[[Credential], bool]) -> int:
        """End with UNAUTHENTICATED the open streams whose credentials are no longer
        valid (a new auth file removed their key or tenant); how many."""
        revoked = [stream for stream in self._streams if not still_valid(stream.credential)]
        for stream in revoked:
            _end(stream, REVOKED)
        return len(revoked)

    def open_stream(self, credential: Credential) -> Stream | PatternError:
        """Count a stream in, or the error that refuses it (shutdown, too many streams)."""
        if self._shutting_down:
            self._last_refused_at = time.monotonic()
            return SHUTTING_DOWN
        if len(self._streams) >= self.max_streams:
            return self._overloaded()
        tenant = credential.tenant
        share = self._share(tenant)
        if tenant.max_streams is not None and share.streams >= tenant.max_streams:
            return _tenant_overloaded(tenant, f"{tenant.max_streams:,} streams")
        share.streams += 1
        stream = Stream(asyncio.current_task(), credential)
        self._streams.add(stream)
        return stream

    def close_stream(self, stream: Stream) -> None:
        if stream in self._streams:
            self._streams.discard(stream)
            share = self._shares[stream.credential.tenant]
            share.streams -= 1
            if not share.calls and not share.streams:
                del self._shares[stream.credential.tenant]


def _end(stream: Stream, error: PatternError) -> None:
    """End `stream` with `error`: at once where the servicer waits (by cancelling it),
    else as soon as gRPC has written the message in hand (a cancellation inside gRPC's
    write would lose the status)."""
    if stream.ending is None:
        stream.ending = error
    if stream.inside and stream.task is not None:
        stream.task.cancel()


def _tenant_overloaded(tenant: Tenant, limit: str) -> ResourceExhausted:
    return ResourceExhausted(
        f"tenant {tenant.name!r} is at its limit of {limit} in progress: retry shortly",
        "TENANT_OVERLOADED",
        OVERLOAD_RETRY,
    )
