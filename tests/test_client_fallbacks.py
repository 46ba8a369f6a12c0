"""Every fallback of the Python client, blocking and asyncio, against each way the
server can fail to answer: the server paused (SIGSTOP), its Redis paused, no server
listening (a refused connection), the server overloaded (RESOURCE_EXHAUSTED OVERLOADED,
`--max-concurrent-rpcs 1` with its one slot taken) and the caller's tenant at its share
(TENANT_OVERLOADED); and the rate-limit checks over the client's shared CheckStream
(`stream_checks`) against those that reach a stream (the server or its Redis paused, a
refused connection: the overloaded conditions refuse unary calls, not streams).

Each fallback must answer within its budget (`fallback_after`, 200 ms by default) and a
generous margin for a busy machine; the client's own timeout is 10 s here, so a fallback
that waited for it (or raised) fails. The measured times are printed (`pytest -s`).

Then the fill lease given back when `compute()` raises (the next caller computes at
once, not after the lease's ttl), and misses cached on request."""

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.cache.v1 import cache_pb2, cache_pb2_grpc
from patterns.lock.v1 import lock_pb2, lock_pb2_grpc

from devtools.processes import PatternsServer, RedisServer, free_port
from patterns_client import (
    Client,
    DeadlineExceeded,
    InvalidArgument,
    Policy,
    RateLimited,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    aio,
)
from patterns_client.cache import MISSING
from patterns_client.errors import falls_back
from patterns_server.runtime.auth import new_token
from tests.tenants import Tenant, write_auth_file
from tests.waiting import eventually

BUDGET = 0.2  # the default fallback_after
HALF_A_SECOND = timedelta(milliseconds=500)
# For the tests of what the server answers: a budget no busy machine exhausts.
PATIENT = timedelta(seconds=10)
MARGIN = 1.3  # for a busy machine: still far below the client's timeout
CLIENT_TIMEOUT = 10
MINUTE = timedelta(minutes=1)
POLICY = Policy.gcra(10, MINUTE, burst=20)
CONDITIONS = ["server paused", "redis paused", "refused", "overloaded", "tenant overloaded"]
STREAM_CONDITIONS = ["server paused", "redis paused", "refused"]


# The ways the server fails to answer: each a context manager giving the address to call.


@dataclass(frozen=True)
class Target:
    """Where the client calls, and with which API key."""

    address: str
    api_key: str | None = None


@contextmanager
def failing(
    condition: str, own_redis: RedisServer, start: Callable[..., PatternsServer], tmp_path: Path
) -> Iterator[Target]:
    if condition == "refused":
        yield Target(f"127.0.0.1:{free_port()}")  # nobody listens there
    elif condition == "overloaded":
        with overloaded(Target(start("--max-concurrent-rpcs", "1").address), "OVERLOADED") as to:
            yield to
    elif condition == "tenant overloaded":
        token, digest = new_token()
        team = Tenant("team", "team", token, digest, extra=["max_concurrent_rpcs = 1"])
        server = start("--auth-file", str(write_auth_file(tmp_path / "tenants.toml", [team])))
        with overloaded(Target(server.address, token), "TENANT_OVERLOADED") as to:
            yield to
    else:
        server = start()
        warm_up(server.address)
        paused = server.process if condition == "server paused" else own_redis.process
        assert paused is not None
        paused.send_signal(signal.SIGSTOP)
        try:
            yield Target(server.address)
        finally:
            paused.send_signal(signal.SIGCONT)


def warm_up(address: str) -> None:
    with Client(address, timeout=CLIENT_TIMEOUT) as client:
        client.counter.count("warm-up")


