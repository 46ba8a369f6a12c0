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
from patterns.streams.v1 import streams_pb2_grpc

from patterns_client._calls import Calls, Metadata
from patterns_client._channel import Security, channel_credentials, describe, with_api_key
from patterns_client._check_stream import CheckStream
from patterns_client._convert import seconds
from patterns_client.cache import Cache
from patterns_client.counter import UniqueCounter
from patterns_client.events import Events
from patterns_client.leaderboard import Leaderboard
from patterns_client.locks import Locks
from patterns_client.ratelimit import RateLimiter
from patterns_client.sessions import Sessions
from patterns_client.streams import Streams

DEFAULT_TIMEOUT = timedelta(seconds=5)
# Whether ratelimit.check goes over the client's shared CheckStream unless told otherwise:
# yes, since it costs the server about half the CPU per decision of a unary Check
# (benchmarks/client.py), with the same answers and fallbacks.
STREAM_CHECKS = True


class Client:
    """A connection to patterns-server at `target` ("host:port").

    `api_key` goes with every call (`authorization: Bearer <api_key>`), over TLS or
    plaintext; `tls` makes the channel secure: True with the system's roots, a `TLS` of
    PEM files (a private CA, a client certificate), or a grpc.ChannelCredentials.
    `timeout` bounds every call (calls that wait on the server, such as a lock's `wait`,
    get that much longer); `metadata` goes with every call; `options` are gRPC channel
    options. `ratelimit.check` sends the checks of every thread over one shared
    RateLimiter.CheckStream (`stream_checks=True`, the default) rather than a unary Check
    each: the same answers and errors, fallbacks included, for less of the server's time;
    `stream_checks=False` sends unary Checks (see docs/python-client.md).
    Use it as a context manager, or call `close()`.

    In a web app: one client for the process, shared by every request and thread (its
    methods are thread-safe), made at start and closed at exit; with a server that forks
    workers (gunicorn's pre-fork model), make it in each worker after the fork, as gRPC
    channels do not survive a fork. An asyncio app (FastAPI, Starlette, aiohttp) uses
    `patterns_client.aio.Client` instead, which may be made at import time: see its
    docstring, and examples/python-web.
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
        if secure is None:
            self._channel = grpc.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.secure_channel(target, secure, options=list(options))
        self._made = describe("Client", api_key, repr(target), f"tls={secure is not None}")
        self._bind(timeout, metadata, stream_checks)

    @classmethod
    def over(
        cls,
        channel: grpc.Channel,
        *,
        api_key: str | None = None,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        metadata: Metadata = (),
        stream_checks: bool = STREAM_CHECKS,
    ) -> Client:
        """A client on a channel made elsewhere (with interceptors, say); `close()`
        closes it."""
        client = cls.__new__(cls)
        metadata = with_api_key(metadata, api_key)
        client._channel = channel
        client._made = describe("Client.over", api_key, "<channel>")
        client._bind(timeout, metadata, stream_checks)
        return client

    def _bind(self, timeout: float | timedelta, metadata: Metadata, stream_checks: bool) -> None:
        calls = Calls(seconds(timeout), metadata)
        channel = self._channel
        limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
        self._check_stream = CheckStream(calls, limiter) if stream_checks else None
        self.ratelimit = RateLimiter(calls, limiter, self._check_stream)
        self.counter = UniqueCounter(calls, counter_pb2_grpc.UniqueCounterStub(channel))
        self.events = Events(calls, events_pb2_grpc.EventsStub(channel))
        self.locks = Locks(calls, lock_pb2_grpc.LockerStub(channel))
        self.cache = Cache(calls, cache_pb2_grpc.CacheStub(channel))
        self.leaderboard = Leaderboard(calls, leaderboard_pb2_grpc.LeaderboardStub(channel))
        self.sessions = Sessions(calls, session_pb2_grpc.SessionsStub(channel))
        self.streams = Streams(calls, streams_pb2_grpc.StreamsStub(channel))

    def __repr__(self) -> str:
        return self._made

    def close(self) -> None:
        """Close the channel: calls in progress are cancelled (the checks' stream, and
        its thread, end first)."""
        if self._check_stream is not None:
            self._check_stream.close()
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
