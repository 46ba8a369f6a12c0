"""RateLimiter contract: every algorithm, on every backend (standalone 7, 6.2, Cluster)."""

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeAlias, cast

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from tests.conftest import windows_of
from tests.durations import in_ms, in_us
from tests.rpc import assert_invalid, assert_unavailable
from tests.windows import Windows

Stub = ratelimit_pb2_grpc.RateLimiterStub
Algorithm: TypeAlias = pb.Algorithm
ALGORITHMS = {
    "fixed_window": pb.ALGORITHM_FIXED_WINDOW,
    "sliding_window_log": pb.ALGORITHM_SLIDING_WINDOW_LOG,
    "sliding_window_counter": pb.ALGORITHM_SLIDING_WINDOW_COUNTER,
    "token_bucket": pb.ALGORITHM_TOKEN_BUCKET,
    "gcra": pb.ALGORITHM_GCRA,
}
BUCKETS = {pb.ALGORITHM_TOKEN_BUCKET, pb.ALGORITHM_GCRA}
DAY = timedelta(days=1)


@pytest.fixture
def day(windows: Windows) -> Duration:
    """About a day, with the Redis clock mid-window: whatever the hour, no window ends
    while the test runs (a fixed one-day period would put the test wherever the time of
    day says)."""
    return windows.calm(DAY)


@pytest.fixture
def limiter(channel: grpc.Channel) -> Stub:
    return Stub(channel)


@pytest.fixture(params=list(ALGORITHMS), ids=list(ALGORITHMS))
def algorithm(request: pytest.FixtureRequest) -> Algorithm:
    return ALGORITHMS[request.param]


def policy(algorithm: Algorithm, limit: int, period: Duration, burst: int = 0) -> pb.Policy:
    return pb.Policy(algorithm=algorithm, limit=limit, period=period, burst=burst)


def check(
    limiter: Stub, key: str, rule: pb.Policy, cost: int = 0, peek: bool = False
) -> pb.CheckResponse:
    return limiter.Check(pb.CheckRequest(key=key, policy=rule, cost=cost, peek=peek), timeout=10)


def test_admits_up_to_the_limit_then_refuses(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm, day: Duration
) -> None:
    key, rule = new_key(), policy(algorithm, 3, day)
    answers = [check(limiter, key, rule) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.remaining for a in answers] == [2, 1, 0, 0]
    assert {a.limit for a in answers} == {3}
    assert [in_ms(a.retry_after) for a in answers[:3]] == [0, 0, 0]
    refused = answers[3]
    # Whatever the algorithm: the refused units fit again no later than the state resets,
    # which is within two periods (the sliding counter's reach).
    assert 0 < in_us(refused.retry_after) <= in_us(refused.reset_after) <= 2 * in_us(day)


