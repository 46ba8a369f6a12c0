"""Redis Pub/Sub for every stream of the process, over one dedicated connection.

A `PubSubHub` holds one Redis connection in subscribed mode, apart from the batcher's, and
shares it between all subscribers: a channel or pattern is subscribed in Redis when its
first subscriber arrives and unsubscribed after its last leaves. One reader task reads
every message as it arrives and copies it into the buffer of each subscriber it concerns;
it never waits for a subscriber, so a slow one cannot stall the others or make Redis's
output buffer grow. A subscriber whose buffer is full is ended (`ResourceExhausted`);
when the connection fails, every subscriber is ended (`Unavailable`) and the next
subscription opens a new connection. An idle connection is checked with PING.

When a subscription starts is exact: after its SUBSCRIBE commands (for names new to
Redis), the hub sends a PING carrying a token of the subscription's own. Redis answers in
order, so messages that reach the connection before that answer were published before
the subscription began and are not given to it (the channel may have been subscribed for
someone else); every message after the answer is. `subscribe()` returns at the answer.
"""

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.connection import AbstractConnection

from patterns_server.core.errors import ResourceExhausted, Unavailable
from patterns_server.core.telemetry import record
from patterns_server.storage.errors import translated

logger = logging.getLogger(__name__)

_SUBSCRIBE = {False: "SUBSCRIBE", True: "PSUBSCRIBE"}
_UNSUBSCRIBE = {False: "UNSUBSCRIBE", True: "PUNSUBSCRIBE"}
_MARKER = b"patterns-subscribed:"


@dataclass(frozen=True)
class Message:
    """A message as Redis delivered it: the Redis channel, the pattern that matched it
    (None for a channel subscription), the payload, and when it was read (Unix time).
    Every subscriber it concerns gets this one object; `memo` keeps what they derive
    from it alike, computed once for all of them."""

    channel: bytes
    pattern: bytes | None
    payload: bytes
    received_at: float
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


