"""Locker used directly: leases, fencing tokens, waiting without polling, `keep`, and
exactly one holder however many ask at once."""

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import pytest

from devtools.processes import RedisServer
from patterns_server.core.errors import Aborted, InvalidArgument, Unavailable
from patterns_server.core.units import EPOCH, MICROSECOND
from patterns_server.lock.lock import Locker, LockState, ReleaseStatus
from patterns_server.storage import RedisBackend
from patterns_server.storage.leases import Lease
from patterns_server.storage.wakeups import FALLBACK_SECONDS
from tests.patterns import WithRedis
from tests.waiting import eventually_async

MINUTE = timedelta(minutes=1)


def microseconds(instant: datetime) -> int:
    """An instant of the Redis clock as microseconds since the epoch (a first token)."""
    return (instant - EPOCH) // MICROSECOND


async def once_granted(acquire: Callable[[], Awaitable[Lease | None]]) -> Lease:
    """The lease `acquire()` grants once Redis answers again (after a restart)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            lease = await acquire()
        except Unavailable:
            assert asyncio.get_running_loop().time() < deadline, "Redis did not come back"
            await asyncio.sleep(0.1)
            continue
        assert lease is not None
        return lease


def test_one_holder_at_a_time_and_release_frees_the_lock(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(redis: RedisBackend) -> None:
        locker = Locker(redis)
        before = await redis.now()
        lease = await locker.acquire(name, MINUTE)
        after = await redis.now()
        assert lease is not None and len(lease.token) >= 22
        assert microseconds(before) <= lease.number <= microseconds(after)  # the first
        assert before + MINUTE <= lease.expires_at <= after + MINUTE  # on the Redis clock
        assert await locker.acquire(name, MINUTE) is None
        assert await locker.release(name, lease.token) is ReleaseStatus.RELEASED
        again = await locker.acquire(name, MINUTE)
        assert again is not None and again.token != lease.token and again.number > lease.number

    with_redis(scenario)


def test_release_never_touches_another_holders_lease(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(redis: RedisBackend) -> None:
        locker = Locker(redis)
        assert await locker.release(name, "any-token") is ReleaseStatus.NOT_HELD
        lease = await locker.acquire(name, MINUTE)
        assert lease is not None
        assert await locker.release(name, "not-the-token") is ReleaseStatus.HELD_BY_OTHER
        assert (await locker.inspect(name)).held
        assert await locker.release(name, lease.token) is ReleaseStatus.RELEASED
        assert await locker.release(name, lease.token) is ReleaseStatus.NOT_HELD

    with_redis(scenario)


def test_extend_renews_the_holders_lease_and_no_one_elses(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(redis: RedisBackend) -> None:
        locker = Locker(redis)
        lease = await locker.acquire(name, timedelta(seconds=10))
        assert lease is not None
        before = await redis.now()
        ends = await locker.extend(name, lease.token, MINUTE)
        after = await redis.now()
        assert ends is not None and before + MINUTE <= ends <= after + MINUTE
        assert (await locker.inspect(name)).ttl_remaining > timedelta(seconds=50)
        assert await locker.extend(name, "not-the-token", MINUTE) is None
        await locker.release(name, lease.token)
        assert await locker.extend(name, lease.token, MINUTE) is None  # gone: not revived
        assert not (await locker.inspect(name)).held

    with_redis(scenario)


def test_inspect_shows_the_lease_and_force_release_ends_it(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(redis: RedisBackend) -> None:
        locker = Locker(redis)
        assert await locker.inspect(name) == LockState(False, 0, timedelta(0))
        lease = await locker.acquire(name, MINUTE)
        assert lease is not None
        state = await locker.inspect(name)
        assert state.held and state.fencing_token == lease.number
        assert timedelta(seconds=50) < state.ttl_remaining <= MINUTE
        assert await locker.force_release(name)
        assert not await locker.force_release(name)  # nobody held it any more
        assert await locker.inspect(name) == LockState(False, 0, timedelta(0))
        assert await locker.release(name, lease.token) is ReleaseStatus.NOT_HELD

    with_redis(scenario)


def test_fencing_tokens_grow_with_every_grant_however_the_last_ended(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """Released, force-released, or expired (the counter outlives every lease): the next
    grant of the name has a greater token, at least the Redis clock's microseconds."""
    name = new_key()

    async def scenario(redis: RedisBackend) -> tuple[list[int], int, int]:
        locker = Locker(redis)
        numbers = []
        started = await redis.now()
        for _ in range(3):
            lease = await locker.acquire(name, MINUTE)
            assert lease is not None
            numbers.append(lease.number)
            await locker.release(name, lease.token)
        for _ in range(2):
            lease = await locker.acquire(name, MINUTE)
            assert lease is not None
            numbers.append(lease.number)
            await locker.force_release(name)
        for _ in range(3):  # each waits for the last one's 50 ms lease to expire
            lease = await locker.acquire(name, timedelta(milliseconds=50), wait=MINUTE)
            assert lease is not None
            numbers.append(lease.number)
        return numbers, microseconds(started), microseconds(await redis.now())

    numbers, started_us, ended_us = with_redis(scenario)
    assert len(numbers) == 8
    assert all(a < b for a, b in itertools.pairwise(numbers)), numbers
    # The clock's microseconds, or one more than the last token when the clock is behind it.
    assert started_us <= numbers[0] and numbers[-1] <= ended_us + len(numbers)


