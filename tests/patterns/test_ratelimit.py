"""RateLimiter used directly: every algorithm admits exactly its limit under concurrency,
peek and reset, all-or-nothing groups, and bad checks refused before Redis."""

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest

from patterns_server.core.errors import InvalidArgument, PatternError, Unavailable
from patterns_server.ratelimit.ratelimit import Algorithm, Check, Decision, Policy, RateLimiter
from patterns_server.storage import Command, RedisBackend
from patterns_server.storage.keys import KeySpace
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


def test_gcra_admits_its_whole_burst_to_checks_decided_in_one_script_run(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """36 checks of one fresh key in one CheckMany, GCRA limit 30, for 40 periods near a
    day whose intervals are not whole microseconds: 30 admitted each time. (Each check
    used to add the float error of a TAT near 1.8e15 µs; 38% of such periods admitted 29.)"""
    periods = [timedelta(microseconds=86_400_000_000 + 7_919 * n) for n in range(1, 41)]

    async def scenario(redis: RedisBackend) -> list[int]:
        limiter = RateLimiter(redis)
        admitted = []
        for period in periods:
            checks = [Check(new_key(), Policy(Algorithm.GCRA, 30, period))] * 36
            decisions = await limiter.check_many(checks, all_or_nothing=False)
            admitted.append(sum(decision.allowed for decision in decisions))
        return admitted

    assert with_redis(scenario) == [30] * len(periods)


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


def test_check_each_decides_each_check_on_its_own(
    with_redis: WithRedis, new_key: Callable[[], str], day: timedelta
) -> None:
    """120 checks (more than one script run's worth) on 3 keys of limit 30, with invalid
    ones among them: each invalid check has its own error, the others their decisions,
    exactly 30 admitted per key."""
    keys = [new_key() for _ in range(3)]
    policy = Policy(Algorithm.FIXED_WINDOW, 30, day)
    bad = Policy(Algorithm.FIXED_WINDOW, 0, day)
    checks = [Check(keys[n % 3], bad if n % 10 == 9 else policy) for n in range(120)]

    async def scenario(redis: RedisBackend) -> list[Decision | PatternError]:
        return await RateLimiter(redis).check_each(checks)

    outcomes = with_redis(scenario)
    assert len(outcomes) == 120
    for n, outcome in enumerate(outcomes):
        if n % 10 == 9:
            assert isinstance(outcome, InvalidArgument) and outcome.field == "policy.limit"
        else:
            assert isinstance(outcome, Decision)
    for k in range(3):
        mine = [o for n, o in enumerate(outcomes) if n % 3 == k and isinstance(o, Decision)]
        assert sum(o.allowed for o in mine) == 30


class HalfACluster:
    """A Cluster whose node of the keys that hold "down" cannot serve: every script run
    elsewhere admits."""

    prefix = "patterns"

    def keys(self, pattern: str, namespace: str | None = None) -> KeySpace:
        return KeySpace(self.prefix, pattern, namespace)

    def slot(self, key: str) -> int:
        return 1 if "down" in key else 0

    async def run_settled(self, *commands: Command) -> list[Any]:
        replies: list[Any] = []
        for command in commands:
            keys = command.args[3 : 3 + int(command.args[2])]
            if any("down" in key for key in keys):
                replies.append(Unavailable("node down", "REDIS_UNAVAILABLE"))
            else:
                replies.append([1, 9, 0, 0] * len(keys))
        return replies


@pytest.mark.parametrize("fail_open", [False, True], ids=["closed", "open"])
def test_check_each_fails_only_the_checks_of_a_node_that_cannot_serve(fail_open: bool) -> None:
    policy = Policy(Algorithm.FIXED_WINDOW, 10, timedelta(minutes=1))
    checks = [Check(key, policy) for key in ("up:1", "down:1", "up:2", "down:2")]
    limiter = RateLimiter(cast(RedisBackend, HalfACluster()), fail_open=fail_open)
    outcomes = asyncio.run(limiter.check_each(checks))
    assert [isinstance(o, Decision) and o.remaining for o in outcomes[::2]] == [9, 9]
    for outcome in outcomes[1::2]:
        if fail_open:
            assert isinstance(outcome, Decision) and outcome.allowed
        else:
            assert isinstance(outcome, Unavailable) and outcome.reason == "REDIS_UNAVAILABLE"