class Subscription:
    """One subscriber's messages, in the order Redis sent them, through a buffer of at most
    `capacity` messages and `max_bytes` bytes of payload. `async for` reads them; the
    iteration raises the error that ended the subscription. `close()` (or leaving
    `async with`) unsubscribes."""

    def __init__(
        self,
        hub: "PubSubHub",
        channels: Sequence[bytes],
        patterns: Sequence[bytes],
        capacity: int,
        max_bytes: int,
    ) -> None:
        self.channels = tuple(dict.fromkeys(channels))
        self.patterns = tuple(dict.fromkeys(patterns))
        self._hub = hub
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._buffer: deque[Message] = deque()
        self._buffered_bytes = 0
        self._live = False  # before its marker came back, messages are not its own
        self._token = b""
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wakeup: asyncio.Future[None] | None = None
        self._ended: BaseException | None = None
        self._closed = False

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Message:
        await self._filled()
        message = self._buffer.popleft()
        self._buffered_bytes -= len(message.payload)
        return message

    async def take(self, max_messages: int, max_bytes: int) -> list[Message]:
        """The messages buffered now, oldest first, waiting for one if there are none: at
        most `max_messages`, of at most `max_bytes` of payload together unless the first
        alone is larger. Raises as iterating does once the subscription has ended."""
        await self._filled()
        buffer = self._buffer
        first = buffer.popleft()
        size = len(first.payload)
        taken = [first]
        while buffer and len(taken) < max_messages:
            next_size = len(buffer[0].payload)
            if size + next_size > max_bytes:
                break
            size += next_size
            taken.append(buffer.popleft())
        self._buffered_bytes -= size
        return taken

    async def _filled(self) -> None:
        """Return once a message is buffered; raise the error that ended the subscription."""
        while not self._buffer and self._ended is None:
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        if self._ended is not None:
            raise self._ended

    def names(self) -> tuple[tuple[bool, tuple[bytes, ...]], ...]:
        """(is_pattern, names): the channels, then the patterns."""
        return ((False, self.channels), (True, self.patterns))

    def end(self, error: BaseException) -> None:
        """End the subscription with `error`, which its reader gets at once (before any
        message still buffered); it stays subscribed in Redis until closed."""
        self._end(error)

    async def close(self) -> None:
        """Leave: unsubscribe in Redis what no other subscriber needs. Never raises."""
        if not self._closed:
            self._closed = True
            self._end(Unavailable("the subscription is closed", "CLOSED"))
            await self._hub._leave(self)

    def _deliver(self, message: Message) -> bool:
        """Buffer `message`; False (and the subscription ended) when the buffer is full."""
        if self._ended is not None or not self._live:
            return True
        size = len(message.payload)
        if len(self._buffer) >= self._capacity or self._buffered_bytes + size > self._max_bytes:
            self._end(
                ResourceExhausted(
                    f"the subscriber fell more than {len(self._buffer):,} messages "
                    f"({self._buffered_bytes:,} bytes) behind",
                    "SLOW_CONSUMER",
                )
            )
            return False
        self._buffer.append(message)
        self._buffered_bytes += size
        self._wake()
        return True

    def _start(self) -> None:
        self._live = True
        if not self._started.done():
            self._started.set_result(None)

    def _end(self, error: BaseException) -> None:
        if self._ended is None:
            self._ended = error
            self._buffer.clear()
            self._buffered_bytes = 0
            self._wake()
        if not self._started.done():
            self._started.set_exception(error)
            self._started.exception()  # retrieved: whoever waited is told by subscribe()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class PubSubHub:
    """Every subscription of the process over one Redis connection (see the module).

    `open_connection` opens a new connection (to any node of a Cluster: classic Pub/Sub
    messages reach every node); `timeout` bounds a wait for Redis; the connection is
    PINGed after `ping_interval` seconds without a message.
    """

    def __init__(
        self,
        open_connection: Callable[[], Awaitable[AbstractConnection]],
        timeout: float,
        ping_interval: float,
    ) -> None:
        self._open_connection = open_connection
        self._opened = False
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._connection: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        # Subscribers by channel (False) and by pattern (True).
        self._subscribers: dict[bool, dict[bytes, set[Subscription]]] = {False: {}, True: {}}
        # Subscriptions waiting for their marker PING's answer, by token.
        self._starting: dict[bytes, Subscription] = {}
        self._tokens = itertools.count()

    @property
    def subscribed(self) -> tuple[int, int]:
        """How many channels and patterns are subscribed in Redis now."""
        return len(self._subscribers[False]), len(self._subscribers[True])

    async def subscribe(
        self, channels: Sequence[bytes], patterns: Sequence[bytes], capacity: int, max_bytes: int
    ) -> Subscription:
        """A subscription to `channels` and `patterns`, returned once it is live: every
        message published from then on reaches it, and none published before."""
        subscription = Subscription(self, channels, patterns, capacity, max_bytes)
        try:
            connection = await self._connected()
            for is_pattern, names in subscription.names():
                new = self._join(subscription, is_pattern, names)
                if new:
                    await self._send(connection, _SUBSCRIBE[is_pattern], *new)
            subscription._token = _MARKER + str(next(self._tokens)).encode()
            self._starting[subscription._token] = subscription
            await self._send(connection, "PING", subscription._token)
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(subscription._started)
        except BaseException as error:
            await subscription.close()
            if isinstance(error, Exception):
                raise translated(error) from error
            raise
        return subscription

    async def close(self) -> None:
        """End every subscription and close the connection."""
        await self._fail(Unavailable("the server is shutting down", "SHUTTING_DOWN"))

    def _join(
        self, subscription: Subscription, is_pattern: bool, names: Iterable[bytes]
    ) -> list[bytes]:
        """Add `subscription` to `names`; the names new to Redis."""
        subscribers = self._subscribers[is_pattern]
        new = []
        for name in names:
            if name not in subscribers:
                subscribers[name] = set()
                new.append(name)
            subscribers[name].add(subscription)
        return new

    async def _leave(self, subscription: Subscription) -> None:
        self._starting.pop(subscription._token, None)
        for is_pattern, names in subscription.names():
            unused = self._drop(subscription, is_pattern, names)
            if unused and self._connection is not None:
                with contextlib.suppress(Exception):  # a failed connection fails everyone
                    await self._send(self._connection, _UNSUBSCRIBE[is_pattern], *unused)

    def _drop(
        self, subscription: Subscription, is_pattern: bool, names: Iterable[bytes]
    ) -> list[bytes]:
        """Remove `subscription` from `names`; the names no subscriber needs any more."""
        subscribers = self._subscribers[is_pattern]
        unused = []
        for name in names:
            members = subscribers.get(name)
            if members is not None and subscription in members:
                members.discard(subscription)
                if not members:
                    del subscribers[name]
                    unused.append(name)
        return unused

    async def _connected(self) -> AbstractConnection:
        async with self._connecting:
            if self._connection is None:
                async with asyncio.timeout(self._timeout):
                    connection = await self._open_connection()
                if self._opened:  # the one before was lost
                    record().redis_reconnect("pubsub")
                self._opened = True
                self._connection = connection
                self._reader = asyncio.create_task(self._read(connection))
            return self._connection

    @staticmethod
    async def _send(connection: AbstractConnection, *args: Any) -> None:
        # Shielded: redis-py drops a connection whose write was cancelled, and this one
        # is everyone's. Writes start in the order they are asked for.
        await asyncio.shield(connection.send_command(*args, check_health=False))

    async def _read(self, connection: AbstractConnection) -> None:
        awaiting_pong = False
        try:
            while True:
                wait = self._timeout if awaiting_pong else self._ping_interval
                # push_request: in RESP3 (redis-py's default) messages arrive as pushes.
                reply = await connection.read_response(
                    timeout=wait, disconnect_on_error=False, push_request=True
                )
                if reply is None:  # nothing for a while: is Redis still there?
                    if awaiting_pong:
                        raise Unavailable("Redis did not answer PING in time", "REDIS_TIMEOUT")
                    await self._send(connection, "PING")
                    awaiting_pong = True
                    continue
                awaiting_pong = False
                for is_pattern, names in self._dispatch(reply):
                    await self._send(connection, _UNSUBSCRIBE[is_pattern], *names)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("Pub/Sub connection lost (%s): ending its subscriptions", error)
            await self._fail(translated(error), reading=True)

    def _dispatch(self, reply: Any) -> list[tuple[bool, list[bytes]]]:
        """Hand one reply of Redis to whom it concerns; the names that lost their last
        subscriber meanwhile (a full buffer ends a subscriber)."""
        if not isinstance(reply, list):  # RESP3 answers PING <token> with the token
            self._pong(reply)
            return []
        kind = reply[0]
        if kind == b"message" or kind == b"pmessage":
            return self._deliver(kind == b"pmessage", reply)
        if kind == b"pong":  # RESP2 answers PING <token> with ["pong", token]
            self._pong(reply[1])
        return []  # (un)subscribe confirmations: the marker PING tells what matters

    def _pong(self, token: Any) -> None:
        subscription = self._starting.pop(token, None) if isinstance(token, bytes) else None
        if subscription is not None:
            subscription._start()

    def _deliver(self, is_pattern: bool, reply: list[Any]) -> list[tuple[bool, list[bytes]]]:
        name = reply[1]
        message = Message(
            channel=reply[2] if is_pattern else name,
            pattern=name if is_pattern else None,
            payload=reply[-1],
            received_at=time.time(),
        )
        overflowing = [
            subscription
            for subscription in self._subscribers[is_pattern].get(name, ())
            if not subscription._deliver(message)
        ]
        unused: list[tuple[bool, list[bytes]]] = []
        for subscription in overflowing:
            for pattern_side, names in subscription.names():
                dropped = self._drop(subscription, pattern_side, names)
                if dropped:
                    unused.append((pattern_side, dropped))
        return unused

    async def _fail(self, error: BaseException, reading: bool = False) -> None:
        """End every subscription with `error` and drop the connection."""
        for subscribers in self._subscribers.values():
            for members in subscribers.values():
                for subscription in members:
                    subscription._end(error)
            subscribers.clear()
        for subscription in self._starting.values():
            subscription._end(error)
        self._starting.clear()
        if self._reader is not None and not reading:
            self._reader.cancel()
        self._reader = None
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)