def test_fencing_tokens_keep_growing_when_redis_loses_its_data(own_redis: RedisServer) -> None:
    """Redis restarted without persistence forgets the fence counter: the next token
    starts again from the Redis clock's microseconds, above every token it issued before
    (it once started again from 1: 5 -> 1)."""

    async def scenario() -> tuple[list[int], int]:
        redis = RedisBackend.from_url(own_redis.url, prefix="p", timeout=5, batch_wait=0.001)
        try:
            locker = Locker(redis)
            before = []
            for _ in range(5):
                lease = await locker.acquire("job", MINUTE)
                assert lease is not None
                before.append(lease.number)
                await locker.release("job", lease.token)
            own_redis.stop()  # killed: nothing saved (--save "" --appendonly no)
            own_redis.start()
            assert own_redis.client().dbsize() == 0  # the counter is gone
            lease = await once_granted(lambda: locker.acquire("job", MINUTE))
            return before, lease.number
        finally:
            await redis.close()

    before, after = asyncio.run(scenario())
    assert all(a < b for a, b in itertools.pairwise(before))
    assert after > before[-1], f"the token went back from {before[-1]} to {after}"


def test_a_counter_ahead_of_the_clock_goes_on_by_one(own_redis: RedisServer) -> None:
    """While Redis keeps the counter, tokens grow by one past it even when the clock is
    behind it (a clock stepped back, or grants faster than one a microsecond)."""

    async def scenario() -> tuple[int, list[int]]:
        redis = RedisBackend.from_url(own_redis.url, prefix="p", timeout=5, batch_wait=0.001)
        try:
            ahead = microseconds(await redis.now()) + 3_600_000_000  # an hour ahead
            own_redis.client().set(redis.keys("lock")("job", "fence"), ahead)
            locker, numbers = Locker(redis), []
            for _ in range(3):
                lease = await locker.acquire("job", MINUTE)
                assert lease is not None
                numbers.append(lease.number)
                await locker.release("job", lease.token)
            return ahead, numbers
        finally:
            await redis.close()

    ahead, numbers = asyncio.run(scenario())
    assert numbers == [ahead + 1, ahead + 2, ahead + 3]


