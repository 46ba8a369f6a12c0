"""patterns_client.aio, the asyncio client, against a live server on Redis 7 and the
Cluster: every method of every service as a coroutine, and the recipes (the rate-limit
decorator, held locks with `async with`, cache-aside with coroutine functions, resilient
subscriptions with `async for`); test for test the counterpart of tests/test_client.py."""

import asyncio
import subprocess
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

import patterns_client
from devtools.processes import PatternsServer, RedisServer, free_port
from patterns_client import (
    Board,
    Event,
    Gap,
    InvalidArgument,
    LockNotAcquired,
    Mode,
    NotFound,
    Order,
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


def with_client(
    address: str, scenario: Callable[[aio.Client], Coroutine[Any, Any, T]], timeout: float = 10
) -> T:
    """`scenario(client)` on a fresh event loop, with a client of the server at `address`."""

    async def main() -> T:
        async with aio.Client(address, timeout=timeout) as client:
            return await scenario(client)

    return asyncio.run(main())


# Every method of every service


@live
def test_ratelimit_check_check_many_and_reset(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    key, policy, other = new_key(), Policy.gcra(3, MINUTE), new_key()

    async def scenario(client: aio.Client) -> None:
        decisions = [await client.ratelimit.check(key, policy) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert decisions[3].retry_after > timedelta(0) and decisions[3].limit == 3
        assert not (await client.ratelimit.check(key, policy, peek=True)).allowed
        await client.ratelimit.reset(key, policy)
        assert (await client.ratelimit.check(key, policy)).remaining == 2
        day = Policy.fixed_window(1, timedelta(days=1))
        allowed, results = await client.ratelimit.check_many(
            [(other, Policy.token_bucket(10, MINUTE)), (other, day)], all_or_nothing=True
        )
        assert allowed and [r.allowed for r in results] == [True, True]
        allowed, results = await client.ratelimit.check_many(
            [(other, Policy.sliding_window_log(10, MINUTE)), (other, day)], all_or_nothing=True
        )
        assert not allowed and [r.allowed for r in results] == [True, False]

    with_client(server.address, scenario)


@live
def test_counter_add_count_and_merge(server: PatternsServer, new_key: Callable[[], str]) -> None:
    monday, tuesday, week = new_key(), new_key(), new_key()

    async def scenario(client: aio.Client) -> None:
        assert await client.counter.add(monday, ["ann", "bob"], ttl=MINUTE)
        assert not await client.counter.add(monday, ["ann"])
        await client.counter.add(tuesday, ["bob", "cy"])
        assert await client.counter.count(monday) == 2
        assert await client.counter.count([monday, tuesday]) == 3
        assert await client.counter.merge(week, [monday, tuesday], ttl=MINUTE) == 3

    with_client(server.address, scenario)


@live
def test_leaderboard_methods(server: PatternsServer, new_key: Callable[[], str]) -> None:
    name, golf = new_key(), Board(new_key(), order=Order.LOW_FIRST)

    async def scenario(client: aio.Client) -> None:
        for member, score in [("ann", 10), ("bob", 30), ("cy", 20)]:
            await client.leaderboard.submit(name, member, score)
        best = await client.leaderboard.submit(name, "ann", 5, mode=Mode.BEST)
        assert (best.score, best.rank, best.updated) == (10, 3, False)
        more = await client.leaderboard.submit(name, "ann", 15, mode=Mode.INCREMENT)
        assert (more.score, more.rank, more.updated) == (25, 2, True)
        page = await client.leaderboard.top(name, 2)
        assert [(s.member, s.score, s.rank) for s in page.standings] == [
            ("bob", 30, 1),
            ("ann", 25, 2),
        ]
        assert page.total == 3
        assert await client.leaderboard.rank(name, "cy") == patterns_client.Standing("cy", 20, 3)
        assert await client.leaderboard.rank(name, "nobody") is None
        around = await client.leaderboard.around(name, "ann", 1)
        assert [s.member for s in around] == ["bob", "ann", "cy"]
        assert await client.leaderboard.around(name, "nobody") == []
        await client.leaderboard.submit(golf, "tom", 68)
        await client.leaderboard.submit(golf, "al", 72)
        assert (await client.leaderboard.top(golf)).standings[0].member == "tom"
        with pytest.raises(ValueError, match="current period"):
            await client.leaderboard.submit(Board(name, previous=True), "ann", 1)
        assert await client.leaderboard.remove(name, ["ann", "zed"]) == 1
        assert await client.leaderboard.size(name) == 2

    with_client(server.address, scenario)


@live
def test_sessions_methods(server: PatternsServer, new_key: Callable[[], str]) -> None:
    user = new_key()

    async def scenario(client: aio.Client) -> None:
        made = await client.sessions.create(user, ttl=MINUTE, attributes={"ip": "203.0.113.7"})
        assert made.user_id == user and made.attributes == {"ip": "203.0.113.7"}
        assert made.expires_at - made.created_at == MINUTE
        assert made.created_at.tzinfo is not None
        assert await client.sessions.get(made.id) == made
        assert await client.sessions.get(made.id, touch=True) is not None
        updated = await client.sessions.update(made.id, set={"role": "admin"}, remove=["ip"])
        assert updated.attributes == {"role": "admin"}
        rotated = await client.sessions.rotate(made.id)
        assert await client.sessions.get(made.id) is None
        other = await client.sessions.create(user, ttl=MINUTE)
        listed = await client.sessions.list(user)
        assert [s.id for s in listed.sessions] == [other.id, rotated.id] and listed.total == 2
        first = await client.sessions.list(user, limit=1)
        assert [s.id for s in first.sessions] == [other.id] and first.next_page_token
        rest = await client.sessions.list(user, limit=1, page_token=first.next_page_token)
        assert [s.id for s in rest.sessions] == [rotated.id] and rest.next_page_token == ""
        assert await client.sessions.destroy_all(user, except_id=rotated.id) == 1
        assert await client.sessions.destroy(rotated.id)
        assert not await client.sessions.destroy(rotated.id)
        with pytest.raises(NotFound) as gone:
            await client.sessions.update(rotated.id, set={"a": "b"})
        assert gone.value.reason == "SESSION_NOT_FOUND"
        with pytest.raises(NotFound):
            await client.sessions.rotate(rotated.id)

    with_client(server.address, scenario)


@live
def test_cache_methods(server: PatternsServer, new_key: Callable[[], str]) -> None:
    a, b, prefix = new_key(), new_key(), new_key()

    async def scenario(client: aio.Client) -> None:
        assert await client.cache.set(a, b"1", ttl=MINUTE, tags=["t:" + a])
        assert not await client.cache.set(a, b"2", only_if_absent=True)
        entry = await client.cache.get(a)
        assert entry is not None and entry.value == b"1" and entry.ttl_remaining <= MINUTE
        assert await client.cache.get(b) is None
        await client.cache.set(b, b"2", expire_at=datetime.now(UTC) + MINUTE)
        values = [e.value if e else None for e in await client.cache.get_many([a, b, prefix])]
        assert values == [b"1", b"2", None]
        assert await client.cache.invalidate_tags(["t:" + a]) == 1
        assert await client.cache.delete([a, b]) == 1
        await client.cache.set(prefix + ":x", b"x")
        await client.cache.set(prefix + ":y", b"y")
        assert await client.cache.invalidate_prefix(prefix + ":") == 2

    with_client(server.address, scenario)


@live
def test_lock_methods(server: PatternsServer, new_key: Callable[[], str]) -> None:
    name = new_key()

    async def scenario(client: aio.Client) -> None:
        lease = await client.locks.acquire(name, ttl=MINUTE)
        assert lease is not None and lease.fencing_token >= 1
        waited = await client.locks.acquire(name, ttl=MINUTE, wait=timedelta(milliseconds=50))
        assert waited is None
        extended = await client.locks.extend(lease, ttl=timedelta(minutes=2))
        assert extended is not None and extended.expires_at > lease.expires_at
        state = await client.locks.inspect(name)
        assert state.held and state.fencing_token == lease.fencing_token
        assert await client.locks.release(lease) is ReleaseStatus.RELEASED
        assert await client.locks.release(lease) is ReleaseStatus.NOT_HELD
        assert await client.locks.extend(lease, ttl=MINUTE) is None
        again = await client.locks.acquire(name, ttl=MINUTE)
        assert again is not None and again.fencing_token > lease.fencing_token
        assert await client.locks.force_release(name)
        assert not (await client.locks.inspect(name)).held
        assert not await client.locks.force_release(name)

    with_client(server.address, scenario)


@live
def test_events_publish_and_subscribe(server: PatternsServer, new_key: Callable[[], str]) -> None:
    channel = new_key()

    async def scenario(client: aio.Client) -> list[Any]:
        subscribe = client.events.subscribe(channels=[channel], patterns=[channel + ".*"])
        async with subscribe as subscription:
            await subscription.wait_subscribed(10)
            assert subscription.subscribed.is_set()
            assert await client.events.publish(channel, b"hello") >= 1
            assert await client.events.publish(channel + ".x", b"matched") >= 1
            return [await asyncio.wait_for(anext(subscription), 10) for _ in range(2)]

    direct, matched = with_client(server.address, scenario)
    assert isinstance(direct, Event) and isinstance(matched, Event)
    assert (direct.channel, direct.pattern, direct.payload) == (channel, "", b"hello")
    assert (matched.channel, matched.pattern, matched.payload) == (
        channel + ".x",
        channel + ".*",
        b"matched",
    )


@live
def test_events_that_waited_for_a_subscriber_come_one_by_one_in_order(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    channel = new_key()
    # 4 MiB first: more than gRPC's flow-control window holds, so what follows waits at the
    # server while the subscription is not read, and comes in batches.
    payloads = [b"%03d" % n + bytes(65_536) for n in range(64)] + [b"%d" % n for n in range(100)]

    async def scenario(client: aio.Client) -> list[Any]:
        async with client.events.subscribe(channels=[channel]) as subscription:
            await subscription.wait_subscribed(10)
            for payload in payloads:
                await client.events.publish(channel, payload)
            return [await asyncio.wait_for(anext(subscription), 10) for _ in payloads]

    events = with_client(server.address, scenario)
    assert all(isinstance(event, Event) for event in events)
    assert [event.payload for event in events] == payloads


@live
def test_wait_subscribed_returns_while_another_task_iterates(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    """The usual shape (a task relays events; the request handler waits for readiness):
    the reader holds the stream, so the confirmation must come from `subscribed`."""
    channel = new_key()

    async def scenario(client: aio.Client) -> float:
        async with client.events.subscribe(channels=[channel]) as subscription:
            reader = asyncio.ensure_future(anext(subscription))
            started = asyncio.get_running_loop().time()
            await subscription.wait_subscribed(10)
            waited = asyncio.get_running_loop().time() - started
            await client.events.publish(channel, b"after")
            item = await asyncio.wait_for(reader, 10)
            assert isinstance(item, Event) and item.payload == b"after"
            return waited

    print(f"wait_subscribed answered in {with_client(server.address, scenario):.3f} s")


# Errors


@live
def test_errors_are_python_exceptions_with_the_rich_status(server: PatternsServer) -> None:
    async def scenario(client: aio.Client) -> None:
        with pytest.raises(InvalidArgument) as invalid:
            await client.ratelimit.check("", Policy.gcra(1, MINUTE))
        assert invalid.value.reason == "INVALID_ARGUMENT"
        assert [v.field for v in invalid.value.field_violations] == ["key"]
        assert "key" in str(invalid.value)
        with pytest.raises(InvalidArgument) as invalid:
            await client.sessions.create("u", ttl=timedelta(days=400))
        assert invalid.value.field_violations[0].field == "ttl"
        with pytest.raises(InvalidArgument) as invalid:
            await client.counter.count([])
        assert [v.field for v in invalid.value.field_violations] == ["keys"]

    with_client(server.address, scenario)


def test_an_unreachable_server_is_unavailable() -> None:
    async def scenario(client: aio.Client) -> None:
        with pytest.raises(Unavailable):
            await client.counter.count("k")

    with_client(f"127.0.0.1:{free_port()}", scenario, timeout=2)


# Recipes: rate limiting


@live
def test_the_limited_decorator_raises_with_retry_after(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    prefix = new_key()

    async def scenario(client: aio.Client) -> None:
        @client.ratelimit.limited(
            key=lambda user: f"{prefix}:{user}",
            policy=Policy.gcra(3, MINUTE),
            fallback_after=PATIENT,
        )
        async def handle(user: str) -> str:
            return f"hello {user}"

        assert [await handle("ann") for _ in range(3)] == ["hello ann"] * 3
        with pytest.raises(RateLimited) as limited:
            await handle("ann")
        assert (limited.value.retry_after or timedelta(0)) > timedelta(seconds=1)
        assert await handle("bob") == "hello bob"  # another key
        assert handle.__name__ == "handle"
        assert asyncio.iscoroutinefunction(handle)

    with_client(server.address, scenario)


# Recipes: locks


@live
def test_hold_keeps_the_lock_for_the_block_and_releases_it(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(client: aio.Client) -> None:
        async def free() -> bool:
            return not (await client.locks.inspect(name)).held

        async with client.locks.hold(name, ttl=timedelta(milliseconds=300)) as held:
            await asyncio.sleep(0.8)  # past the ttl: the server renews it
            state = await client.locks.inspect(name)
            assert state.held and state.fencing_token == held.fencing_token
            assert not held.lost.is_set()
        await eventually_async(free)

    with_client(server.address, scenario)


@live
def test_hold_releases_when_the_block_raises(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(client: aio.Client) -> None:
        async def free() -> bool:
            return not (await client.locks.inspect(name)).held

        with pytest.raises(ZeroDivisionError):
            async with client.locks.hold(name, ttl=MINUTE):
                assert (await client.locks.inspect(name)).held
                _ = 1 / 0
        await eventually_async(free)

    with_client(server.address, scenario)


@live
def test_hold_that_cannot_get_the_lock_raises(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(client: aio.Client) -> None:
        assert await client.locks.acquire(name, ttl=MINUTE) is not None
        with pytest.raises(LockNotAcquired):
            async with client.locks.hold(name, ttl=MINUTE, wait=timedelta(milliseconds=100)):
                pytest.fail("the block ran without the lock")

    with_client(server.address, scenario)


@live
def test_hold_says_when_the_lease_is_lost(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(client: aio.Client) -> None:
        async with client.locks.hold(name, ttl=timedelta(milliseconds=300)) as held:
            await client.locks.force_release(name)
            await asyncio.wait_for(held.lost.wait(), 10)
            assert held.error is not None and held.error.reason == "LEASE_LOST"

    with_client(server.address, scenario)


HOLDER = """
import asyncio, sys
from datetime import timedelta
from patterns_client import aio

async def main() -> None:
    async with aio.Client(sys.argv[1]) as client:
        async with client.locks.hold(sys.argv[2], ttl=timedelta(minutes=5)):
            print("held", flush=True)
            await asyncio.sleep(600)

asyncio.run(main())
"""


@live
def test_a_killed_holders_lock_is_released(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, server.address, name], stdout=subprocess.PIPE, text=True
    )

    async def scenario(client: aio.Client) -> None:
        async def free() -> bool:
            return not (await client.locks.inspect(name)).held

        assert (await client.locks.inspect(name)).held
        holder.kill()  # SIGKILL: no cleanup in the holder; its connection drops
        holder.wait(10)
        await eventually_async(free)  # long before the 5 min ttl

    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with_client(server.address, scenario)
    finally:
        holder.kill()
        holder.wait(10)


# Recipes: cache-aside


@live
def test_fifty_concurrent_get_or_compute_compute_once(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    key, computed = new_key(), []

    async def scenario(client: aio.Client) -> list[bytes]:
        async def compute() -> bytes:
            computed.append(1)
            await asyncio.sleep(0.3)  # the others arrive meanwhile
            return b"expensive"

        reads = [
            client.cache.get_or_compute(
                key,
                compute,
                ttl=MINUTE,
                tags=["t"],
                wait=timedelta(seconds=30),
                fallback_after=PATIENT,
            )
            for _ in range(50)
        ]
        values = list(await asyncio.gather(*reads))
        entry = await client.cache.get(key)
        assert entry is not None and entry.value == b"expensive"
        return values

    assert with_client(server.address, scenario) == [b"expensive"] * 50
    assert len(computed) == 1


@live
def test_cached_decorator(server: PatternsServer, new_key: Callable[[], str]) -> None:
    prefix, calls = new_key(), []

    async def scenario(client: aio.Client) -> list[bytes]:
        @client.cache.cached(key=lambda n: f"{prefix}:{n}", ttl=MINUTE, fallback_after=PATIENT)
        async def square(n: int) -> bytes:
            calls.append(n)
            return str(n * n).encode()

        return [await square(3), await square(3), await square(4)]

    assert with_client(server.address, scenario) == [b"9", b"9", b"16"]
    assert calls == [3, 4]


# Recipes that need an outage: a Redis of the test's own.


@pytest.fixture
def outage(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> tuple[RedisServer, str]:
    """A Redis free to be stopped, and the address of a server in front of it."""
    return own_redis, server_on_own_redis().address


def test_graceful_failure_while_redis_is_down(outage: tuple[RedisServer, str]) -> None:
    redis, address = outage
    policy = Policy.gcra(1, MINUTE)

    async def scenario(client: aio.Client) -> None:
        redis.stop()
        with pytest.raises(Unavailable) as down:
            await client.ratelimit.check("k", policy)
        assert down.value.retry_after is not None and down.value.reason.startswith("REDIS_")
        opened = await client.ratelimit.check(
            "k", policy, on_unavailable="allow", fallback_after=PATIENT
        )
        assert opened.fallback and opened.allowed
        refused = await client.ratelimit.check(
            "k", policy, on_unavailable="deny", fallback_after=PATIENT
        )
        assert refused.fallback and not refused.allowed and refused.retry_after > timedelta(0)

        @client.ratelimit.limited(key=lambda: "k", policy=policy)  # allows by default
        async def open_door() -> str:
            return "in"

        @client.ratelimit.limited(key=lambda: "k", policy=policy, on_unavailable="deny")
        async def closed_door() -> str:
            return "in"

        assert await open_door() == "in"
        with pytest.raises(RateLimited):
            await closed_door()

        async def source() -> bytes:
            return b"from the source"

        assert await client.cache.get_or_compute("k", source) == b"from the source"

    with_client(address, scenario, timeout=5)


def test_a_subscription_survives_a_redis_restart_and_reports_the_gap(
    outage: tuple[RedisServer, str],
) -> None:
    redis, address = outage

    async def scenario(client: aio.Client) -> list[Any]:
        items: list[Any] = []
        subscription = client.events.subscribe(channels=["news"])

        async def read() -> None:
            async for item in subscription:
                items.append(item)

        async def received(count: int) -> bool:
            return len(items) == count

        async def interrupted() -> bool:
            return not subscription.subscribed.is_set()

        reader = asyncio.ensure_future(read())
        await subscription.wait_subscribed(10)
        await client.events.publish("news", b"before")
        await eventually_async(lambda: received(1))
        redis.stop()
        await eventually_async(interrupted)
        redis.start()
        await asyncio.wait_for(subscription.subscribed.wait(), 30)
        await client.events.publish("news", b"after")
        await eventually_async(lambda: received(3))
        await subscription.close()
        await asyncio.wait_for(reader, 10)  # closing ended the iteration
        return items

    before, gap, after = with_client(address, scenario, timeout=5)
    assert isinstance(gap, Gap) and isinstance(gap.error, Unavailable)
    assert (before.payload, after.payload) == (b"before", b"after")
