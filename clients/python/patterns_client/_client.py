"""The blocking client: one channel, one attribute per service."""

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

from patterns_client._calls import Calls, Metadata
from patterns_client._convert import seconds
from patterns_client.cache import Cache
from patterns_client.counter import UniqueCounter
from patterns_client.events import Events
from patterns_client.leaderboard import Leaderboard
from patterns_client.locks import Locks
from patterns_client.ratelimit import RateLimiter
from patterns_client.sessions import Sessions

DEFAULT_TIMEOUT = timedelta(seconds=5)


class Client:
    """A connection to patterns-server at `target` ("host:port").

    `timeout` bounds every call (calls that wait on the server, such as a lock's `wait`,
    get that much longer); `credentials` (grpc.ssl_channel_credentials(), say) makes the
    channel secure; `metadata` goes with every call; `options` are gRPC channel options.
    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.secure_channel(target, credentials, options=list(options))
        self._bind(timeout, metadata)

    @classmethod
    def over(
        cls,
        channel: grpc.Channel,
        *,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
    ) -> Client:
        """A client on a channel made elsewhere (with interceptors, say); `close()`
        closes it."""
        client = cls.__new__(cls)
        client._channel = channel
        client._bind(timeout, metadata)
        return client

    def _bind(self, timeout: float | timedelta, metadata: Metadata) -> None:
        calls = Calls(seconds(timeout), metadata)
        channel = self._channel
        self.ratelimit = RateLimiter(calls, ratelimit_pb2_grpc.RateLimiterStub(channel))
        self.counter = UniqueCounter(calls, counter_pb2_grpc.UniqueCounterStub(channel))
        self.events = Events(calls, events_pb2_grpc.EventsStub(channel))
        self.locks = Locks(calls, lock_pb2_grpc.LockerStub(channel))
        self.cache = Cache(calls, cache_pb2_grpc.CacheStub(channel))
        self.leaderboard = Leaderboard(calls, leaderboard_pb2_grpc.LeaderboardStub(channel))
        self.sessions = Sessions(calls, session_pb2_grpc.SessionsStub(channel))

    def close(self) -> None:
        """Close the channel: calls in progress are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