def test_a_waiting_acquire_is_woken_by_the_release(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(redis: RedisBackend) -> float:
        locker, loop = Locker(redis), asyncio.get_running_loop()
        held = await locker.acquire(name, MINUTE)
        assert held is not None
        waiter = asyncio.create_task(locker.acquire(name, MINUTE, wait=MINUTE))
        await eventually_async(lambda: redis.subscribed == (1, 0))  # on the lock's channel
        await asyncio.sleep(0.2)  # past its attempt after subscribing: now it sleeps
        assert not waiter.done()
        released_at = loop.time()
        await locker.release(name, held.token)
        lease = await asyncio.wait_for(waiter, 10)
        assert lease is not None and lease.number > held.number
        return loop.time() - released_at

    # Woken by the release, not by its fallback (2 s; the holder's lease had a minute left).
    assert with_redis(scenario) < FALLBACK_SECONDS / 2


def test_a_wait_that_runs_out_answers_none_in_time(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(redis: RedisBackend) -> float:
        locker, loop = Locker(redis), asyncio.get_running_loop()
        assert await locker.acquire(name, MINUTE) is not None
        started = loop.time()
        assert await locker.acquire(name, MINUTE, wait=timedelta(milliseconds=300)) is None
        return loop.time() - started

    assert 0.3 <= with_redis(scenario) < 3.0


def test_keep_renews_past_the_ttl_and_raises_lease_lost_once_force_released(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    name, ttl = new_key(), timedelta(milliseconds=1_500)

    async def scenario(redis: RedisBackend) -> None:
        locker = Locker(redis)
        lease = await locker.acquire(name, ttl)
        assert lease is not None
        keeping = asyncio.create_task(locker.keep(name, lease.token, ttl))
        await asyncio.sleep(2.0)  # past the ttl: renewed every 0.5 s meanwhile
        state = await locker.inspect(name)
        assert state.held and state.fencing_token == lease.number and not keeping.done()
        assert await locker.force_release(name)
        with pytest.raises(Aborted) as lost:
            await asyncio.wait_for(keeping, 10)
        assert lost.value.reason == "LEASE_LOST"

    with_redis(scenario)


def test_two_hundred_acquires_at_once_grant_exactly_one(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario(redis: RedisBackend) -> list[int]:
        lockers = [Locker(redis) for _ in range(4)]  # as if from four servers
        leases = await asyncio.gather(*(lockers[n % 4].acquire(name, MINUTE) for n in range(200)))
        return [lease.number for lease in leases if lease is not None]

    assert len(with_redis(scenario)) == 1


def test_waiting_clients_take_turns_with_strictly_growing_fencing_tokens(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """20 clients of four Lockers (as if four servers) x 10 turns each, waiting for the
    lock: a read-yield-write of a shared count inside the lock loses nothing (200), never
    two holders at once, and the 200 tokens seen inside grow strictly."""
    name = new_key()

    async def scenario(redis: RedisBackend) -> tuple[int, list[int]]:
        lockers = [Locker(redis) for _ in range(4)]
        count, holders, seen = 0, 0, []

        async def client(locker: Locker) -> None:
            nonlocal count, holders
            for _ in range(10):
                lease = await locker.acquire(name, MINUTE, wait=MINUTE)
                assert lease is not None
                holders += 1
                assert holders == 1, "two holders at once"
                seen.append(lease.number)
                value = count
                await asyncio.sleep(0)  # the others run here: without the lock, counts race
                count = value + 1
                holders -= 1
                assert await locker.release(name, lease.token) is ReleaseStatus.RELEASED

        await asyncio.gather(*(client(lockers[n % 4]) for n in range(20)))
        return count, seen

    count, seen = with_redis(scenario)
    assert count == 200
    assert len(seen) == 200 and all(a < b for a, b in itertools.pairwise(seen))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda locker: locker.acquire("", MINUTE), "name"),
        (lambda locker: locker.acquire("n" * 513, MINUTE), "name"),
        (lambda locker: locker.acquire("n", None), "ttl"),
        (lambda locker: locker.acquire("n", timedelta(days=2)), "ttl"),
        (lambda locker: locker.acquire("n", MINUTE, wait=timedelta(days=2)), "wait_timeout"),
        (lambda locker: locker.release("n", ""), "token"),
        (lambda locker: locker.extend("n", "t" * 65, MINUTE), "token"),
        (lambda locker: locker.extend("n", "t", timedelta(days=2)), "ttl"),
        (lambda locker: locker.force_release(""), "name"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    with_redis: WithRedis, call: Callable[[Locker], Awaitable[object]], field: str
) -> None:
    async def scenario(redis: RedisBackend) -> None:
        with pytest.raises(InvalidArgument) as refused:
            await call(Locker(redis))
        assert refused.value.field == field

    with_redis(scenario)
