"""RateLimiter contract: every algorithm, on every backend (standalone 7, 6.2, Cluster)."""

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from typing import TypeAlias, cast

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from tests.processes import PatternsServer, RedisServer
from tests.rpc import assert_invalid, assert_unavailable

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
DAY = Duration(seconds=86_400)


@pytest.fixture
def limiter(channel: grpc.Channel) -> Stub:
    return Stub(channel)


@pytest.fixture(params=list(ALGORITHMS), ids=list(ALGORITHMS))
def algorithm(request: pytest.FixtureRequest) -> Algorithm:
    return ALGORITHMS[request.param]


def policy(algorithm: Algorithm, limit: int, period: Duration = DAY, burst: int = 0) -> pb.Policy:
    return pb.Policy(algorithm=algorithm, limit=limit, period=period, burst=burst)


def ms(duration: Duration) -> float:
    return duration.seconds * 1000 + duration.nanos / 1e6


def check(
    limiter: Stub, key: str, rule: pb.Policy, cost: int = 0, peek: bool = False
) -> pb.CheckResponse:
    return limiter.Check(pb.CheckRequest(key=key, policy=rule, cost=cost, peek=peek), timeout=10)


def test_admits_up_to_the_limit_then_refuses(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm
) -> None:
    key, rule = new_key(), policy(algorithm, 3)
    answers = [check(limiter, key, rule) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.remaining for a in answers] == [2, 1, 0, 0]
    assert {a.limit for a in answers} == {3}
    assert [ms(a.retry_after) for a in answers[:3]] == [0, 0, 0]
    refused = answers[3]
    assert 0 < ms(refused.retry_after) <= 86_400_000
    assert 0 < ms(refused.reset_after) <= 86_400_000 * 2


def test_cost_takes_several_units(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm
) -> None:
    key, rule = new_key(), policy(algorithm, 5)
    assert check(limiter, key, rule, cost=3).remaining == 2
    refused = check(limiter, key, rule, cost=3)
    assert not refused.allowed and refused.remaining == 2  # nothing taken
    assert check(limiter, key, rule, cost=2).allowed
    assert not check(limiter, key, rule, cost=1).allowed


def test_peek_reports_without_consuming(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm
) -> None:
    key, rule = new_key(), policy(algorithm, 2)
    for _ in range(3):
        peeked = check(limiter, key, rule, peek=True)
        assert peeked.allowed and peeked.remaining == 2
    check(limiter, key, rule, cost=2)
    peeked = check(limiter, key, rule, peek=True)
    assert not peeked.allowed and peeked.remaining == 0 and ms(peeked.retry_after) > 0


def test_keys_and_policies_count_separately(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm
) -> None:
    key, other_key = new_key(), new_key()
    rule, other_rule = policy(algorithm, 1), policy(algorithm, 1, Duration(seconds=3_600))
    assert check(limiter, key, rule).allowed
    assert not check(limiter, key, rule).allowed
    assert check(limiter, key, other_rule).allowed
    assert check(limiter, other_key, rule).allowed


def test_reset_forgets_one_policy(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm
) -> None:
    key, rule, other_rule = new_key(), policy(algorithm, 1), policy(algorithm, 2)
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
    server: PatternsServer, new_key: Callable[[], str], algorithm: Algorithm
) -> None:
    """50 clients x 40 requests against a limit of 100: exactly 100 pass."""
    key, rule = new_key(), policy(algorithm, 100)

    async def one(stub: Stub) -> bool:
        response = await stub.Check(pb.CheckRequest(key=key, policy=rule))
        return bool(response.allowed)

    admitted = run_concurrently(server.address, 50, 40, one)  # type: ignore[arg-type]
    if algorithm == pb.ALGORITHM_SLIDING_WINDOW_COUNTER:
        # Exact inside one window; across a window boundary the estimate lets through
        # at most twice the limit.
        assert 100 <= admitted < 200
    else:
        assert admitted == 100


# Boundaries, with short periods: what each algorithm lets through around time limits.


def sleep_for(duration: Duration) -> None:
    time.sleep(ms(duration) / 1000 + 0.005)


def test_fixed_window_allows_twice_the_limit_around_a_boundary(
    limiter: Stub, new_key: Callable[[], str]
) -> None:
    key, rule = new_key(), policy(pb.ALGORITHM_FIXED_WINDOW, 5, Duration(nanos=400_000_000))
    sleep_for(check(limiter, new_key(), rule).reset_after)  # start at a window's start
    first = [check(limiter, key, rule) for _ in range(6)]
    assert sum(a.allowed for a in first) == 5
    sleep_for(first[-1].retry_after)  # the window's end
    second = [check(limiter, key, rule) for _ in range(6)]
    assert sum(a.allowed for a in second) == 5  # 10 within much less than one period


