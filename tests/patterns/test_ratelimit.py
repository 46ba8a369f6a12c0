"""RateLimiter used directly: every algorithm admits exactly its limit under concurrency,
peek and reset, all-or-nothing groups, and bad checks refused before Redis."""

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from patterns_server.core.errors import InvalidArgument
from patterns_server.ratelimit.ratelimit import Algorithm, Check, Policy, RateLimiter
from patterns_server.storage import RedisBackend
from tests.patterns import WithRedis
from tests.windows import Windows


@pytest.fixture
def day(windows: Windows) -> timedelta:
    return windows.calm(timedelta(days=1)).ToTimedelta()


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.value)
def test_each_algorithm_admits_exactly_the_limit_under_concurrency(
    with_redis: WithRedis, new_key: Callable[[], str], algorithm: Algorithm, day: timedelta
) -> None:
    """400 checks at once from one process, limit 150: exactly 150 admitted, and the
    remaining counts they were told are each distinct (no unit handed out twice)."""
    key, policy = new_key(), Policy(algorithm, 150, day)

    async def scenario(redis: RedisBackend) -> tuple[int, list[int]]:
        limiter = RateLimiter(redis)
        decisions = await asyncio.gather(*(limiter.check(Check(key, policy)) for _ in range(400)))
        admitted = [d.remaining for d in decisions if d.allowed]
        return len(admitted), sorted(admitted)

    admitted, remaining = with_redis(scenario)
    assert admitted == 150
    assert remaining == list(range(150))


def test_peek_and_reset(with_redis: WithRedis, new_key: Callable[[], str], day: timedelta) -> None:
    key, policy = new_key(), Policy(Algorithm.FIXED_WINDOW, 2, day)

    async def scenario(redis: RedisBackend) -> None:
        limiter = RateLimiter(redis)
        assert (await limiter.check(Check(key, policy, peek=True))).remaining == 2
        assert (await limiter.check(Check(key, policy, cost=2))).allowed
        refused = await limiter.check(Check(key, policy))
        assert not refused.allowed and refused.retry_after_us > 0
        await limiter.reset(key, policy)
        assert (await limiter.check(Check(key, policy, peek=True))).remaining == 2

    with_redis(scenario)


def test_check_many_all_or_nothing(
    with_redis: WithRedis, new_key: Callable[[], str], day: timedelta
) -> None:
    key = new_key()
    per_day = Policy(Algorithm.SLIDING_WINDOW_LOG, 3, day)
    burst = Policy(Algorithm.GCRA, 1, day)

    async def scenario(redis: RedisBackend) -> None:
        limiter = RateLimiter(redis)
        group = [Check(key, per_day), Check(key, burst)]
        first = await limiter.check_many(group, True)
        second = await limiter.check_many(group, True)
        assert [d.allowed for d in first] == [True, True]
        assert [d.allowed for d in second] == [True, False]
        assert (await limiter.check(Check(key, per_day, peek=True))).remaining == 2

    with_redis(scenario)


@pytest.mark.parametrize(
    ("check", "field"),
    [
        (Check("", Policy(Algorithm.GCRA, 1, timedelta(seconds=1))), "key"),
        (Check("k", Policy(None, 1, timedelta(seconds=1))), "policy.algorithm"),
        (Check("k", Policy(Algorithm.GCRA, 0, timedelta(seconds=1))), "policy.limit"),
        (Check("k", Policy(Algorithm.GCRA, 1, timedelta(0))), "policy.period"),
        (Check("k", Policy(Algorithm.GCRA, 1, timedelta(seconds=1)), cost=2), "cost"),
    ],
)
def test_the_limiter_refuses_bad_checks_before_redis(check: Check, field: str) -> None:
    async def scenario() -> None:
        # Nothing listens on port 1: a check that reached Redis would fail otherwise.
        redis = RedisBackend.from_url("redis://127.0.0.1:1", prefix="p", timeout=1, batch_wait=0)
        with pytest.raises(InvalidArgument) as refused:
            await RateLimiter(redis).check(check)
        assert refused.value.field == field
        await redis.close()

    asyncio.run(scenario())
