"""Events: publish, and subscriptions that survive outages and say what they missed.

A subscription is an iterator of `Event`s. When its stream fails in a way that retrying
cures (the server or its Redis unavailable, the server stopping, the reader too slow),
it subscribes again after a backoff (at least what the server's RetryInfo asks) and, once
subscribed again, yields a `Gap`: Pub/Sub keeps nothing for absent subscribers, so events
published meanwhile are lost, and the reader should reload what it derives from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc
from patterns.events.v1 import events_pb2 as pb
from patterns.events.v1 import events_pb2_grpc

from patterns_client._calls import AsyncCalls, Calls
from patterns_client._convert import seconds, to_datetime
from patterns_client.errors import DeadlineExceeded, PatternsError, from_rpc_error

__all__ = ["AsyncEvents", "AsyncSubscription", "Event", "Events", "Gap", "Subscription"]

FIRST_BACKOFF = 0.1  # seconds; doubled after each failure in a row, up to LAST_BACKOFF
LAST_BACKOFF = 5.0
# Failures a new subscription cures: the server or Redis unavailable or stopping (a cut
# connection reads as UNAVAILABLE too), the server or the caller's tenant at its limit of
# streams (OVERLOADED, TENANT_OVERLOADED) or the reader too slow (SLOW_CONSUMER).
# Not CANCELLED: that is this client closing (the subscription, or the whole channel).
# Not UNAUTHENTICATED: a revoked key stays revoked, and trying it again would be a loop.
RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass(frozen=True)
class Event:
    """A message: its channel, the pattern it matched ("" for a channel subscription),
    its payload, and when the server received it."""

    channel: str
    pattern: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True)
class Gap:
    """The subscription was interrupted by `error` and is back: events published in
    between were lost."""

    error: PatternsError


Item = Event | Gap


class _Subscribed:
    """What the inner generator yields when the server confirms the subscription (never
    given to the reader): wait_subscribed reads up to it and no further."""


_SUBSCRIBED = _Subscribed()


def _not_confirmed(timeout: float | timedelta | None) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the server did not confirm the subscription within {seconds(timeout or 0):g}s"
    )


def _event(message: pb.Event) -> Event:
    return Event(
        message.channel, message.pattern, bytes(message.payload), to_datetime(message.received_at)
    )


class _Backoff:
    """Waits between attempts: doubling from FIRST_BACKOFF, with jitter, at least what the
    server asked for."""

    def __init__(self) -> None:
        self._next = FIRST_BACKOFF

    def reset(self) -> None:
        """Start again from the first wait (after a success)."""
        self._next = FIRST_BACKOFF

    def after(self, error: PatternsError) -> float:
        """The wait before the next attempt, after `error`."""
        delay = self._next * random.uniform(0.5, 1.0)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after.total_seconds())
        self._next = min(LAST_BACKOFF, self._next * 2)
        return delay


def _resumable(error: grpc.RpcError) -> PatternsError | None:
    failure = from_rpc_error(error)
    return failure if failure.code in RESUMABLE else None


class Subscription:
    """An iterator of Event and Gap; `close()` (or leaving its `with` block) ends it.
    `subscribed` is set while the server confirms the subscription is in place;
    `wait_subscribed()` opens the stream and returns once it is, consuming no event."""

    def __init__(self, stub: Any, request: pb.SubscribeRequest, metadata: Any) -> None:
        self._stub = stub
        self._request = request
        self._metadata = metadata
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        self.subscribed = threading.Event()
        self._items = self._run()
        # One reader of the stream at a time: the iteration, or wait_subscribed's helper,
        # which keeps what it read past (from an earlier stream) for the iteration.
        self._reading = threading.Lock()
        self._pending: deque[Item] = deque()
        self._failure: PatternsError | None = None
        self._helper: threading.Thread | None = None
        self._settled = threading.Event()

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        with self._reading:
            while True:
                if self._pending:
                    return self._pending.popleft()
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure
                item = next(self._items)
                if not isinstance(item, _Subscribed):
                    return item

    def wait_subscribed(self, timeout: float | timedelta | None = None) -> None:
        """Open the stream (if iterating has not) and return once the server has
        confirmed the subscription: every event published after this returns reaches
        it. No event is consumed: iterate as usual after. Raises DeadlineExceeded when
        no confirmation came within `timeout` (None: wait as long as it takes; the
        subscription goes on trying), or the failure that ended the subscription."""
        limit = None if timeout is None else time.monotonic() + seconds(timeout)
        while not self.subscribed.is_set():
            if self._failure is not None:
                raise self._failure
            if self._closed.is_set():
                raise PatternsError("the subscription is closed")
            with self._lock:
                if self._helper is None or not self._helper.is_alive():
                    self._settled.clear()
                    self._helper = threading.Thread(
                        target=self._read_until_subscribed, name="wait_subscribed", daemon=True
                    )
                    self._helper.start()
            left = 0.05 if limit is None else min(0.05, limit - time.monotonic())
            if left <= 0:
                raise _not_confirmed(timeout)
            self._settled.wait(left)

    def _read_until_subscribed(self) -> None:
        try:
            with self._reading:
                while not self.subscribed.is_set() and not self._closed.is_set():
                    try:
                        item = next(self._items)
                    except StopIteration:
                        return
                    except PatternsError as failure:
                        self._failure = failure
                        return
                    if isinstance(item, _Subscribed):
                        return
                    self._pending.append(item)
        finally:
            self._settled.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the subscription; an iteration in progress stops."""
        self._closed.set()
        self._settled.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def _run(self) -> Iterator[Item | _Subscribed]:
        backoff = _Backoff()
        interrupted: PatternsError | None = None
        while not self._closed.is_set():
            with self._lock:
                if self._closed.is_set():
                    return
                self._call = call = self._stub.Subscribe(self._request, metadata=self._metadata)
            try:
                for message in call:
                    if message.HasField("subscribed"):
                        self.subscribed.set()
                        backoff.reset()
                        yield _SUBSCRIBED
                        if interrupted is not None:
                            yield Gap(interrupted)
                            interrupted = None
                    else:
                        for event in _events_of(message):
                            yield _event(event)
                raise PatternsError("the server ended the subscription")
            except grpc.RpcError as error:
                if self._closed.is_set():
                    return
                failure = _resumable(error)
                if failure is None:
                    raise from_rpc_error(error) from None
                interrupted = interrupted or failure
            except PatternsError as failure:
                interrupted = interrupted or failure
            finally:
                call.cancel()
            self.subscribed.clear()
            self._closed.wait(backoff.after(interrupted))


