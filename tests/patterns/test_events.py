"""Events used directly: publish and subscribe, a subscription live exactly from when
`subscribe` returns, patterns that match only in the namespace, a slow consumer ended
alone, and every message delivered to every subscriber under concurrency."""

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from patterns_server.core.errors import InvalidArgument, ResourceExhausted
from patterns_server.events.events import Event, Events, EventStream
from patterns_server.storage import RedisBackend
from tests.conftest import node_clients
from tests.patterns import WithRedis
from tests.waiting import eventually_async

BUFFER = 1_000
MAX_PAYLOAD = 1_024


def events_of(redis: RedisBackend, buffer: int = BUFFER) -> Events:
    return Events(redis, buffer, MAX_PAYLOAD)


def name(new_key: Callable[[], str]) -> str:
    return new_key().replace(":", ".")  # a channel name that reads like one


async def next_event(stream: EventStream, within: float = 10) -> Event:
    async with asyncio.timeout(within):
        return await anext(stream)


def test_events_arrive_in_order_with_their_channel(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    channel = name(new_key)

    async def scenario(redis: RedisBackend) -> list[bytes]:
        events = events_of(redis)
        async with await events.subscribe([channel, channel], []) as stream:
            assert (stream.channels, stream.patterns) == ((channel,), ())  # no duplicates
            for n in range(100):
                await events.publish(channel, b"%d" % n)
            received = [await next_event(stream) for _ in range(100)]
        assert {(e.channel, e.pattern) for e in received} == {(channel, "")}
        assert all(abs(e.received_at.timestamp() - time.time()) < 60 for e in received)
        return [e.payload for e in received]

    assert with_redis(scenario) == [b"%d" % n for n in range(100)]


def test_publish_counts_the_processes_that_listen(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """Redis subscriber connections: one per process, however many subscriptions it has."""
    channel = name(new_key)

    async def scenario(redis: RedisBackend) -> None:
        events = events_of(redis)
        assert await events.publish(channel, b"nobody listens") == 0
        streams = [await events.subscribe([channel], []) for _ in range(3)]
        assert await events.publish(channel, b"") == 1
        for stream in streams:
            await stream.close()
        assert redis.subscribed == (0, 0)  # the last one out unsubscribed

        async def nobody_listens() -> bool:
            return await events.publish(channel, b"") == 0

        await eventually_async(nobody_listens)  # once Redis has read the UNSUBSCRIBE

    with_redis(scenario)


def test_a_subscription_starts_exactly_when_subscribe_returns(
    with_redis: WithRedis, backend_url: str, new_key: Callable[[], str]
) -> None:
    """None of the messages published before `subscribe` was called reaches it, even
    those the hub has yet to read for another subscription of the channel; one published
    after it returned does."""
    channel = name(new_key)

    async def scenario(redis: RedisBackend) -> None:
        events = events_of(redis, buffer=10_000)
        async with await events.subscribe([channel], []) as earlier:  # the channel is live
            # Published by a plain client, blocking this thread: the hub, on this event
            # loop, reads none of them before the next subscribe is called.
            publish_blocking(backend_url, redis.keys("events").channel(channel), 1_000)
            async with await events.subscribe([channel], []) as later:
                await events.publish(channel, b"after")
                assert (await next_event(later)).payload == b"after"
            seen = [(await next_event(earlier)).payload for _ in range(1_001)]
            assert seen == [b"before"] * 1_000 + [b"after"]

    with_redis(scenario)


def publish_blocking(url: str, redis_channel: bytes, count: int) -> None:
    """PUBLISH b"before" `count` times on `redis_channel`, from a plain client of the node
    that holds the subscriptions to it (the one Redis, or one Cluster node), so that they
    reach the hub in order with the commands it sends there."""
    clients = node_clients(url)
    try:
        (hub_node,) = [c for c in clients if c.pubsub_numsub(redis_channel)[0][1] == 1]
        pipe = hub_node.pipeline(transaction=False)
        for _ in range(count):
            pipe.publish(redis_channel, b"before")
        assert pipe.execute() == [1] * count
    finally:
        for client in clients:
            client.close()


def test_patterns_match_and_say_which(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    base = name(new_key)
    pattern = f"{base}.*"

    async def scenario(redis: RedisBackend) -> list[tuple[str, str, bytes]]:
        events = events_of(redis)
        async with await events.subscribe([f"{base}.eu"], [pattern]) as stream:
            assert stream.patterns == (pattern,)
            await events.publish(f"{base}.eu", b"a")  # the channel and the pattern: twice
            await events.publish(f"{base}.us", b"b")
            await events.publish(f"{base}eu", b"not matched")
            await events.publish(f"{base}.end", b"end")  # once it is read, so are the others
            received: list[tuple[str, str, bytes]] = []
            while not received or received[-1][2] != b"end":
                event = await next_event(stream)
                received.append((event.channel, event.pattern, event.payload))
        return received

    assert sorted(with_redis(scenario)) == [
        (f"{base}.end", pattern, b"end"),
        (f"{base}.eu", "", b"a"),
        (f"{base}.eu", pattern, b"a"),
        (f"{base}.us", pattern, b"b"),
    ]


def test_a_pattern_matches_only_channels_of_its_namespace(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """`*` does not see what another namespace, or anything else, publishes on the same
    Redis."""
    channel = name(new_key)

    async def scenario(redis: RedisBackend) -> tuple[str, str, bytes]:
        events = events_of(redis)
        async with await events.subscribe([], ["*"]) as stream:
            await redis.publish(redis.keys("events", "other-team").channel(channel), b"theirs")
            await redis.publish(b"elsewhere:" + channel.encode(), b"not ours")
            await events.publish(channel, b"ours")
            first = await next_event(stream)  # Redis keeps the order: the others came first
        return first.channel, first.pattern, first.payload

    assert with_redis(scenario) == (channel, "*", b"ours")


def test_a_slow_consumer_is_ended_alone_with_resource_exhausted(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    channel = name(new_key)

    async def scenario(redis: RedisBackend) -> None:
        slow_events, events = events_of(redis, buffer=10), events_of(redis)
        async with (
            await slow_events.subscribe([channel], []) as slow,
            await events.subscribe([channel], []) as reader,
        ):
            for n in range(50):  # nobody reads meanwhile: 50 for a buffer of 10
                await events.publish(channel, b"%d" % n)
            received = [(await next_event(reader)).payload for _ in range(50)]
            assert received == [b"%d" % n for n in range(50)]  # the other reader: all of them
            # By now the hub has handed the slow one all 50 too: it was ended at the 11th.
            with pytest.raises(ResourceExhausted) as ended:
                await next_event(slow)
            assert ended.value.reason == "SLOW_CONSUMER"
            assert redis.subscribed == (1, 0)  # the channel stays, for the other reader

    with_redis(scenario)


def test_every_subscriber_gets_every_message_in_each_publishers_order(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """10 publishers x 100 messages at once, 20 subscriptions over two Events (as if two
    services of one process): each subscription gets exactly the 1,000, each
    publisher's in the order it sent them."""
    channel = name(new_key)

    async def scenario(redis: RedisBackend) -> tuple[set[int], list[dict[int, list[int]]]]:
        publishers, subscribers = events_of(redis), [events_of(redis), events_of(redis)]
        streams = [await subscribers[n % 2].subscribe([channel], []) for n in range(20)]

        async def publish(publisher: int) -> list[int]:
            return [
                await publishers.publish(channel, b"%d:%d" % (publisher, n)) for n in range(100)
            ]

        receivers = await asyncio.gather(*(publish(p) for p in range(10)))
        received = []
        for stream in streams:
            by_publisher: dict[int, list[int]] = {}
            for _ in range(1_000):
                publisher, n = map(int, (await next_event(stream)).payload.split(b":"))
                by_publisher.setdefault(publisher, []).append(n)
            received.append(by_publisher)
            await stream.close()
        return {count for counts in receivers for count in counts}, received

    receivers, received = with_redis(scenario)
    assert receivers == {1}  # one process: one Redis subscriber
    assert received == [{p: list(range(100)) for p in range(10)}] * 20


def test_two_hundred_publishes_at_once_all_reach_the_subscriber(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    channel = name(new_key)

    async def scenario(redis: RedisBackend) -> tuple[list[int], list[int]]:
        events = events_of(redis)
        async with await events.subscribe([channel], []) as stream:
            receivers = await asyncio.gather(
                *(events.publish(channel, b"%d" % n) for n in range(200))
            )
            received = [int((await next_event(stream)).payload) for _ in range(200)]
        return receivers, sorted(received)

    receivers, received = with_redis(scenario)
    assert receivers == [1] * 200
    assert received == list(range(200))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda events: events.publish("", b""), "channel"),
        (lambda events: events.publish("c" * 513, b""), "channel"),
        (lambda events: events.publish("c", b"p" * (MAX_PAYLOAD + 1)), "payload"),
        (lambda events: events.subscribe([], []), "channels"),
        (lambda events: events.subscribe([f"c{n}" for n in range(60)], ["p"] * 41), "channels"),
        (lambda events: events.subscribe(["c", ""], []), "channels[1]"),
        (lambda events: events.subscribe([], ["p" * 513]), "patterns[0]"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    with_redis: WithRedis, call: Callable[[Events], Awaitable[object]], field: str
) -> None:
    async def scenario(redis: RedisBackend) -> None:
        with pytest.raises(InvalidArgument) as refused:
            await call(events_of(redis))
        assert refused.value.field == field
        assert redis.subscribed == (0, 0)  # refused before subscribing anything

    with_redis(scenario)
