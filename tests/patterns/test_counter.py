"""UniqueCounter used directly: counts, unions, merges and expiry, and nothing lost under
concurrency."""

import asyncio
from collections.abc import Callable
from datetime import timedelta

from patterns_server.counter.counter import UniqueCounter
from patterns_server.storage import RedisBackend
from tests.patterns import WithRedis


def test_unique_counter_counts_merges_and_expires(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    monday, tuesday, week = new_key(), new_key(), new_key()

    async def scenario(redis: RedisBackend) -> None:
        counter = UniqueCounter(redis)
        assert await counter.add(monday, ["alice", "bob"], timedelta(hours=1))
        assert not await counter.add(monday, ["bob"])
        await counter.add(tuesday, ["bob", "carol"])
        assert await counter.count([monday]) == 2
        assert await counter.count([monday, tuesday]) == 3
        assert await counter.merge(week, [monday, tuesday], timedelta(milliseconds=200)) == 3
        await asyncio.sleep(0.4)
        assert await counter.count([week]) == 0

    with_redis(scenario)


def test_unique_counter_loses_nothing_under_concurrency(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> int:
        counter = UniqueCounter(redis)
        await asyncio.gather(
            *(counter.add(key, [f"user-{n}-{i}" for i in range(50)]) for n in range(40))
        )
        return await counter.count([key])

    # HyperLogLog counts are estimates (standard error 0.81%): within 2% of 2,000.
    assert abs(with_redis(scenario) - 2_000) <= 40