@pytest.mark.parametrize("elapsed", [0.0, 0.2, 0.5, 0.99], ids=lambda e: f"{e:.0%}-into-window")
def test_sliding_counter_says_when_anywhere_in_the_window(
    limiter: Stub, new_key: Callable[[], str], windows: Windows, elapsed: float
) -> None:
    """The refusal's retry_after is exact wherever in its window the call falls (the
    hour of the day decides that for a one-day period)."""
    period = windows.period(DAY, elapsed)
    key, rule = new_key(), policy(pb.ALGORITHM_SLIDING_WINDOW_COUNTER, 3, period)
    answers = [check(limiter, key, rule) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    refused = answers[3]
    # The state lives to the end of the next window: reset_after = until_end + period.
    until_end = in_us(refused.reset_after) - in_us(period)
    assert 0 < until_end <= in_us(period)
    # In the next window the three units weigh 3 * (1 - e / period): one unit fits once
    # that is at most 2, a third of the way in.
    expected = until_end + in_us(period) / 3
    assert in_us(refused.retry_after) == pytest.approx(expected, abs=2)


def test_cost_takes_several_units(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm, day: Duration
) -> None:
    key, rule = new_key(), policy(algorithm, 5, day)
    assert check(limiter, key, rule, cost=3).remaining == 2
    refused = check(limiter, key, rule, cost=3)
    assert not refused.allowed and refused.remaining == 2  # nothing taken
    assert check(limiter, key, rule, cost=2).allowed
    assert not check(limiter, key, rule, cost=1).allowed


def test_peek_reports_without_consuming(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm, day: Duration
) -> None:
    key, rule = new_key(), policy(algorithm, 2, day)
    for _ in range(3):
        peeked = check(limiter, key, rule, peek=True)
        assert peeked.allowed and peeked.remaining == 2
    check(limiter, key, rule, cost=2)
    peeked = check(limiter, key, rule, peek=True)
    assert not peeked.allowed and peeked.remaining == 0 and in_ms(peeked.retry_after) > 0


def test_keys_and_policies_count_separately(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm, windows: Windows
) -> None:
    key, other_key = new_key(), new_key()
    rule = policy(algorithm, 1, windows.calm(DAY))
    other_rule = policy(algorithm, 1, windows.calm(timedelta(hours=1)))
    assert check(limiter, key, rule).allowed
    assert not check(limiter, key, rule).allowed
    assert check(limiter, key, other_rule).allowed
    assert check(limiter, other_key, rule).allowed


def test_reset_forgets_one_policy(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm, day: Duration
) -> None:
    key, rule, other_rule = new_key(), policy(algorithm, 1, day), policy(algorithm, 2, day)
    check(limiter, key, rule)
    check(limiter, key, other_rule, cost=2)
    limiter.Reset(pb.ResetRequest(key=key, policy=rule))
    assert check(limiter, key, rule).allowed
    assert not check(limiter, key, other_rule).allowed


def run_concurrently(
    address: str, clients: int, requests: int, call: Callable[[Stub], "asyncio.Future[bool]"]
) -> int:
    """`clients` channels each make `requests` calls one after another; the number that
    returned True."""

    async def client() -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = Stub(channel)
            return sum([await call(stub) for _ in range(requests)])

    async def everyone() -> int:
        return sum(await asyncio.gather(*(client() for _ in range(clients))))

    return asyncio.run(everyone())


def test_exact_under_concurrency(
    server: PatternsServer, new_key: Callable[[], str], algorithm: Algorithm, day: Duration
) -> None:
    """50 clients x 40 requests against a limit of 100: exactly 100 pass."""
    key, rule = new_key(), policy(algorithm, 100, day)

    async def one(stub: Stub) -> bool:
        response = await stub.Check(pb.CheckRequest(key=key, policy=rule))
        return bool(response.allowed)

    assert run_concurrently(server.address, 50, 40, one) == 100  # type: ignore[arg-type]


# Boundaries, with short periods: what each algorithm lets through around time limits.
# Each test places its calls in a window with room to spare: a slow call on a busy machine
# must not move them across a boundary.


def sleep_for(duration: Duration) -> None:
    time.sleep(in_ms(duration) / 1000 + 0.005)


def test_fixed_window_allows_twice_the_limit_around_a_boundary(
    limiter: Stub, new_key: Callable[[], str], windows: Windows
) -> None:
    period = windows.period(timedelta(seconds=1), 0.5)  # half a second left in the window
    key, rule = new_key(), policy(pb.ALGORITHM_FIXED_WINDOW, 5, period)
    first = [check(limiter, key, rule) for _ in range(6)]
    assert sum(a.allowed for a in first) == 5
    sleep_for(first[-1].retry_after)  # the window's end
    second = [check(limiter, key, rule) for _ in range(6)]
    assert sum(a.allowed for a in second) == 5  # 10 within about half a period


def test_sliding_log_has_no_boundary_burst(limiter: Stub, new_key: Callable[[], str]) -> None:
    key, rule = new_key(), policy(pb.ALGORITHM_SLIDING_WINDOW_LOG, 5, Duration(seconds=1))
    assert check(limiter, key, rule).allowed
    time.sleep(0.3)
    assert all(check(limiter, key, rule).allowed for _ in range(4))
    refused = check(limiter, key, rule)
    assert not refused.allowed
    assert 0 < in_ms(refused.retry_after) <= 1000 - 300  # when the first, older one leaves
    sleep_for(refused.retry_after)
    # Only the first admission has left the window: one unit, not a fresh five.
    answers = [check(limiter, key, rule) for _ in range(3)]
    assert [a.allowed for a in answers] == [True, False, False]


def test_sliding_counter_weighs_the_previous_window(
    limiter: Stub, new_key: Callable[[], str], windows: Windows
) -> None:
    key, period = new_key(), windows.period(timedelta(seconds=1), 0.05)  # a window's start
    rule = policy(pb.ALGORITHM_SLIDING_WINDOW_COUNTER, 10, period)
    first = [check(limiter, key, rule) for _ in range(11)]
    assert sum(a.allowed for a in first) == 10
    refused = first[-1]
    # The next unit fits once the full previous window weighs under 9: 10% into the next.
    until_window_end = in_us(refused.reset_after) - in_us(period)
    assert in_us(refused.retry_after) == pytest.approx(until_window_end + in_us(period) / 10, abs=2)
    sleep_for(refused.retry_after)
    assert check(limiter, key, rule).allowed


@pytest.mark.parametrize("algorithm", sorted(BUCKETS))
def test_bucket_bursts_then_refills_at_the_rate(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm
) -> None:
    key = new_key()
    rule = policy(algorithm, 2, Duration(seconds=1), burst=3)  # a unit every 500 ms
    burst = [check(limiter, key, rule) for _ in range(4)]
    assert [a.allowed for a in burst] == [True, True, True, False]
    assert burst[0].limit == 3
    refused = burst[-1]
    # Less the time the four calls took, half a second at most even on a busy machine.
    assert 0 < in_ms(refused.retry_after) <= 500
    assert in_ms(refused.reset_after) == pytest.approx(in_ms(refused.retry_after) + 1000, abs=1)
    sleep_for(refused.retry_after)
    assert check(limiter, key, rule).allowed
    assert not check(limiter, key, rule).allowed


@pytest.mark.parametrize("algorithm", sorted(BUCKETS))
@pytest.mark.parametrize(
    ("limit", "period"),
    [
        (6, Duration(seconds=1)),
        (7, Duration(seconds=3)),
        (1_000, Duration(seconds=1)),
        (3, Duration(seconds=7, nanos=3_000)),
        (1, Duration(seconds=86_400)),
    ],
)
def test_a_fresh_bucket_offers_its_whole_burst(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm, limit: int, period: Duration
) -> None:
    key, rule = new_key(), policy(algorithm, limit, period)
    assert check(limiter, key, rule, peek=True).remaining == limit
    assert check(limiter, key, rule).remaining == limit - 1
    assert check(limiter, key, rule, cost=limit - 1 or 1).allowed is (limit > 1)


def test_token_bucket_and_gcra_decide_alike(limiter: Stub, new_key: Callable[[], str]) -> None:
    decisions = {}
    for algorithm in sorted(BUCKETS):
        key, rule = new_key(), policy(algorithm, 10, Duration(seconds=3_600), burst=4)
        decisions[algorithm] = [
            (a.allowed, a.remaining)
            for a in (check(limiter, key, rule, cost=cost) for cost in [1, 2, 2, 1, 1, 3])
        ]
    assert decisions[pb.ALGORITHM_TOKEN_BUCKET] == decisions[pb.ALGORITHM_GCRA]
    assert decisions[pb.ALGORITHM_GCRA][:4] == [(True, 3), (True, 1), (False, 1), (True, 0)]


# CheckMany


def test_check_many_answers_in_order(
    limiter: Stub, new_key: Callable[[], str], day: Duration
) -> None:
    keys = [new_key() for _ in range(20)]
    checks = [pb.CheckRequest(key=key, policy=policy(pb.ALGORITHM_GCRA, 1, day)) for key in keys]
    checks.append(pb.CheckRequest(key=keys[3], policy=policy(pb.ALGORITHM_GCRA, 1, day)))
    response = limiter.CheckMany(pb.CheckManyRequest(checks=checks))
    assert [r.allowed for r in response.results] == [True] * 20 + [False]
    assert response.allowed is False


def test_check_many_takes_a_thousand(
    limiter: Stub, new_key: Callable[[], str], day: Duration
) -> None:
    key = new_key()
    checks = [pb.CheckRequest(key=key, policy=policy(pb.ALGORITHM_FIXED_WINDOW, 600, day))] * 1_000
    response = limiter.CheckMany(pb.CheckManyRequest(checks=checks), timeout=30)
    assert sum(r.allowed for r in response.results) == 600
    assert [r.remaining for r in response.results[:3]] == [599, 598, 597]


def test_all_or_nothing_consumes_nothing_unless_all_admit(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm, windows: Windows
) -> None:
    key = new_key()
    per_minute = policy(algorithm, 2, windows.calm(timedelta(minutes=1)))
    per_day = policy(pb.ALGORITHM_FIXED_WINDOW, 5, windows.calm(DAY))
    group = pb.CheckManyRequest(
        checks=[
            pb.CheckRequest(key=key, policy=per_minute),
            pb.CheckRequest(key=key, policy=per_day),
        ],
        all_or_nothing=True,
    )
    assert [limiter.CheckMany(group).allowed for _ in range(4)] == [True, True, False, False]
    refused = limiter.CheckMany(group)
    assert [r.allowed for r in refused.results] == [False, True]
    assert check(limiter, key, per_day, peek=True).remaining == 3  # only two were taken


def test_all_or_nothing_is_exact_under_concurrency(
    server: PatternsServer, new_key: Callable[[], str], day: Duration
) -> None:
    key = new_key()
    tight = policy(pb.ALGORITHM_GCRA, 100, day)
    loose = policy(pb.ALGORITHM_SLIDING_WINDOW_LOG, 150, day)
    group = pb.CheckManyRequest(
        checks=[pb.CheckRequest(key=key, policy=tight), pb.CheckRequest(key=key, policy=loose)],
        all_or_nothing=True,
    )

    async def one(stub: Stub) -> bool:
        return bool((await stub.CheckMany(group)).allowed)

    assert run_concurrently(server.address, 50, 40, one) == 100  # type: ignore[arg-type]
    with grpc.insecure_channel(server.address) as channel:
        assert check(Stub(channel), key, loose, peek=True).remaining == 50


# Bad input


def bad_checks() -> Iterator[tuple[pb.CheckRequest, str]]:
    good = policy(pb.ALGORITHM_FIXED_WINDOW, 10, Duration(seconds=1))
    gcra = pb.ALGORITHM_GCRA
    day = Duration(seconds=86_400)  # refused before any window is looked at
    yield pb.CheckRequest(key="", policy=good), "key"
    yield pb.CheckRequest(key="k" * 513, policy=good), "key"
    yield pb.CheckRequest(key="k"), "policy.algorithm"
    yield (
        pb.CheckRequest(key="k", policy=policy(pb.ALGORITHM_UNSPECIFIED, 10, day)),
        "policy.algorithm",
    )
    yield (
        pb.CheckRequest(
            key="k", policy=pb.Policy(algorithm=cast(Algorithm, 99), limit=1, period=day)
        ),
        ("policy.algorithm"),
    )
    yield pb.CheckRequest(key="k", policy=policy(gcra, 0, day)), "policy.limit"
    log = pb.ALGORITHM_SLIDING_WINDOW_LOG
    yield pb.CheckRequest(key="k", policy=policy(log, 100_001, day)), "policy.limit"
    yield pb.CheckRequest(key="k", policy=policy(gcra, 10**12 + 1, day)), "policy.limit"
    yield pb.CheckRequest(key="k", policy=pb.Policy(algorithm=gcra, limit=1)), "policy.period"
    yield (
        pb.CheckRequest(key="k", policy=policy(gcra, 1, Duration(nanos=999_999))),
        ("policy.period"),
    )
    yield (
        pb.CheckRequest(key="k", policy=policy(gcra, 1, Duration(seconds=367 * 86_400))),
        ("policy.period"),
    )
    yield pb.CheckRequest(key="k", policy=policy(gcra, 1, Duration(seconds=-1))), "policy.period"
    yield (
        pb.CheckRequest(key="k", policy=policy(gcra, 1_001, Duration(nanos=1_000_000))),
        ("policy.limit"),
    )  # faster than one unit per microsecond
    yield pb.CheckRequest(key="k", policy=policy(gcra, 1, day, burst=10**12 + 1)), "policy.burst"
    yield (
        pb.CheckRequest(key="k", policy=policy(pb.ALGORITHM_FIXED_WINDOW, 5, day, burst=5)),
        ("policy.burst"),
    )
    huge = Duration(seconds=315_576_000_000)  # the largest Duration there is
    yield pb.CheckRequest(key="k", policy=policy(gcra, 1, huge)), "policy.period"
    yield pb.CheckRequest(key="k", policy=policy(gcra, 1, day, burst=400)), "policy.burst"  # 400 d
    yield pb.CheckRequest(key="k", policy=good, cost=11), "cost"
    yield pb.CheckRequest(key="k", policy=policy(gcra, 100, day, burst=5), cost=6), "cost"


@pytest.mark.parametrize(("request_", "field"), list(bad_checks()))
def test_check_rejects_bad_input(limiter: Stub, request_: pb.CheckRequest, field: str) -> None:
    assert_invalid(lambda: limiter.Check(request_), field)
    reset = pb.ResetRequest(key=request_.key, policy=request_.policy)
    if field != "cost":
        assert_invalid(lambda: limiter.Reset(reset), field)


def test_check_many_rejects_bad_input(limiter: Stub) -> None:
    day = Duration(seconds=86_400)
    good = pb.CheckRequest(key="k", policy=policy(pb.ALGORITHM_GCRA, 10, day))
    other_key = pb.CheckRequest(key="other", policy=policy(pb.ALGORITHM_GCRA, 10, day))
    bad_limit = pb.CheckRequest(key="k", policy=policy(pb.ALGORITHM_GCRA, 0, day))
    cases = [
        (pb.CheckManyRequest(), "checks"),
        (pb.CheckManyRequest(checks=[good] * 1_001), "checks"),
        (pb.CheckManyRequest(checks=[good] * 51, all_or_nothing=True), "checks"),
        (pb.CheckManyRequest(checks=[good, good, bad_limit]), "checks[2].policy.limit"),
        (pb.CheckManyRequest(checks=[good, other_key], all_or_nothing=True), "checks[1].key"),
        (pb.CheckManyRequest(checks=[good, good], all_or_nothing=True), "checks[1].policy"),
    ]
    for request_, field in cases:
        assert_invalid(functools.partial(limiter.CheckMany, request_), field)


# Redis failures: closed by default, open on request


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_failure_mode(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer], mode: str
) -> None:
    server = server_on_own_redis("--ratelimit-failure-mode", mode)
    with grpc.insecure_channel(server.address) as channel:
        limiter = Stub(channel)
        rule = policy(pb.ALGORITHM_FIXED_WINDOW, 3, windows_of(own_redis.url).calm(DAY))
        assert check(limiter, "user", rule, cost=3).allowed
        assert not check(limiter, "user", rule).allowed
        own_redis.stop()
        if mode == "closed":
            assert_unavailable(lambda: check(limiter, "user", rule))
            return
        answer = check(limiter, "user", rule)
        assert answer.allowed and answer.remaining == 2
        many = limiter.CheckMany(
            pb.CheckManyRequest(
                checks=[pb.CheckRequest(key="user", policy=rule)] * 2, all_or_nothing=False
            )
        )
        assert many.allowed
        server.wait_for_log("admitted 1 checks unchecked so far (failure mode open)")


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_state_expires_once_it_carries_no_information(
    redis7: RedisServer, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    key = new_key()
    period = Duration(nanos=300_000_000)
    redis = redis7.client()
    with grpc.insecure_channel(server.address) as channel:
        limiter = Stub(channel)
        # The log is trimmed as it goes: one entry per admission in the last period.
        log_rule = policy(pb.ALGORITHM_SLIDING_WINDOW_LOG, 50, period)
        deadline = time.monotonic() + 0.7
        while time.monotonic() < deadline:
            check(limiter, key, log_rule)
        log_key = f"patterns:default:ratelimit:{{{key}}}:sliding_log:50:300000:50"
        assert 0 < redis.zcard(log_key) <= 50  # read at once, before its short life ends
        for algorithm in ALGORITHMS.values():
            for _ in range(3):
                check(limiter, key, policy(algorithm, 2, period))
    keys = list(redis.scan_iter(match=f"patterns:default:ratelimit:{{{key}}}*"))
    # Some state may be gone already (a fixed window ends when its window does); whatever
    # is left expires within two periods, the sliding counter's lifetime. Read exactly:
    # each key has an expiry (PTTL -1 would be none) of 600 ms at most, or is gone by now
    # (-2: it ended between the scan and its PTTL).
    assert keys
    lifetimes = {k: redis.pttl(k) for k in keys}
    assert all(ms == -2 or 0 <= ms <= 600 for ms in lifetimes.values()), lifetimes


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_a_long_log_is_trimmed_in_bounded_steps(
    redis7: RedisServer, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    """No check does work in proportion to the log's length (one that did stalled Redis
    for 170-310 ms after 100,000 admissions left the window): each removes at most 50
    expired entries, and still decides exactly."""
    key = new_key()
    rule = policy(pb.ALGORITHM_SLIDING_WINDOW_LOG, 1_000, Duration(seconds=2))
    with grpc.insecure_channel(server.address) as channel:
        limiter = Stub(channel)
        burst = pb.CheckManyRequest(checks=[pb.CheckRequest(key=key, policy=rule)] * 500)
        assert limiter.CheckMany(burst, timeout=10).allowed
        time.sleep(1.0)
        assert check(limiter, key, rule).remaining == 499  # keeps the log alive
        time.sleep(1.2)  # the 500 have left the window; the one after them has not
        answer = check(limiter, key, rule)
    assert answer.allowed and answer.remaining == 998
    (log_key,) = redis7.client().scan_iter(match=f"patterns:default:ratelimit:{{{key}}}*")
    assert redis7.client().zcard(log_key) == 500 + 2 - 50