def test_sliding_log_has_no_boundary_burst(limiter: Stub, new_key: Callable[[], str]) -> None:
    key, rule = new_key(), policy(pb.ALGORITHM_SLIDING_WINDOW_LOG, 5, Duration(nanos=600_000_000))
    assert check(limiter, key, rule).allowed
    time.sleep(0.3)
    assert all(check(limiter, key, rule).allowed for _ in range(4))
    refused = check(limiter, key, rule)
    assert not refused.allowed
    assert ms(refused.retry_after) < 600 - 250  # when the first, older one leaves
    sleep_for(refused.retry_after)
    # Only the first admission has left the window: one unit, not a fresh five.
    answers = [check(limiter, key, rule) for _ in range(3)]
    assert [a.allowed for a in answers] == [True, False, False]


def test_sliding_counter_weighs_the_previous_window(
    limiter: Stub, new_key: Callable[[], str]
) -> None:
    key = new_key()
    rule = policy(pb.ALGORITHM_SLIDING_WINDOW_COUNTER, 10, Duration(nanos=500_000_000))
    probe = check(limiter, new_key(), rule)  # lives to the end of the next window
    time.sleep(ms(probe.reset_after) / 1000 - 0.5 + 0.005)  # start at a window's start
    first = [check(limiter, key, rule) for _ in range(11)]
    assert sum(a.allowed for a in first) == 10
    refused = first[-1]
    # The next unit fits once the full previous window weighs under 9: 10% into the next.
    until_window_end = ms(refused.reset_after) - 500
    assert ms(refused.retry_after) == pytest.approx(until_window_end + 50, abs=2)
    sleep_for(refused.retry_after)
    assert check(limiter, key, rule).allowed


@pytest.mark.parametrize("algorithm", sorted(BUCKETS))
def test_bucket_bursts_then_refills_at_the_rate(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm
) -> None:
    key = new_key()
    rule = policy(algorithm, 4, Duration(seconds=1), burst=3)  # a unit every 250 ms
    burst = [check(limiter, key, rule) for _ in range(4)]
    assert [a.allowed for a in burst] == [True, True, True, False]
    assert burst[0].limit == 3
    refused = burst[-1]
    assert 200 < ms(refused.retry_after) <= 250
    assert 700 < ms(refused.reset_after) <= 750  # three units to refill
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


def test_check_many_answers_in_order(limiter: Stub, new_key: Callable[[], str]) -> None:
    keys = [new_key() for _ in range(20)]
    checks = [pb.CheckRequest(key=key, policy=policy(pb.ALGORITHM_GCRA, 1)) for key in keys]
    checks.append(pb.CheckRequest(key=keys[3], policy=policy(pb.ALGORITHM_GCRA, 1)))
    response = limiter.CheckMany(pb.CheckManyRequest(checks=checks))
    assert [r.allowed for r in response.results] == [True] * 20 + [False]
    assert response.allowed is False


def test_check_many_takes_a_thousand(limiter: Stub, new_key: Callable[[], str]) -> None:
    key = new_key()
    checks = [pb.CheckRequest(key=key, policy=policy(pb.ALGORITHM_FIXED_WINDOW, 600))] * 1_000
    response = limiter.CheckMany(pb.CheckManyRequest(checks=checks), timeout=30)
    assert sum(r.allowed for r in response.results) == 600
    assert [r.remaining for r in response.results[:3]] == [599, 598, 597]


def test_all_or_nothing_consumes_nothing_unless_all_admit(
    limiter: Stub, new_key: Callable[[], str], algorithm: Algorithm
) -> None:
    key = new_key()
    per_minute = policy(algorithm, 2, Duration(seconds=60))
    per_day = policy(pb.ALGORITHM_FIXED_WINDOW, 5)
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
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    key = new_key()
    tight, loose = policy(pb.ALGORITHM_GCRA, 100), policy(pb.ALGORITHM_SLIDING_WINDOW_LOG, 150)
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
    yield pb.CheckRequest(key="", policy=good), "key"
    yield pb.CheckRequest(key="k" * 513, policy=good), "key"
    yield pb.CheckRequest(key="k"), "policy.algorithm"
    yield pb.CheckRequest(key="k", policy=policy(pb.ALGORITHM_UNSPECIFIED, 10)), "policy.algorithm"
    yield (
        pb.CheckRequest(
            key="k", policy=pb.Policy(algorithm=cast(Algorithm, 99), limit=1, period=DAY)
        ),
        ("policy.algorithm"),
    )
    yield pb.CheckRequest(key="k", policy=policy(gcra, 0)), "policy.limit"
    yield pb.CheckRequest(key="k", policy=policy(gcra, 10**12 + 1)), "policy.limit"
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
    yield pb.CheckRequest(key="k", policy=policy(gcra, 1, burst=10**12 + 1)), "policy.burst"
    yield (
        pb.CheckRequest(key="k", policy=policy(pb.ALGORITHM_FIXED_WINDOW, 5, burst=5)),
        ("policy.burst"),
    )
    huge = Duration(seconds=315_576_000_000)  # the largest Duration there is
    yield pb.CheckRequest(key="k", policy=policy(gcra, 1, huge)), "policy.period"
    yield pb.CheckRequest(key="k", policy=policy(gcra, 1, burst=400)), "policy.burst"  # 400 days
    yield pb.CheckRequest(key="k", policy=good, cost=11), "cost"
    yield pb.CheckRequest(key="k", policy=policy(gcra, 100, burst=5), cost=6), "cost"