@contextmanager
def overloaded(target: Target, reason: str) -> Iterator[Target]:
    """The one slot for unary calls (the server's, or the tenant's) taken by a lock's
    wait: every other call is refused RESOURCE_EXHAUSTED `reason` while it lasts."""
    with (
        grpc.insecure_channel(target.address) as channel,
        Client(target.address, api_key=target.api_key, timeout=CLIENT_TIMEOUT) as client,
    ):
        locker = lock_pb2_grpc.LockerStub(channel)
        metadata = [("authorization", f"Bearer {target.api_key}")] if target.api_key else []
        ttl = Duration(seconds=60)
        hold = lock_pb2.AcquireRequest(name="busy", ttl=ttl)
        assert locker.Acquire(hold, timeout=10, metadata=metadata).acquired
        request = lock_pb2.AcquireRequest(name="busy", ttl=ttl, wait_timeout=Duration(seconds=60))
        waiting = [locker.Acquire.future(request, timeout=90, metadata=metadata)]

        def refused() -> bool:
            # A probe can take the one slot just as the wait arrives, and the wait is then
            # the call refused: send it again until it is the one that holds the slot.
            if waiting[0].done():
                waiting[0] = locker.Acquire.future(request, timeout=90, metadata=metadata)
                return False
            try:
                client.counter.count("probe")
            except ResourceExhausted as error:
                return error.reason == reason and not waiting[0].done()
            return False

        eventually(refused, what=f"the server to refuse {reason}")
        try:
            yield target
        finally:
            waiting[0].cancel()


# What each fallback must answer, and how long it took.


def timed(what: str, times: dict[str, float], answer: Callable[[], Any]) -> Any:
    started = time.monotonic()
    try:
        return answer()
    finally:
        times[what] = time.monotonic() - started


def check_answers(times: dict[str, float], condition: str, mode: str) -> None:
    print(
        f"\n{mode}, {condition}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items())
    )
    slow = {what: took for what, took in times.items() if took > BUDGET + MARGIN}
    assert not slow, f"past the budget of {BUDGET} s (+ {MARGIN} s): {slow}"


def sync_fallbacks(target: Target, stream_checks: bool = False) -> dict[str, float]:
    times: dict[str, float] = {}
    with Client(
        target.address,
        api_key=target.api_key,
        timeout=CLIENT_TIMEOUT,
        stream_checks=stream_checks,
    ) as client:
        limiter, cache = client.ratelimit, client.cache
        admitted = timed(
            "check allow", times, lambda: limiter.check("k", POLICY, cost=3, on_unavailable="allow")
        )
        assert admitted.allowed and admitted.fallback
        assert (admitted.limit, admitted.remaining) == (
            20,
            17,
        )  # capacity - cost, as the server's open mode
        refused = timed(
            "check deny", times, lambda: limiter.check("k", POLICY, on_unavailable="deny")
        )
        assert not refused.allowed and refused.fallback and refused.retry_after > timedelta(0)

        @limiter.limited(key=lambda: "k", policy=POLICY)
        def open_door() -> str:
            return "in"

        @limiter.limited(key=lambda: "k", policy=POLICY, on_unavailable="deny")
        def closed_door() -> str:
            return "in"

        assert timed("limited allow", times, open_door) == "in"
        with pytest.raises(RateLimited):
            timed("limited deny", times, closed_door)
        value = timed("get_or_compute", times, lambda: cache.get_or_compute("k", lambda: b"source"))
        assert value == b"source"

        @cache.cached(key=lambda n: f"square:{n}")
        def square(n: int) -> bytes:
            return str(n * n).encode()

        assert timed("cached", times, lambda: square(3)) == b"9"
    return times


