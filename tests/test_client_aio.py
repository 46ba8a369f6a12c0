"""patterns_client.aio, the asyncio client, against a live server on Redis 7 and the
Cluster: every service's methods as coroutines, and the recipes with `async with`,
`async for` and coroutine functions."""

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from devtools.processes import PatternsServer, RedisServer
from patterns_client import (
    Event,
    Gap,
    InvalidArgument,
    LockNotAcquired,
    Mode,
    NotFound,
    Policy,
    RateLimited,
    ReleaseStatus,
    Unavailable,
    aio,
)
from tests.waiting import eventually_async

live = pytest.mark.parametrize("backend_url", ["redis7", "cluster"], indirect=True)
MINUTE = timedelta(minutes=1)
# The recipes' fallback budget in tests that count what the server decided: one that no
# busy machine exhausts (tests/test_client_fallbacks.py tests the budget itself).
PATIENT = timedelta(seconds=10)
T = TypeVar("T")


def with_client(address: str, scenario: Callable[[aio.Client], Coroutine[Any, Any, T]]) -> T:
    """`scenario(client)` on a fresh event loop, with a client of the server at `address`."""

    async def main() -> T:
        async with aio.Client(address, timeout=10) as client:
            return await scenario(client)

    return asyncio.run(main())


@live
def test_every_service_as_coroutines(server: PatternsServer, new_key: Callable[[], str]) -> None:
    key = new_key()

    async def scenario(client: aio.Client) -> None:
        policy = Policy.gcra(2, MINUTE)
        allowed = [(await client.ratelimit.check(key, policy)).allowed for _ in range(3)]
        assert allowed == [True, True, False]
        await client.ratelimit.reset(key, policy)
        together, _ = await client.ratelimit.check_many([(key, policy)], all_or_nothing=True)
        assert together

        assert await client.counter.add(key, ["a", "b"])
        assert await client.counter.count([key]) == 2
        assert await client.counter.merge(key + ":copy", [key]) == 2

        await client.leaderboard.submit(key, "ann", 10)
        await client.leaderboard.submit(key, "ann", 5, mode=Mode.INCREMENT)
        assert (await client.leaderboard.top(key)).standings[0].score == 15
        assert (await client.leaderboard.rank(key, "ann")) is not None
        assert len(await client.leaderboard.around(key, "ann")) == 1
        assert await client.leaderboard.remove(key, ["ann"]) == 1
        assert await client.leaderboard.size(key) == 0

        made = await client.sessions.create(key, ttl=MINUTE, attributes={"a": "1"})
        assert (await client.sessions.get(made.id, touch=True)) is not None
        assert (await client.sessions.update(made.id, set={"b": "2"})).attributes == {
            "a": "1",
            "b": "2",
        }
        rotated = await client.sessions.rotate(made.id)
        assert await client.sessions.get(made.id) is None
        assert (await client.sessions.list(key)).total == 1
        assert await client.sessions.destroy(rotated.id)
        assert await client.sessions.destroy_all(key) == 0
        with pytest.raises(NotFound):
            await client.sessions.rotate(rotated.id)

        assert await client.cache.set(key, b"v", ttl=MINUTE, tags=["t:" + key])
        entry = await client.cache.get(key)
        assert entry is not None and entry.value == b"v"
        assert [e is not None for e in await client.cache.get_many([key, key + ":no"])] == [
            True,
            False,
        ]
        assert await client.cache.invalidate_tags(["t:" + key]) == 1
        await client.cache.set(key + ":p1", b"1")
        assert await client.cache.invalidate_prefix(key + ":p") == 1
        assert await client.cache.delete(key) == 0

        lease = await client.locks.acquire(key, ttl=MINUTE)
        assert lease is not None
        assert await client.locks.extend(lease, ttl=MINUTE) is not None
        assert (await client.locks.inspect(key)).held
        assert await client.locks.release(lease) is ReleaseStatus.RELEASED
        assert not await client.locks.force_release(key)

        with pytest.raises(InvalidArgument) as invalid:
            await client.counter.count([])
        assert [v.field for v in invalid.value.field_violations] == ["keys"]

    with_client(server.address, scenario)


