"""The asyncio client: `patterns_client.aio.Client`, the blocking client's methods as
coroutines (and `async with` / `async for` where the blocking client has `with` / `for`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

import grpc
from patterns.cache.v1 import cache_pb2_grpc
from patterns.counter.v1 import counter_pb2_grpc
from patterns.events.v1 import events_pb2_grpc
from patterns.leaderboard.v1 import leaderboard_pb2_grpc
from patterns.lock.v1 import lock_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2_grpc
from patterns.session.v1 import session_pb2_grpc

from patterns_client._calls import AsyncCalls, Metadata
from patterns_client._channel import Security, channel_credentials, describe, with_api_key
from patterns_client._client import DEFAULT_TIMEOUT
from patterns_client._convert import seconds
from patterns_client.cache import AsyncCache
from patterns_client.counter import AsyncUniqueCounter
from patterns_client.events import AsyncEvents
from patterns_client.leaderboard import AsyncLeaderboard
from patterns_client.locks import AsyncLocks
from patterns_client.ratelimit import AsyncRateLimiter
from patterns_client.sessions import AsyncSessions

__all__ = ["Client"]


class Client:
    """As patterns_client.Client, on grpc.aio: create it inside a running event loop, and
    `async with` it or `await close()`."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: Security = False,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,  # deprecated: tls=
    ) -> None:
        secure = channel_credentials(tls, credentials)
        metadata = with_api_key(metadata, api_key)  # raises before a channel is opened
        if secure is None:
            self._channel = grpc.aio.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.aio.secure_channel(target, secure, options=list(options))
        self._made = describe("aio.Client", api_key, repr(target), f"tls={secure is not None}")
        self._bind(timeout, metadata)

    @classmethod
    def over(
        cls,
        channel: grpc.aio.Channel,
        *,
        api_key: str | None = None,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
    ) -> Client:
        """A client on a channel made elsewhere (with interceptors, say); `close()`
        closes it."""
        client = cls.__new__(cls)
        metadata = with_api_key(metadata, api_key)
        client._channel = channel
        client._made = describe("aio.Client.over", api_key, "<channel>")
        client._bind(timeout, metadata)
        return client

    def _bind(self, timeout: float | timedelta, metadata: Metadata) -> None:
        calls = AsyncCalls(seconds(timeout), metadata)
        channel = self._channel
        self.ratelimit = AsyncRateLimiter(calls, ratelimit_pb2_grpc.RateLimiterStub(channel))
        self.counter = AsyncUniqueCounter(calls, counter_pb2_grpc.UniqueCounterStub(channel))
        self.events = AsyncEvents(calls, events_pb2_grpc.EventsStub(channel))
        self.locks = AsyncLocks(calls, lock_pb2_grpc.LockerStub(channel))
        self.cache = AsyncCache(calls, cache_pb2_grpc.CacheStub(channel))
        self.leaderboard = AsyncLeaderboard(calls, leaderboard_pb2_grpc.LeaderboardStub(channel))
        self.sessions = AsyncSessions(calls, session_pb2_grpc.SessionsStub(channel))

    def __repr__(self) -> str:
        return self._made

    async def close(self) -> None:
        """Close the channel: calls in progress are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