class AsyncSubscription:
    """Subscription of the asyncio client: an async iterator of Event and Gap, with
    `await wait_subscribed()`."""

    def __init__(self, stub: Any, request: pb.SubscribeRequest, metadata: Any) -> None:
        self._stub = stub
        self._request = request
        self._metadata = metadata
        self._closed = asyncio.Event()
        self._call: Any = None
        self.subscribed = asyncio.Event()
        self._items = self._run()
        self._reading = asyncio.Lock()  # one reader of the stream at a time
        self._pending: deque[Item] = deque()
        self._helper: asyncio.Future[None] | None = None

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        async with self._reading:
            while True:
                if self._pending:
                    return self._pending.popleft()
                item = await self._items.__anext__()
                if not isinstance(item, _Subscribed):
                    return item

    async def wait_subscribed(self, timeout: float | timedelta | None = None) -> None:
        """Open the stream (if iterating has not) and return once the server has
        confirmed the subscription: every event published after this returns reaches
        it. No event is consumed: iterate as usual after. Raises DeadlineExceeded when
        no confirmation came within `timeout` (None: wait as long as it takes; the
        subscription goes on trying), PatternsError when it is closed, or the failure
        that ended it."""
        if self.subscribed.is_set():
            return
        if self._closed.is_set():
            raise PatternsError("the subscription is closed")
        if self._helper is None or self._helper.done():
            self._helper = asyncio.ensure_future(self._read_until_subscribed())
        # The helper reads the stream only when no iteration does; while one does, the
        # iteration sees the confirmation and `subscribed` says so: whichever comes first.
        confirmed = asyncio.ensure_future(self.subscribed.wait())
        either: list[asyncio.Future[Any]] = [self._helper, confirmed]
        try:
            # asyncio.wait cancels nothing: a timeout ends this wait, not the reading.
            done, _ = await asyncio.wait(
                either,
                timeout=None if timeout is None else seconds(timeout),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            confirmed.cancel()
        if self.subscribed.is_set():
            return
        if not done:
            raise _not_confirmed(timeout)
        self._helper.result()  # the failure that ended the subscription, if one did

    async def _read_until_subscribed(self) -> None:
        async with self._reading:
            while not self.subscribed.is_set() and not self._closed.is_set():
                try:
                    item = await self._items.__anext__()
                except StopAsyncIteration:
                    return
                if isinstance(item, _Subscribed):
                    return
                self._pending.append(item)

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End the subscription; an iteration in progress stops."""
        self._closed.set()
        if self._call is not None:
            self._call.cancel()

    async def _run(self) -> AsyncIterator[Item | _Subscribed]:
        backoff = _Backoff()
        interrupted: PatternsError | None = None
        while not self._closed.is_set():
            self._call = call = self._stub.Subscribe(self._request, metadata=self._metadata)
            try:
                while True:
                    message = await call.read()
                    if message is grpc.aio.EOF:
                        raise PatternsError("the server ended the subscription")
                    if message.HasField("subscribed"):
                        self.subscribed.set()
                        backoff.reset()
                        yield _SUBSCRIBED
                        if interrupted is not None:
                            yield Gap(interrupted)
                            interrupted = None
                    else:
                        for event in _events_of(message):
                            yield _event(event)
            except asyncio.CancelledError:
                if self._closed.is_set():
                    return
                raise
            except grpc.RpcError as error:
                if self._closed.is_set():
                    return
                failure = _resumable(error)
                if failure is None:
                    raise from_rpc_error(error) from None
                interrupted = interrupted or failure
            except PatternsError as failure:
                interrupted = interrupted or failure
            finally:
                call.cancel()
            self.subscribed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closed.wait(), backoff.after(interrupted))


def _subscribe_request(channels: Sequence[str], patterns: Sequence[str]) -> pb.SubscribeRequest:
    # Batches: when this client falls behind, the server sends what it missed in one message
    # (far cheaper for both); events come out one by one all the same.
    return pb.SubscribeRequest(channels=list(channels), patterns=list(patterns), batch=True)


def _events_of(message: pb.SubscribeResponse) -> Sequence[pb.Event]:
    """The events of a response: a batch's, or its one event (a server older than
    SubscribeRequest.batch sends those)."""
    if message.HasField("batch"):
        return message.batch.events
    return (message.event,)


class Events:
    """`client.events` of the blocking client."""

    def __init__(self, calls: Calls, stub: events_pb2_grpc.EventsStub) -> None:
        self._calls = calls
        self._stub = stub

    def publish(self, channel: str, payload: bytes) -> int:
        """Publish `payload` on `channel`; how many Redis subscriber connections took it
        (each server counts once, however many of its streams receive it)."""
        request = pb.PublishRequest(channel=channel, payload=payload)
        return int(self._calls.unary(self._stub.Publish, request).receivers)

    def subscribe(self, channels: Sequence[str] = (), patterns: Sequence[str] = ()) -> Subscription:
        """Events of `channels` and of the channels `patterns` match (globs), until
        closed; resubscribes after an interruption, then yields a Gap."""
        request = _subscribe_request(channels, patterns)
        return Subscription(self._stub, request, self._calls.metadata)


class AsyncEvents:
    """`client.events` of the asyncio client."""

    def __init__(self, calls: AsyncCalls, stub: events_pb2_grpc.EventsStub) -> None:
        self._calls = calls
        self._stub = stub

    async def publish(self, channel: str, payload: bytes) -> int:
        """Publish `payload` on `channel`; how many Redis subscriber connections took it
        (each server counts once, however many of its streams receive it)."""
        request = pb.PublishRequest(channel=channel, payload=payload)
        return int((await self._calls.unary(self._stub.Publish, request)).receivers)

    def subscribe(
        self, channels: Sequence[str] = (), patterns: Sequence[str] = ()
    ) -> AsyncSubscription:
        """An AsyncSubscription to events of `channels` and of the channels `patterns`
        match (globs), until closed: `async for item in client.events.subscribe(...)`.
        It resubscribes after an interruption, then yields a Gap."""
        request = _subscribe_request(channels, patterns)
        return AsyncSubscription(self._stub, request, self._calls.metadata)