@live
def test_the_limited_decorator_on_a_coroutine_function(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    prefix = new_key()

    async def scenario(client: aio.Client) -> None:
        @client.ratelimit.limited(
            key=lambda user: f"{prefix}:{user}",
            policy=Policy.gcra(1, MINUTE),
            fallback_after=PATIENT,
        )
        async def handle(user: str) -> str:
            return user

        assert await handle("ann") == "ann"
        with pytest.raises(RateLimited) as limited:
            await handle("ann")
        assert (limited.value.retry_after or timedelta(0)) > timedelta(seconds=1)

    with_client(server.address, scenario)


@live
def test_async_hold_releases_on_exit_and_on_exception(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(client: aio.Client) -> None:
        async def free() -> bool:
            return not (await client.locks.inspect(name)).held

        async with client.locks.hold(name, ttl=timedelta(milliseconds=300)) as held:
            await asyncio.sleep(0.8)  # past the ttl: renewed by the server
            assert (await client.locks.inspect(name)).fencing_token == held.fencing_token
            assert not held.lost.is_set()
        await eventually_async(free)
        with pytest.raises(ZeroDivisionError):
            async with client.locks.hold(name, ttl=MINUTE):
                _ = 1 / 0
        await eventually_async(free)
        assert await client.locks.acquire(name, ttl=MINUTE) is not None
        with pytest.raises(LockNotAcquired):
            async with client.locks.hold(name, ttl=MINUTE, wait=timedelta(milliseconds=100)):
                pytest.fail("the block ran without the lock")
        await client.locks.force_release(name)
        async with client.locks.hold(name, ttl=timedelta(milliseconds=300)) as held:
            await client.locks.force_release(name)
            await asyncio.wait_for(held.lost.wait(), 10)
            assert held.error is not None and held.error.reason == "LEASE_LOST"

    with_client(server.address, scenario)


@live
def test_fifty_concurrent_get_or_compute_compute_once(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    key, computed = new_key(), []

    async def scenario(client: aio.Client) -> list[bytes]:
        async def compute() -> bytes:
            computed.append(1)
            await asyncio.sleep(0.3)
            return b"expensive"

        reads = [
            client.cache.get_or_compute(
                key, compute, ttl=MINUTE, wait=timedelta(seconds=30), fallback_after=PATIENT
            )
            for _ in range(50)
        ]
        return list(await asyncio.gather(*reads))

    assert with_client(server.address, scenario) == [b"expensive"] * 50
    assert len(computed) == 1


@live
def test_the_cached_decorator_on_a_coroutine_function(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    prefix, calls = new_key(), []

    async def scenario(client: aio.Client) -> list[bytes]:
        @client.cache.cached(key=lambda n: f"{prefix}:{n}", ttl=MINUTE, fallback_after=PATIENT)
        async def square(n: int) -> bytes:
            calls.append(n)
            return str(n * n).encode()

        return [await square(3), await square(3)]

    assert with_client(server.address, scenario) == [b"9", b"9"]
    assert calls == [3]


def test_async_recipes_while_redis_is_down_and_after(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    server = server_on_own_redis()

    async def scenario(client: aio.Client) -> list[Any]:
        items: list[Any] = []
        subscription = client.events.subscribe(channels=["news"])

        async def read() -> None:
            async for item in subscription:
                items.append(item)

        reader = asyncio.ensure_future(read())
        await asyncio.wait_for(subscription.subscribed.wait(), 10)
        await client.events.publish("news", b"before")

        async def received(count: int) -> bool:
            return len(items) == count

        await eventually_async(lambda: received(1))
        own_redis.stop()

        async def interrupted() -> bool:
            return not subscription.subscribed.is_set()

        await eventually_async(interrupted)
        with pytest.raises(Unavailable):
            await client.ratelimit.check("k", Policy.gcra(1, MINUTE))
        fallback = await client.ratelimit.check("k", Policy.gcra(1, MINUTE), on_unavailable="deny")
        assert fallback.fallback and not fallback.allowed

        async def source() -> bytes:
            return b"from the source"

        assert await client.cache.get_or_compute("k", source) == b"from the source"
        own_redis.start()
        await asyncio.wait_for(subscription.subscribed.wait(), 30)
        await client.events.publish("news", b"after")
        await eventually_async(lambda: received(3))
        await subscription.close()
        await asyncio.wait_for(reader, 10)  # closing ended the iteration
        return items

    before, gap, after = with_client(server.address, scenario)
    assert isinstance(before, Event) and before.payload == b"before"
    assert isinstance(gap, Gap)
    assert isinstance(after, Event) and after.payload == b"after"
