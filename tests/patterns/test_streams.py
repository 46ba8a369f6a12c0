"""Streams used directly: a group's consumers share entries exactly, an entry trimmed while
pending is dropped (not redelivered, not dead-lettered), lag where Redis does not say it,
the idempotency window, and a delivery past its ack timeout no longer counts in flight."""

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from patterns_server.core.errors import Aborted, InvalidArgument
from patterns_server.storage import RedisBackend
from patterns_server.streams.streams import Consumer, Retention, Start, Streams
from tests.patterns import WithRedis

WITHIN = 10.0  # seconds: what should come within a second or two


async def take(consumer: Consumer, count: int) -> list[str]:
    """The ids of the next `count` deliveries."""
    ids: list[str] = []
    async with asyncio.timeout(WITHIN):
        while len(ids) < count:
            ids += [delivery.entry.id for delivery in await consumer.deliveries()]
    return ids


def test_five_consumers_of_a_group_split_entries_exactly(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario(redis: RedisBackend) -> None:
        streams = Streams(redis)
        appended = [(await streams.append(stream, b"%d" % n, {}))[0] for n in range(300)]
        consumers = [
            await streams.consume(stream, "g", f"c{n}", Start.EARLIEST, max_in_flight=7)
            for n in range(5)
        ]
        seen: list[list[str]] = [[] for _ in consumers]

        async def work(number: int) -> None:
            consumer = consumers[number]
            while sum(map(len, seen)) < len(appended):
                try:
                    async with asyncio.timeout(0.5):
                        batch = await consumer.deliveries()
                except TimeoutError:
                    continue
                ids = [delivery.entry.id for delivery in batch]
                assert all(d.delivery_count == 1 for d in batch)
                assert len(batch) <= 7
                seen[number] += ids
                consumer.ack_soon(ids)

        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*(work(n) for n in range(5)))
        finally:
            for consumer in consumers:
                await consumer.close()
        everything = [entry_id for ids in seen for entry_id in ids]
        assert sorted(everything) == sorted(appended)  # none lost, none twice
        info = await streams.info(stream)
        assert info.groups[0].pending == 0 and info.groups[0].lag == 0

    with_redis(scenario)


def test_an_entry_trimmed_while_pending_is_dropped(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario(redis: RedisBackend) -> None:
        streams = Streams(redis)
        for n in range(150):  # two nodes: the first can go whole
            await streams.append(stream, b"%d" % n, {})
        timeout = timedelta(milliseconds=300)
        consumer = await streams.consume(
            stream, "g", "c", Start.EARLIEST, max_in_flight=1, ack_timeout=timeout
        )
        async with consumer:
            (first,) = await take(consumer, 1)
            deleted = await streams.trim(stream, Retention(max_len=50))
            assert deleted == 100
            # The next due check claims the deleted entry: it is acknowledged and dropped,
            # and the consumer moves on to the entries that remain.
            later = await take(consumer, 1)
            assert later != [first]
            assert (await streams.read(stream + ":dead")) == []
        info = await streams.info(stream)
        assert info.groups[0].pending <= 1  # at most the one in flight just now

    with_redis(scenario)


def test_lag_is_counted_where_redis_does_not_say_it(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario(redis: RedisBackend) -> None:
        streams = Streams(redis)
        for n in range(250):
            await streams.append(stream, b"%d" % n, {})
        consumer = await streams.consume(stream, "g", "c", Start.EARLIEST, max_in_flight=20)
        async with consumer:
            await take(consumer, 20)
        assert (await streams.info(stream)).groups[0].lag == 230
        # Deleting entries leaves Redis 7 unsure of the lag (it says nil): counted instead.
        await streams.trim(stream, Retention(max_len=100))
        info = await streams.info(stream)
        assert (info.length, info.groups[0].lag) == (150, 150), info

    with_redis(scenario)


def test_an_idempotency_key_is_remembered_for_its_window(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario(redis: RedisBackend) -> None:
        streams = Streams(redis)
        window = timedelta(seconds=1)
        first, duplicate = await streams.append(stream, b"a", {}, "k", window)
        assert not duplicate
        assert await streams.append(stream, b"b", {}, "k", window) == (first, True)
        await asyncio.sleep(1.2)
        second, duplicate = await streams.append(stream, b"c", {}, "k", window)
        assert not duplicate and second != first
        assert [e.payload for e in await streams.read(stream)] == [b"a", b"c"]
        last = f"{2**64 - 1}-{2**64 - 1}"  # the largest id there can be: nothing after it
        assert await streams.read(stream, after_id=last) == []
        assert len(await streams.read(stream, after_id=f"{2**64 - 1}")) == 0

    with_redis(scenario)


def test_a_delivery_past_its_ack_timeout_stops_counting_in_flight(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario(redis: RedisBackend) -> None:
        streams = Streams(redis)
        entry, _ = await streams.append(stream, b"x", {})
        consumer = await streams.consume(
            stream,
            "g",
            "c",
            Start.EARLIEST,
            max_in_flight=1,
            ack_timeout=timedelta(milliseconds=200),
        )
        async with consumer:
            assert await take(consumer, 1) == [entry]
            # Never acked: after 200 ms it is up for redelivery, to this same consumer,
            # though its one place in flight was taken.
            async with asyncio.timeout(WITHIN):
                (again,) = await consumer.deliveries()
            assert (again.entry.id, again.delivery_count) == (entry, 2)
            with pytest.raises(InvalidArgument) as refused:
                await consumer.nack([entry], timedelta(seconds=1))  # beyond the ack timeout
            assert refused.value.field == "delay"

    with_redis(scenario)


def test_a_nack_after_the_group_was_deleted_says_so(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario(redis: RedisBackend) -> None:
        streams = Streams(redis)
        entry, _ = await streams.append(stream, b"x", {})
        consumer = await streams.consume(stream, "g", "c", Start.EARLIEST)
        async with consumer:
            assert await take(consumer, 1) == [entry]
            assert await streams.delete_group(stream, "g")
            assert await consumer.ack([entry]) == 0  # nothing pending any more
            with pytest.raises(Aborted) as deleted:
                await consumer.nack([entry])
            assert deleted.value.reason == "GROUP_DELETED"

    with_redis(scenario)