def aio_fallbacks(target: Target, stream_checks: bool = False) -> dict[str, float]:
    times: dict[str, float] = {}

    async def atimed(what: str, answer: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return await answer()
        finally:
            times[what] = time.monotonic() - started

    async def scenario() -> None:
        async with aio.Client(
            target.address,
            api_key=target.api_key,
            timeout=CLIENT_TIMEOUT,
            stream_checks=stream_checks,
        ) as client:
            limiter, cache = client.ratelimit, client.cache
            admitted = await atimed(
                "check allow", lambda: limiter.check("k", POLICY, cost=3, on_unavailable="allow")
            )
            assert admitted.allowed and admitted.fallback
            assert (admitted.limit, admitted.remaining) == (20, 17)
            refused = await atimed(
                "check deny", lambda: limiter.check("k", POLICY, on_unavailable="deny")
            )
            assert not refused.allowed and refused.fallback and refused.retry_after > timedelta(0)

            @limiter.limited(key=lambda: "k", policy=POLICY)
            async def open_door() -> str:
                return "in"

            @limiter.limited(key=lambda: "k", policy=POLICY, on_unavailable="deny")
            async def closed_door() -> str:
                return "in"

            assert await atimed("limited allow", open_door) == "in"
            with pytest.raises(RateLimited):
                await atimed("limited deny", closed_door)

            async def source() -> bytes:
                return b"source"

            value = await atimed("get_or_compute", lambda: cache.get_or_compute("k", source))
            assert value == b"source"

            @cache.cached(key=lambda n: f"square:{n}")
            async def square(n: int) -> bytes:
                return str(n * n).encode()

            assert await atimed("cached", lambda: square(3)) == b"9"

    asyncio.run(scenario())
    return times


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_every_fallback_answers_within_its_budget(
    mode: str,
    condition: str,
    own_redis: RedisServer,
    server_on_own_redis: Callable[..., PatternsServer],
    tmp_path: Path,
) -> None:
    run = sync_fallbacks if mode == "sync" else aio_fallbacks
    with failing(condition, own_redis, server_on_own_redis, tmp_path) as target:
        times = run(target)
    check_answers(times, condition, mode)


@pytest.mark.parametrize("condition", STREAM_CONDITIONS)
@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_every_fallback_over_the_check_stream_answers_within_its_budget(
    mode: str,
    condition: str,
    own_redis: RedisServer,
    server_on_own_redis: Callable[..., PatternsServer],
    tmp_path: Path,
) -> None:
    run = sync_fallbacks if mode == "sync" else aio_fallbacks
    with failing(condition, own_redis, server_on_own_redis, tmp_path) as target:
        times = run(target, stream_checks=True)
    check_answers(times, condition, f"{mode} over the check stream")


# A budget the caller sets, and what no fallback hides.


def test_a_check_that_raises_waits_for_the_clients_timeout_not_the_budget(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path
) -> None:
    """on_unavailable="raise" (check's default) has no fallback: it raises, after the
    client's timeout; fallback_after sets the budget of those that fall back."""
    with (
        failing("server paused", own_redis, server_on_own_redis, tmp_path) as target,
        Client(target.address, timeout=1.5) as client,
    ):
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.ratelimit.check("k", POLICY)
        raised_after = time.monotonic() - started
        started = time.monotonic()
        decision = client.ratelimit.check(
            "k", POLICY, on_unavailable="allow", fallback_after=timedelta(milliseconds=600)
        )
        fell_back_after = time.monotonic() - started
    print(f"\nraised after {raised_after:.2f} s; fell back after {fell_back_after:.2f} s")
    assert decision.fallback and raised_after >= 1.4
    assert 0.55 <= fell_back_after < 0.6 + MARGIN


def test_which_errors_a_fallback_covers() -> None:
    covered = [
        Unavailable("down", reason="REDIS_UNAVAILABLE"),
        DeadlineExceeded("slow"),
        ResourceExhausted("busy", reason="OVERLOADED"),
        ResourceExhausted("your share", reason="TENANT_OVERLOADED"),
    ]
    not_covered = [
        ResourceExhausted("too large"),  # a request beyond gRPC's size limit: a bug to fix
        InvalidArgument("bad", reason="INVALID_ARGUMENT"),
        Unauthenticated("who?", reason="INVALID_API_KEY"),
    ]
    assert all(falls_back(error) for error in covered)
    assert not any(falls_back(error) for error in not_covered)


def test_an_error_no_fallback_covers_is_raised(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    address = server_on_own_redis().address
    with Client(address, timeout=CLIENT_TIMEOUT) as client:
        with pytest.raises(InvalidArgument):
            client.ratelimit.check("", POLICY, on_unavailable="allow", fallback_after=PATIENT)
        with pytest.raises(InvalidArgument):
            client.cache.get_or_compute("", lambda: b"never", fallback_after=PATIENT)


def test_a_fill_wait_is_bounded_by_wait_plus_the_budget(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """Another caller holds the lease and never fills: get_or_compute waits `wait` for it
    (the server said a fill is under way), then computes, unstored."""
    address = server_on_own_redis().address
    with grpc.insecure_channel(address) as channel:
        stub = cache_pb2_grpc.CacheStub(channel)
        cold = cache_pb2.GetOrLeaseRequest(key="cold", lease_ttl=Duration(seconds=60))
        assert stub.GetOrLease(cold, timeout=10).HasField("lease")
    with Client(address, timeout=CLIENT_TIMEOUT) as client:
        started = time.monotonic()
        value = client.cache.get_or_compute(
            "cold", lambda: b"mine", wait=timedelta(seconds=1), fallback_after=HALF_A_SECOND
        )
        took = time.monotonic() - started
    print(f"\na fill wait of 1 s, budget 0.5 s: answered in {took:.2f} s")
    assert value == b"mine" and 0.9 <= took < 1 + 0.5 + MARGIN


def test_the_budget_the_errors_and_the_fill_wait_aio(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """The asyncio client: an error no fallback covers is raised, a fill wait is bounded
    by `wait` plus the budget, and a paused server costs the budget the caller set."""
    server = server_on_own_redis()
    with grpc.insecure_channel(server.address) as channel:
        stub = cache_pb2_grpc.CacheStub(channel)
        cold = cache_pb2.GetOrLeaseRequest(key="cold", lease_ttl=Duration(seconds=60))
        assert stub.GetOrLease(cold, timeout=10).HasField("lease")

    async def mine() -> bytes:
        return b"mine"

    async def answered(client: aio.Client) -> float:
        with pytest.raises(InvalidArgument):
            await client.ratelimit.check("", POLICY, on_unavailable="deny", fallback_after=PATIENT)
        with pytest.raises(InvalidArgument):
            await client.cache.get_or_compute("", mine, fallback_after=PATIENT)
        started = time.monotonic()
        value = await client.cache.get_or_compute(
            "cold", mine, wait=timedelta(seconds=1), fallback_after=HALF_A_SECOND
        )
        assert value == b"mine"
        return time.monotonic() - started

    async def paused(client: aio.Client) -> float:
        started = time.monotonic()
        decision = await client.ratelimit.check(
            "k", POLICY, on_unavailable="allow", fallback_after=HALF_A_SECOND
        )
        assert decision.fallback
        return time.monotonic() - started

    async def with_client(scenario: Callable[[aio.Client], Any]) -> float:
        async with aio.Client(server.address, timeout=CLIENT_TIMEOUT) as client:
            took: float = await scenario(client)
            return took

    waited = asyncio.run(with_client(answered))
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        fell_back = asyncio.run(with_client(paused))
    finally:
        server.process.send_signal(signal.SIGCONT)
    print(f"\naio: a fill wait of 1 s answered in {waited:.2f} s; paused, 0.5 s: {fell_back:.2f} s")
    assert 0.9 <= waited < 1 + 0.5 + MARGIN
    assert 0.45 <= fell_back < 0.5 + MARGIN


# A lease given back when compute() raises


LEASE_TTL = timedelta(seconds=5)  # what the next reader waited before the lease was given back


def test_a_failed_compute_gives_the_lease_back_to_the_next_reader_at_once(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    """The first reader's compute() raises while a second waits for its fill: the error
    reaches the first, and the second computes at once, not after the 5 s lease_ttl."""
    address = server_on_own_redis().address
    computing, second_started = threading.Event(), []

    def failing_compute() -> bytes:
        computing.set()
        time.sleep(0.5)  # the second reader is waiting meanwhile
        raise ValueError("the source failed")

    def second_compute() -> bytes:
        second_started.append(time.monotonic())
        return b"second"

    with Client(address, timeout=CLIENT_TIMEOUT) as client:
        cache = client.cache

        def second() -> bytes:
            assert computing.wait(10)
            return cache.get_or_compute(
                "k", second_compute, lease_ttl=LEASE_TTL, wait=MINUTE, fallback_after=PATIENT
            )

        with ThreadPoolExecutor(1) as pool:
            waiter = pool.submit(second)
            with pytest.raises(ValueError, match="the source failed"):
                cache.get_or_compute(
                    "k", failing_compute, lease_ttl=LEASE_TTL, wait=MINUTE, fallback_after=PATIENT
                )
            raised_at = time.monotonic()
            assert waiter.result(timeout=30) == b"second"
        assert (
            cache.get_or_compute("k", failing_compute, fallback_after=PATIENT) == b"second"
        )  # the second stored it
    took = second_started[0] - raised_at
    print(f"\nthe next reader computed {took * 1000:.0f} ms after compute() raised")
    assert took < 1.5  # not after the lease's 5 s


def test_a_failed_compute_gives_the_lease_back_aio(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    address = server_on_own_redis().address
    second_started: list[float] = []

    async def scenario() -> float:
        async with aio.Client(address, timeout=CLIENT_TIMEOUT) as client:
            computing = asyncio.Event()

            async def failing_compute() -> bytes:
                computing.set()
                await asyncio.sleep(0.5)
                raise ValueError("the source failed")

            async def second_compute() -> bytes:
                second_started.append(time.monotonic())
                return b"second"

            async def second() -> bytes:
                await computing.wait()
                return await client.cache.get_or_compute(
                    "k", second_compute, lease_ttl=LEASE_TTL, wait=MINUTE, fallback_after=PATIENT
                )

            waiter = asyncio.ensure_future(second())
            with pytest.raises(ValueError, match="the source failed"):
                await client.cache.get_or_compute(
                    "k", failing_compute, lease_ttl=LEASE_TTL, wait=MINUTE, fallback_after=PATIENT
                )
            raised_at = time.monotonic()
            assert await asyncio.wait_for(waiter, 30) == b"second"
            return second_started[0] - raised_at

    took = asyncio.run(scenario())
    print(f"\naio: the next reader computed {took * 1000:.0f} ms after compute() raised")
    assert took < 1.5


# Misses cached on request


def test_a_miss_is_cached_for_cache_misses_for(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    address = server_on_own_redis().address
    asked: list[str] = []

    def lookup(key: str) -> bytes | None:
        asked.append(key)
        return None  # not found at the source

    with Client(address, timeout=CLIENT_TIMEOUT) as client:
        cache = client.cache
        # Opt-in: without cache_misses_for, every call asks the source again, at once.
        started = time.monotonic()
        assert [
            cache.get_or_compute("plain", lambda: lookup("plain"), fallback_after=PATIENT)
            for _ in range(3)
        ] == [None] * 3
        assert asked == ["plain"] * 3 and time.monotonic() - started < MARGIN
        assert cache.get("plain") is None  # nothing stored, and the lease given back
        # With it, the source is asked once while the miss lives.
        for _ in range(3):
            value = cache.get_or_compute(
                "hot",
                lambda: lookup("hot"),
                tags=["users"],
                cache_misses_for=MINUTE,
                fallback_after=PATIENT,
            )
            assert value is None
        assert asked.count("hot") == 1
        entry = cache.get("hot")
        assert entry is not None and entry.value == MISSING and entry.ttl_remaining <= MINUTE
        assert cache.invalidate_tags(["users"]) == 1  # the miss goes with its tags
        cache.get_or_compute(
            "hot", lambda: lookup("hot"), cache_misses_for=MINUTE, fallback_after=PATIENT
        )
        assert asked.count("hot") == 2

        @cache.cached(
            key=lambda user: f"user:{user}", cache_misses_for=MINUTE, fallback_after=PATIENT
        )
        def user(name: str) -> bytes | None:
            asked.append(name)
            return b"found" if name == "ann" else None

        assert [user("ann"), user("ann"), user("zed"), user("zed")] == [b"found"] * 2 + [None] * 2
        assert asked.count("ann") == 1 and asked.count("zed") == 1


def test_a_miss_is_cached_for_cache_misses_for_aio(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    address = server_on_own_redis().address
    asked: list[str] = []

    async def scenario() -> None:
        async with aio.Client(address, timeout=CLIENT_TIMEOUT) as client:

            @client.cache.cached(
                key=lambda user: f"user:{user}", cache_misses_for=MINUTE, fallback_after=PATIENT
            )
            async def user(name: str) -> bytes | None:
                asked.append(name)
                return b"found" if name == "ann" else None

            answers = [await user(name) for name in ["ann", "ann", "zed", "zed"]]
            assert answers == [b"found", b"found", None, None]
            entry = await client.cache.get("user:zed")
            assert entry is not None and entry.value == MISSING and entry.ttl_remaining <= MINUTE

            async def nowhere() -> bytes | None:
                asked.append("plain")
                return None

            assert (
                await client.cache.get_or_compute("plain", nowhere, fallback_after=PATIENT) is None
            )
            assert (
                await client.cache.get_or_compute("plain", nowhere, fallback_after=PATIENT) is None
            )

    asyncio.run(scenario())
    assert asked == ["ann", "zed", "plain", "plain"]
