"""The asyncio client: `patterns_client.aio.Client`, the blocking client's methods as
coroutines (and `async with` / `async for` where the blocking client has `with` / `for`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, cast

import grpc
from patterns.cache.v1 import cache_pb2_grpc
from patterns.counter.v1 import counter_pb2_grpc
from patterns.events.v1 import events_pb2_grpc
from patterns.leaderboard.v1 import leaderboard_pb2_grpc
from patterns.lock.v1 import lock_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2_grpc
from patterns.session.v1 import session_pb2_grpc
from patterns.streams.v1 import streams_pb2_grpc

from patterns_client._calls import AsyncCalls, Metadata
from patterns_client._channel import Security, channel_credentials, describe, with_api_key
from patterns_client._check_stream_aio import AsyncCheckStream
from patterns_client._client import DEFAULT_TIMEOUT, STREAM_CHECKS
from patterns_client._convert import seconds
from patterns_client.cache import AsyncCache
from patterns_client.counter import AsyncUniqueCounter
from patterns_client.errors import PatternsError
from patterns_client.events import AsyncEvents
from patterns_client.leaderboard import AsyncLeaderboard
from patterns_client.locks import AsyncLocks
from patterns_client.ratelimit import AsyncRateLimiter
from patterns_client.sessions import AsyncSessions
from patterns_client.streams import AsyncStreams

__all__ = ["Client"]


class Client:
    """The asyncio client: patterns_client.Client's services (`ratelimit`, `counter`,
    `leaderboard`, `sessions`, `cache`, `locks`, `events`, `streams`) with coroutine
    methods, on grpc.aio; `async with` it or `await close()`. A failed call raises a
    PatternsError.

    It may be made anywhere, at import time included: its channel is opened on the first
    call, in the event loop that makes it, so a web app keeps one client in a module,
    declares its decorators (`@client.ratelimit.limited(...)`, `@client.cache.cached(...)`)
    at module level, and closes the client when the app stops::

        client = aio.Client("patterns:50051", api_key=os.environ["PATTERNS_API_KEY"])

        @client.cache.cached(key=lambda user: f"profile:{user}", ttl=timedelta(minutes=5))
        async def profile(user: str) -> bytes: ...

        @contextlib.asynccontextmanager
        async def lifespan(app):  # FastAPI / Starlette
            yield
            await client.close()

    A client used from a later event loop once its first loop has ended (each
    `asyncio.run`, each test's loop) opens a new channel in the new loop; one used from
    two loops running at once (two threads' loops) raises a PatternsError saying so:
    make one client per loop. `close()` closes the channel; a later call opens another.
    `stream_checks` is the blocking client's: `ratelimit.check` sends the checks of every
    task over one shared RateLimiter.CheckStream of the running loop (the default), or a
    unary Check each (`stream_checks=False`).
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: Security = False,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        options: Sequence[tuple[str, Any]] = (),
        stream_checks: bool = STREAM_CHECKS,
        credentials: grpc.ChannelCredentials | None = None,  # deprecated: tls=
    ) -> None:
        secure = channel_credentials(tls, credentials)
        metadata = with_api_key(metadata, api_key)  # raises before a channel is opened
        channel_options = list(options)

        def make() -> grpc.aio.Channel:
            if secure is None:
                return grpc.aio.insecure_channel(target, options=channel_options)
            return grpc.aio.secure_channel(target, secure, options=channel_options)

        self._binding = _Binding(make, None)
        self._made = describe("aio.Client", api_key, repr(target), f"tls={secure is not None}")
        self._bind(timeout, metadata, stream_checks)

    @classmethod
    def over(
        cls,
        channel: grpc.aio.Channel,
        *,
        api_key: str | None = None,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        stream_checks: bool = STREAM_CHECKS,
    ) -> Client:
        """A client on a channel made elsewhere (with interceptors, say); `close()`
        closes it. That channel belongs to the event loop it was made in: the client
        raises a PatternsError when used from another."""
        client = cls.__new__(cls)
        metadata = with_api_key(metadata, api_key)
        client._binding = _Binding(None, channel)
        client._made = describe("aio.Client.over", api_key, "<channel>")
        client._bind(timeout, metadata, stream_checks)
        return client

    def _bind(self, timeout: float | timedelta, metadata: Metadata, stream_checks: bool) -> None:
        calls = AsyncCalls(seconds(timeout), metadata)
        stub = self._binding.stub
        limiter = stub(ratelimit_pb2_grpc.RateLimiterStub)
        self._check_stream = AsyncCheckStream(calls, limiter) if stream_checks else None
        self.ratelimit = AsyncRateLimiter(calls, limiter, self._check_stream)
        self.counter = AsyncUniqueCounter(calls, stub(counter_pb2_grpc.UniqueCounterStub))
        self.events = AsyncEvents(calls, stub(events_pb2_grpc.EventsStub))
        self.locks = AsyncLocks(calls, stub(lock_pb2_grpc.LockerStub))
        self.cache = AsyncCache(calls, stub(cache_pb2_grpc.CacheStub))
        self.leaderboard = AsyncLeaderboard(calls, stub(leaderboard_pb2_grpc.LeaderboardStub))
        self.sessions = AsyncSessions(calls, stub(session_pb2_grpc.SessionsStub))
        self.streams = AsyncStreams(calls, stub(streams_pb2_grpc.StreamsStub))

    def __repr__(self) -> str:
        return self._made

    async def close(self) -> None:
        """Close the channel: calls in progress are cancelled. A call made after opens a
        new channel (not on a client made `over` a channel). The checks' stream, and its
        task, end first."""
        if self._check_stream is not None:
            await self._check_stream.close()
        await self._binding.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class _Binding:
    """The channel of an aio client and the event loop it belongs to: opened by `make`
    on first use in a running loop, and again in a later loop once the first has ended.
    (grpc.aio ties a channel to the loop it is first used in; a call from another loop
    would fail with a bare RuntimeError.)"""

    def __init__(
        self, make: Callable[[], grpc.aio.Channel] | None, channel: grpc.aio.Channel | None
    ) -> None:
        self._make = make
        self._channel = channel
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stubs: dict[type, Any] = {}

    def stub(self, kind: Callable[[grpc.aio.Channel], Any]) -> Any:
        """A stand-in for `kind(channel)` that makes it on the channel of the running
        loop, at each use (a service's method, inside the loop)."""
        return cast(Any, _LazyStub(self, kind))

    def real_stub(self, kind: Any) -> Any:
        """`kind(channel)` on the channel of the running loop (made once per channel)."""
        channel = self.channel()
        stub = self._stubs.get(kind)
        if stub is None:
            stub = self._stubs[kind] = kind(channel)
        return stub

    def channel(self) -> grpc.aio.Channel:
        """The channel of the running event loop, opened now if there is none yet."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise PatternsError(
                "aio.Client calls are coroutines: await them inside a running event loop "
                "(asyncio.run, the web framework's loop)"
            ) from None
        if self._channel is not None and self._loop is loop:
            return self._channel
        if self._make is None:  # a channel made by the caller: its loop is fixed
            assert self._channel is not None
            made_in = getattr(self._channel, "_loop", None) or self._loop
            if made_in is not None and made_in is not loop:
                raise PatternsError(
                    "aio.Client.over(channel): the channel belongs to another event loop "
                    "than the one calling; make the channel in the loop that uses it, or "
                    "use aio.Client(target), which opens its channel in the calling loop"
                )
            self._loop = loop
            return self._channel
        old = self._loop if self._channel is not None else None
        if old is not None and old.is_running() and not old.is_closed():
            raise PatternsError(
                "this aio.Client is in use by another event loop that is still running "
                "(another thread's): make one client per event loop"
            )
            # The first loop has ended: its channel went with it (it cannot be closed
            # from another loop). A fresh one for this loop.
        self._channel = self._make()
        self._loop = loop
        self._stubs.clear()
        return self._channel

    async def close(self) -> None:
        """Close the channel, when it belongs to this loop (one of an ended loop went
        with it); a later use opens another (not for a channel made by the caller)."""
        channel, loop = self._channel, self._loop
        if channel is None:
            return
        if self._make is not None:
            self._channel = self._loop = None
            self._stubs.clear()
        if loop is None or loop is asyncio.get_running_loop() or self._make is None:
            await channel.close()


class _LazyStub:
    """A service's stub whose methods are looked up on the running loop's channel."""

    def __init__(self, binding: _Binding, kind: Any) -> None:
        self._binding = binding
        self._kind = kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._binding.real_stub(self._kind), name)
