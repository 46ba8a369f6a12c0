"""Error messages write lengths of time in the contract's language, whichever language the
caller speaks: what was given as the proto JSON form of a Duration ("34560000s"), the
allowed range in plain units ("1 second to 365 days"), never Python's timedelta repr
("400 days, 0:00:00"). Driven over gRPC with raw stubs, as any client would call."""

import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from patterns.cache.v1 import cache_pb2, cache_pb2_grpc
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc
from patterns.lock.v1 import lock_pb2, lock_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from patterns.session.v1 import session_pb2, session_pb2_grpc

from patterns_server.core.units import length, seconds_text, span

redis7 = pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
DAY = 86_400
# Python's way: "400 days, 0:00:00", "1 day, 2:03:04", "0:00:00.500000".
TIMEDELTA_REPR = re.compile(r"\bdays?, \d|\b\d+:\d\d:\d\d")


def seconds(whole: int, nanos: int = 0) -> Duration:
    return Duration(seconds=whole, nanos=nanos)


def gcra(period: Duration, limit: int = 1, burst: int = 0) -> ratelimit_pb2.CheckRequest:
    policy = ratelimit_pb2.Policy(
        algorithm=ratelimit_pb2.ALGORITHM_GCRA, limit=limit, period=period, burst=burst
    )
    return ratelimit_pb2.CheckRequest(key="k", policy=policy)


CASES: list[tuple[str, Callable[[grpc.Channel], Any], Any, str]] = [
    (
        "a session's ttl of 400 days",
        lambda channel: session_pb2_grpc.SessionsStub(channel).Create,
        session_pb2.CreateRequest(user_id="u", ttl=seconds(400 * DAY)),
        "ttl: must be 1 second to 365 days; got 34560000s",
    ),
    (
        "a session's ttl of half a second",
        lambda channel: session_pb2_grpc.SessionsStub(channel).Create,
        session_pb2.CreateRequest(user_id="u", ttl=seconds(0, 500_000_000)),
        "ttl: must be 1 second to 365 days; got 0.5s",
    ),
    (
        "a rate limit's period of 400 days",
        lambda channel: ratelimit_pb2_grpc.RateLimiterStub(channel).Check,
        gcra(seconds(400 * DAY)),
        "policy.period: must be 1 ms to 366 days; got 34560000s",
    ),
    (
        "a bucket that would refill in 1,000 days",
        lambda channel: ratelimit_pb2_grpc.RateLimiterStub(channel).Check,
        gcra(seconds(DAY), burst=1_000),
        "policy.burst: must refill in at most 366 days (burst * period / limit); got 86400000s",
    ),
    (
        "a cache value's ttl of 4,000 days",
        lambda channel: cache_pb2_grpc.CacheStub(channel).Set,
        cache_pb2.SetRequest(key="k", value=b"v", ttl=seconds(4_000 * DAY)),
        "ttl: must be unset, or 1 ms to 3,650 days; got 345600000s",
    ),
    (
        "a lock's wait of 2 days",
        lambda channel: lock_pb2_grpc.LockerStub(channel).Acquire,
        lock_pb2.AcquireRequest(name="n", ttl=seconds(10), wait_timeout=seconds(2 * DAY)),
        "wait_timeout: must be unset, or 0 seconds to 1 day; got 172800s",
    ),
    (
        "a counter's ttl of 4,000 days",
        lambda channel: counter_pb2_grpc.UniqueCounterStub(channel).Add,
        counter_pb2.AddRequest(key="k", items=["a"], ttl=seconds(4_000 * DAY)),
        "ttl: must be unset, or 1 ms to 3,650 days; got 345600000s",
    ),
]


@redis7
@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_out_of_range_durations_are_written_as_the_contract_writes_them(
    channel: grpc.Channel, method: Callable[[grpc.Channel], Any], request_: Any, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        method(channel)(request_, timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == message
    assert not TIMEDELTA_REPR.search(message)


@redis7
def test_an_expiry_too_far_ahead_says_how_far_in_seconds(channel: grpc.Channel) -> None:
    """Before: 'must be at most 3,650 days ahead', without what was asked."""
    far = cache_pb2.SetRequest(key="k", value=b"v", expire_at=Timestamp(seconds=10**10))
    with pytest.raises(grpc.RpcError) as failed:
        cache_pb2_grpc.CacheStub(channel).Set(far, timeout=10)
    details = failed.value.details()
    assert re.fullmatch(
        r"expire_at: must be at most 3,650 days ahead; got \d+(\.\d+)?s ahead", details
    )


def test_the_helpers_write_every_length_so() -> None:
    from datetime import timedelta

    assert seconds_text(timedelta(days=400)) == "34560000s"
    assert seconds_text(timedelta(microseconds=500)) == "0.0005s"
    assert length(timedelta(0)) == "0 seconds"
    assert span(timedelta(milliseconds=1), timedelta(days=3_650)) == "1 ms to 3,650 days"


def test_no_server_message_formats_a_timedelta_as_python_does() -> None:
    """Every message the server builds with a length of time goes through the helpers of
    core/units.py: no f-string in the server puts a timedelta-named value in a message
    as it is (`{ttl}`, `{period}`, `{wait}`, ...), which would print Python's repr, but
    through seconds_text(), length() or span()."""
    from pathlib import Path

    import patterns_server

    suspicious = re.compile(
        r"\{(?!seconds_text\(|length\(|span\()[^}:!]*"
        r"\b(ttl|period|wait|lease|timeout|interval|window|duration|expir\w*|refill|ahead|"
        r"delay|retry_after|reset_after)\b[^}]*\}"
    )
    found = []
    for path in Path(patterns_server.__file__).parent.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""\bf["']""", line) and suspicious.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