@pytest.mark.parametrize(("request_", "field"), list(bad_checks()))
def test_check_rejects_bad_input(limiter: Stub, request_: pb.CheckRequest, field: str) -> None:
    assert_invalid(lambda: limiter.Check(request_), field)
    reset = pb.ResetRequest(key=request_.key, policy=request_.policy)
    if field != "cost":
        assert_invalid(lambda: limiter.Reset(reset), field)


def test_check_many_rejects_bad_input(limiter: Stub) -> None:
    good = pb.CheckRequest(key="k", policy=policy(pb.ALGORITHM_GCRA, 10))
    other_key = pb.CheckRequest(key="other", policy=policy(pb.ALGORITHM_GCRA, 10))
    bad_limit = pb.CheckRequest(key="k", policy=policy(pb.ALGORITHM_GCRA, 0))
    cases = [
        (pb.CheckManyRequest(), "checks"),
        (pb.CheckManyRequest(checks=[good] * 1_001), "checks"),
        (pb.CheckManyRequest(checks=[good, good, bad_limit]), "checks[2].policy.limit"),
        (pb.CheckManyRequest(checks=[good, other_key], all_or_nothing=True), "checks[1].key"),
        (pb.CheckManyRequest(checks=[good, good], all_or_nothing=True), "checks[1].policy"),
    ]
    for request_, field in cases:
        assert_invalid(functools.partial(limiter.CheckMany, request_), field)


# Redis failures: closed by default, open on request


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_failure_mode(own_redis: RedisServer, mode: str) -> None:
    server = PatternsServer(own_redis.url, "--ratelimit-failure-mode", mode).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            limiter = Stub(channel)
            rule = policy(pb.ALGORITHM_FIXED_WINDOW, 3)
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
    finally:
        server.stop()


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_state_expires_once_it_carries_no_information(
    redis7: RedisServer, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    key = new_key()
    period = Duration(nanos=300_000_000)
    with grpc.insecure_channel(server.address) as channel:
        limiter = Stub(channel)
        # The log is trimmed as it goes: one entry per admission in the last period.
        log_rule = policy(pb.ALGORITHM_SLIDING_WINDOW_LOG, 50, period)
        deadline = time.monotonic() + 0.7
        while time.monotonic() < deadline:
            check(limiter, key, log_rule)
        for algorithm in ALGORITHMS.values():
            for _ in range(3):
                check(limiter, key, policy(algorithm, 2, period))
    redis = redis7.client()
    pattern = f"patterns:default:ratelimit:{{{key}}}*"
    keys = list(redis.scan_iter(match=pattern))
    # Some state may be gone already (a fixed window ends when its window does); whatever
    # is left expires within two periods, the sliding counter's lifetime.
    assert keys
    assert all(0 < redis.pttl(k) <= 600 for k in keys), {k: redis.pttl(k) for k in keys}
    log_key = f"patterns:default:ratelimit:{{{key}}}:sliding_window_log:50:300000:50"
    assert 0 < redis.zcard(log_key) <= 50
    time.sleep(0.7)
    assert list(redis.scan_iter(match=pattern)) == []


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_a_log_that_lost_its_total_still_limits(
    redis7: RedisServer, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    """Under memory pressure Redis may evict the log's running total: it is counted again."""
    key, rule = new_key(), policy(pb.ALGORITHM_SLIDING_WINDOW_LOG, 5, Duration(seconds=60))
    with grpc.insecure_channel(server.address) as channel:
        limiter = Stub(channel)
        assert all(check(limiter, key, rule).allowed for _ in range(3))
        (meta,) = redis7.client().scan_iter(match=f"patterns:default:ratelimit:{{{key}}}*:meta")
        redis7.client().delete(meta)
        answers = [check(limiter, key, rule) for _ in range(3)]
        assert [a.allowed for a in answers] == [True, True, False]
