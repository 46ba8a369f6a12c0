"""Publish and subscribe over Redis Pub/Sub: live, at-most-once delivery in the caller's
namespace.

Every subscription of the process shares the backend's one Pub/Sub connection (see
`storage/pubsub.py`): a channel is subscribed in Redis for its first stream and
unsubscribed after its last. Channel names live in the caller's namespace, and patterns
only ever match channels of it. Nothing is stored: a message reaches the subscriptions
that exist when it is published, in the order one publisher sent it.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from patterns_server.core.errors import InvalidArgument, ResourceExhausted
from patterns_server.core.telemetry import record
from patterns_server.core.validation import check_name
from patterns_server.storage import Message, RedisBackend, Subscription

MAX_NAMES = 100  # channels and patterns together, per subscription
# A subscription's buffer holds at most this many bytes of payload, whatever its count:
# a slow reader of large messages is ended before it holds much memory.
BUFFER_BYTES = 16 << 20
# A batch (`EventStream.batch`) holds at most this many events, of at most this many bytes of
# payload unless its one event is larger: well within a gRPC client's default 4 MiB message.
BATCH_EVENTS = 1_000
BATCH_BYTES = 1 << 20


@dataclass(frozen=True)
class Event:
    """A published message: its channel, the subscribed pattern that matched it ("" for a
    channel subscription), its payload, and when the server read it (by the server's own
    clock: Redis stamps no time on a message). Every stream a message reaches gets the
    same Event; `memo` keeps what they make of it alike (the serialized response), made
    once."""

    channel: str
    pattern: str
    payload: bytes
    received_at: datetime
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class EventStream:
    """The events of one subscription, in order: `async for`. It ends (raises) with
    `ResourceExhausted` when its reader falls behind, `Unavailable` when Redis is lost.
    Always `close()` it (or use `async with`)."""

    def __init__(
        self,
        subscription: Subscription,
        channels: tuple[str, ...],
        patterns: dict[bytes, str],
        events: "Events",
    ) -> None:
        self._subscription = subscription
        self.channels = channels
        self.patterns = tuple(patterns.values())
        self._pattern_names = patterns
        self._events = events

    async def __aenter__(self) -> "EventStream":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> "EventStream":
        return self

    async def __anext__(self) -> Event:
        try:
            message = await anext(self._subscription)
        except ResourceExhausted:  # the reader fell behind: the stream ends
            record().slow_consumer()
            raise
        record().deliveries(1)
        return self._event(message)

    async def batch(self) -> list[Event]:
        """The events waiting now, oldest first, waiting for one if there are none: at most
        `BATCH_EVENTS`, of at most `BATCH_BYTES` of payload unless the first alone is larger.
        A reader that keeps up gets one event at a time; one that is behind gets what it
        missed at once. Ends (raises) as iterating does."""
        try:
            messages = await self._subscription.take(BATCH_EVENTS, BATCH_BYTES)
        except ResourceExhausted:
            record().slow_consumer()
            raise
        record().deliveries(len(messages))
        return [self._event(message) for message in messages]

    def _event(self, message: Message) -> Event:
        """The Event of `message`, made once for every stream it reaches."""
        event: Event | None = message.memo.get(Event)
        if event is None:
            pattern = message.pattern
            event = message.memo[Event] = Event(
                self._events.channel_name(message.channel),
                self._pattern_names[pattern] if pattern is not None else "",
                message.payload,
                datetime.fromtimestamp(message.received_at, UTC),
            )
        return event

    async def close(self) -> None:
        await self._subscription.close()


class Events:
    """Publish and subscribe. `buffer` is how many messages a subscriber may fall behind;
    `max_payload` the largest payload published, in bytes."""

    def __init__(self, redis: RedisBackend, buffer: int, max_payload: int) -> None:
        self._redis = redis
        self._space = redis.keys("events")
        self._buffer = buffer
        self._max_payload = max_payload

    async def publish(self, channel: str, payload: bytes) -> int:
        """Send `payload` on `channel`; how many server processes took it (see the
        contract: Redis subscriber connections, one per process)."""
        check_name("channel", channel)
        if len(payload) > self._max_payload:
            raise InvalidArgument(
                "payload", f"must be at most {self._max_payload:,} bytes, got {len(payload):,}"
            )
        return await self._redis.publish(self._space.channel(channel), payload)

    async def subscribe(self, channels: Sequence[str], patterns: Sequence[str]) -> EventStream:
        """A live subscription: every message published from the moment this returns
        reaches it, and none published before this was called."""
        count = len(channels) + len(patterns)
        if not 1 <= count <= MAX_NAMES:
            raise InvalidArgument(
                "channels",
                f"channels and patterns together must be 1 to {MAX_NAMES}, got {count:,}",
            )
        for kind, names in (("channels", channels), ("patterns", patterns)):
            for index, name in enumerate(names):
                check_name(f"{kind}[{index}]", name)
        unique_channels = tuple(dict.fromkeys(channels))
        pattern_names = {self._space.channel_pattern(p): p for p in dict.fromkeys(patterns)}
        subscription = await self._redis.subscribe(
            [self._space.channel(name) for name in unique_channels],
            list(pattern_names),
            self._buffer,
            BUFFER_BYTES,
        )
        return EventStream(subscription, unique_channels, pattern_names, self)

    def channel_name(self, channel: bytes) -> str:
        return self._space.channel_name(channel)
