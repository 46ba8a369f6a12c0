"""Locker contract on every backend (standalone 7, 6.2, Cluster): leases, fencing tokens,
waiting without polling, and locks held by streams."""

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.cache.v1 import cache_pb2, cache_pb2_grpc
from patterns.lock.v1 import lock_pb2 as pb
from patterns.lock.v1 import lock_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from tests.durations import duration_ms
from tests.grants import patient_server, sleep_past, wait_until_script_held, writes_paused
from tests.rpc import (
    assert_invalid,
    assert_unavailable,
    details,
    grpcurl_call,
    once_answered,
    retry_delay,
    stub_for,
)
from tests.waiting import eventually

Stub = lock_pb2_grpc.LockerStub
SECOND = Duration(seconds=1)
MINUTE = Duration(seconds=60)


@pytest.fixture
def locker(channel: grpc.Channel) -> Stub:
    return Stub(channel)


def acquire(locker: Stub, name: str, ttl: Duration = MINUTE, wait: int = 0) -> pb.AcquireResponse:
    return locker.Acquire(
        pb.AcquireRequest(name=name, ttl=ttl, wait_timeout=duration_ms(wait)), timeout=30
    )


def release(locker: Stub, name: str, token: str) -> int:
    return locker.Release(pb.ReleaseRequest(name=name, token=token), timeout=10).status


# Leases


def test_one_holder_at_a_time_and_release_frees(locker: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    first = acquire(locker, name)
    assert first.acquired and len(first.token) >= 22 and first.fencing_token >= 1
    assert abs(first.expires_at.ToSeconds() - time.time() - 60) < 5
    assert not acquire(locker, name).acquired
    assert release(locker, name, "not-the-token") == pb.RELEASE_STATUS_HELD_BY_OTHER
    assert acquire(locker, name).acquired is False  # a wrong token released nothing
    assert release(locker, name, first.token) == pb.RELEASE_STATUS_RELEASED
    assert release(locker, name, first.token) == pb.RELEASE_STATUS_NOT_HELD
    second = acquire(locker, name)
    assert second.acquired and second.fencing_token > first.fencing_token
    assert second.token != first.token


def test_a_lease_expires_and_its_holder_learns_it_late(
    locker: Stub, new_key: Callable[[], str]
) -> None:
    name = new_key()
    lapsed = acquire(locker, name, ttl=duration_ms(200))
    time.sleep(0.35)
    assert release(locker, name, lapsed.token) == pb.RELEASE_STATUS_NOT_HELD
    extend = pb.ExtendRequest(name=name, token=lapsed.token, ttl=MINUTE)
    assert locker.Extend(extend, timeout=10).extended is False
    successor = acquire(locker, name)
    assert successor.acquired and successor.fencing_token > lapsed.fencing_token
    assert release(locker, name, lapsed.token) == pb.RELEASE_STATUS_HELD_BY_OTHER


def test_extend_sets_the_remaining_lease(locker: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    lease = acquire(locker, name, ttl=Duration(seconds=10))
    extended = locker.Extend(pb.ExtendRequest(name=name, token=lease.token, ttl=MINUTE))
    assert extended.extended and extended.expires_at.ToSeconds() > lease.expires_at.ToSeconds()
    state = locker.Inspect(pb.InspectRequest(name=name))
    assert state.held and state.fencing_token == lease.fencing_token
    # A minute from the Extend: not the 10 s the lease had left, nor 10 s + a minute.
    assert 50 < state.ttl_remaining.ToTimedelta().total_seconds() <= 60


def test_inspect_and_force_release(locker: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    assert locker.Inspect(pb.InspectRequest(name=name)) == pb.InspectResponse()
    lease = acquire(locker, name)
    inspected = locker.Inspect(pb.InspectRequest(name=name))
    assert inspected.held and lease.token not in str(inspected)
    assert locker.ForceRelease(pb.ForceReleaseRequest(name=name)).released
    assert not locker.ForceRelease(pb.ForceReleaseRequest(name=name)).released
    assert release(locker, name, lease.token) == pb.RELEASE_STATUS_NOT_HELD


def test_fencing_tokens_survive_expiry_and_restarts(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    """The fencing counter outlives every lease and the server: tokens keep growing."""
    tokens = []
    for _ in range(2):
        server = server_on_own_redis()
        with grpc.insecure_channel(server.address) as channel:
            for _ in range(3):
                tokens.append(acquire(Stub(channel), "job", ttl=duration_ms(50)).fencing_token)
                time.sleep(0.08)  # the lease expires: the next Acquire gets the lock
        server.stop()  # the next three come from another server process
    assert tokens == sorted(tokens) and len(set(tokens)) == 6


def test_fencing_tokens_keep_growing_when_redis_loses_its_data(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """Redis killed and started again without persistence has lost the fence counter: the
    next token comes from the Redis clock's microseconds, above every token told before
    (it was once 1 again: 5 -> 1)."""
    with grpc.insecure_channel(server_on_own_redis().address) as channel:
        locker = Stub(channel)
        told = []
        for _ in range(5):
            lease = acquire(locker, "job")
            told.append(lease.fencing_token)
            assert release(locker, "job", lease.token) == pb.RELEASE_STATUS_RELEASED
        own_redis.stop()  # killed: it saves nothing (--save "" --appendonly no)
        own_redis.start()
        assert own_redis.client().dbsize() == 0  # the counter is gone
        after = once_answered(lambda: acquire(locker, "job"))
    assert all(a < b for a, b in itertools.pairwise(told))
    assert after.acquired and after.fencing_token > told[-1], (told, after.fencing_token)


def test_fencing_tokens_keep_growing_across_restarts_of_an_embedded_redis(
    tmp_path: Path,
) -> None:
    """An embedded Redis that keeps no data (--embedded-dir none): each server start begins
    with no fence counter, and tokens still grow."""
    told = []
    for _ in range(2):
        environment = dict(os.environ, TMPDIR=str(tmp_path))
        server = PatternsServer(None, "--embedded-dir", "none", env=environment).start()
        try:
            with grpc.insecure_channel(server.address) as channel:
                told.append(acquire(Stub(channel), "job", ttl=SECOND).fencing_token)
        finally:
            server.stop()
    assert told[1] > told[0], told


# Waiting


def test_a_waiter_is_woken_by_the_release(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario() -> float:
        async with stub_for(server.address, Stub) as stub:
            held = await stub.Acquire(pb.AcquireRequest(name=name, ttl=MINUTE))
            waiting = asyncio.ensure_future(
                stub.Acquire(pb.AcquireRequest(name=name, ttl=MINUTE, wait_timeout=MINUTE))
            )
            await asyncio.sleep(0.3)
            assert not waiting.done()
            released_at = time.monotonic()
            await stub.Release(pb.ReleaseRequest(name=name, token=held.token))
            granted = await waiting
            assert granted.acquired and granted.fencing_token > held.fencing_token
            return time.monotonic() - released_at

    assert asyncio.run(scenario()) < 1.0  # woken by the release, not by the 2 s fallback


def test_a_waiter_gets_an_expired_lock_and_gives_up_in_time(
    locker: Stub, new_key: Callable[[], str]
) -> None:
    name, other = new_key(), new_key()
    acquire(locker, name, ttl=duration_ms(300))  # never released: expires
    started = time.monotonic()
    assert acquire(locker, name, wait=5_000).acquired
    assert time.monotonic() - started < 2.0
    acquire(locker, other, ttl=MINUTE)
    started = time.monotonic()
    assert not acquire(locker, other, wait=300).acquired
    assert 0.25 < time.monotonic() - started < 3.0


def test_a_wait_never_outlasts_the_deadline(locker: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    acquire(locker, name)
    started = time.monotonic()
    request = pb.AcquireRequest(name=name, ttl=MINUTE, wait_timeout=MINUTE)
    assert locker.Acquire(request, timeout=1.0).acquired is False  # answered, not timed out
    assert time.monotonic() - started < 1.0


def test_mutual_exclusion_with_strictly_growing_fencing_tokens(
    server: PatternsServer, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    """20 clients x 50 times: acquire, read-increment-write a Redis counter (not atomic),
    release. The counter ends at exactly 1,000, and the fencing tokens seen inside the
    critical sections grow strictly."""
    name, counter = new_key(), f"mutex-test:{new_key()}"
    store = backend_redis
    store.set(counter, 0)
    seen: list[int] = []

    async def client(stub: Stub) -> None:
        for _ in range(50):
            request = pb.AcquireRequest(name=name, ttl=MINUTE, wait_timeout=MINUTE)
            lease = await stub.Acquire(request, timeout=120)
            assert lease.acquired
            seen.append(lease.fencing_token)
            value = int(await asyncio.to_thread(store.get, counter))
            await asyncio.to_thread(store.set, counter, value + 1)
            status = await stub.Release(pb.ReleaseRequest(name=name, token=lease.token))
            assert status.status == pb.RELEASE_STATUS_RELEASED

    async def scenario() -> None:
        channels = [grpc.aio.insecure_channel(server.address) for _ in range(20)]
        try:
            await asyncio.gather(*(client(Stub(channel)) for channel in channels))
        finally:
            for channel in channels:
                await channel.close()

    asyncio.run(scenario())
    assert int(store.get(counter)) == 1_000
    assert all(a < b for a, b in itertools.pairwise(seen)), "fencing tokens must grow"


def test_a_thousand_waiters_share_one_redis_connection(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    # A waiting Acquire is a call in progress: room for 1,000 of them and the others.
    server = server_on_own_redis("--max-concurrent-rpcs", "1100")

    async def scenario() -> tuple[int, int]:
        async with stub_for(server.address, Stub) as stub:
            held = await stub.Acquire(pb.AcquireRequest(name="busy", ttl=MINUTE))
            request = pb.AcquireRequest(name="busy", ttl=MINUTE, wait_timeout=MINUTE)
            waiters = [asyncio.ensure_future(stub.Acquire(request)) for _ in range(1_000)]
            await asyncio.sleep(2.0)
            connections = len(own_redis.client().client_list())
            await stub.Release(pb.ReleaseRequest(name="busy", token=held.token))
            winners = 0
            while waiters:  # each winner releases for the next
                done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    lease = finished.result()
                    assert lease.acquired
                    winners += 1
                    await stub.Release(pb.ReleaseRequest(name="busy", token=lease.token))
                waiters = list(pending)
            return connections, winners

    connections, winners = asyncio.run(scenario())
    assert winners == 1_000
    assert connections <= 6  # the test's own, the pool's few, and one for Pub/Sub


# Hold


HOLDER = textwrap.dedent(
    """
    import sys, grpc
    from google.protobuf.duration_pb2 import Duration
    from patterns.lock.v1 import lock_pb2 as pb, lock_pb2_grpc
    channel = grpc.insecure_channel(sys.argv[1])
    request = pb.HoldRequest(name=sys.argv[2], ttl=Duration(seconds=int(sys.argv[3])))
    for message in lock_pb2_grpc.LockerStub(channel).Hold(request):
        print(message.WhichOneof("kind"), flush=True)
    """
)


def test_hold_keeps_the_lock_past_its_ttl_and_frees_it_when_cancelled(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            hold = stub.Hold(pb.HoldRequest(name=name, ttl=duration_ms(300)))
            first = await hold.read()
            assert first.WhichOneof("kind") == "acquired" and first.acquired.fencing_token
            await asyncio.sleep(1.0)  # three ttls: renewed meanwhile
            refused = await stub.Acquire(pb.AcquireRequest(name=name, ttl=MINUTE))
            assert not refused.acquired
            hold.cancel()
            request = pb.AcquireRequest(name=name, ttl=MINUTE, wait_timeout=duration_ms(2_000))
            started = time.monotonic()
            assert (await stub.Acquire(request)).acquired
            assert time.monotonic() - started < 1.0  # released at once, not expired

    asyncio.run(scenario())


def test_a_killed_holders_lock_is_free_within_its_ttl(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, server.address, name, "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "acquired"
        with grpc.insecure_channel(server.address) as channel:
            assert not acquire(Stub(channel), name).acquired
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            started = time.monotonic()
            assert acquire(Stub(channel), name, wait=5_000).acquired
            assert time.monotonic() - started < 3.0
    finally:
        holder.kill()


def test_a_hold_that_loses_its_lease_says_so_and_aborts(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            hold = stub.Hold(pb.HoldRequest(name=name, ttl=duration_ms(600)))
            assert (await hold.read()).WhichOneof("kind") == "acquired"
            await stub.ForceRelease(pb.ForceReleaseRequest(name=name))
            assert (await hold.read()).WhichOneof("kind") == "lost"
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await hold.read()
            assert ended.value.code() == grpc.StatusCode.ABORTED
            assert details(ended.value)["ErrorInfo"].reason == "LEASE_LOST"

    asyncio.run(scenario())


def test_a_hold_that_waits_in_vain_says_not_acquired(
    locker: Stub, new_key: Callable[[], str]
) -> None:
    name = new_key()
    acquire(locker, name)
    messages = list(
        locker.Hold(pb.HoldRequest(name=name, ttl=SECOND, wait_timeout=duration_ms(200)))
    )
    assert [m.WhichOneof("kind") for m in messages] == ["not_acquired"]


def test_shutdown_releases_held_locks(server_on_own_redis: Callable[..., PatternsServer]) -> None:
    server, other = server_on_own_redis(), server_on_own_redis()

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            hold = stub.Hold(pb.HoldRequest(name="job", ttl=MINUTE))
            assert (await hold.read()).WhichOneof("kind") == "acquired"
            assert server.process is not None
            server.process.terminate()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await hold.read()
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        async with stub_for(other.address, Stub) as stub:
            assert (await stub.Acquire(pb.AcquireRequest(name="job", ttl=MINUTE))).acquired

    asyncio.run(scenario())


# Grants whose caller has gone


@pytest.fixture(scope="module")
def patient(backend_url: str) -> Iterator[PatternsServer]:
    server = patient_server(backend_url)
    yield server
    server.stop()


@pytest.mark.parametrize("call", ["hold", "waiting acquire"])
def test_a_lock_granted_to_a_caller_gone_meanwhile_is_given_back(
    patient: PatternsServer, backend_url: str, new_key: Callable[[], str], call: str
) -> None:
    """The server's Acquire script waits in Redis (writes paused) while its caller cancels;
    once the pause ends Redis grants the lock to a caller that will never learn its token.
    The server gives it back at once, instead of leaving the lock held for its minute."""
    name = new_key()
    with grpc.insecure_channel(patient.address) as channel:
        locker = Stub(channel)
        if call == "hold":
            with writes_paused(backend_url) as nodes:
                hold = locker.Hold(pb.HoldRequest(name=name, ttl=MINUTE))
                wait_until_script_held(nodes)
                hold.cancel()
                time.sleep(0.5)  # the cancellation reaches the server
        else:
            holder = acquire(locker, name, ttl=duration_ms(2_000))
            request = pb.AcquireRequest(name=name, ttl=MINUTE, wait_timeout=MINUTE)
            waiting = locker.Acquire.future(request)
            with writes_paused(backend_url) as nodes:
                wait_until_script_held(nodes)  # a try, at the latest as the holder's lease ends
                assert not waiting.done()
                waiting.cancel()
                sleep_past(holder.expires_at.ToNanoseconds() / 1e9)  # the try will succeed
                time.sleep(0.5)  # the cancellation reaches the server
        eventually(
            lambda: not locker.Inspect(pb.InspectRequest(name=name), timeout=10).held,
            within=5,
            what="the lock given back",
        )
        assert acquire(locker, name).acquired


def test_holds_cancelled_at_random_leave_every_lock_free(
    server: PatternsServer, locker: Stub, new_key: Callable[[], str]
) -> None:
    """1,000 Hold streams on 40 names, each cancelled 0-4 ms after it starts, many of them
    while their grant is on its way: once they have all ended, every lock is free (held
    locks are released as their streams end, not left to their 30 s ttl)."""
    names = [new_key() for _ in range(40)]

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:

            async def hold_briefly(name: str) -> None:
                call = stub.Hold(pb.HoldRequest(name=name, ttl=Duration(seconds=30)))
                await asyncio.sleep(random.uniform(0, 0.004))
                call.cancel()

            await asyncio.gather(*(hold_briefly(names[i % 40]) for i in range(1_000)))

    asyncio.run(scenario())

    def held() -> list[str]:
        return [n for n in names if locker.Inspect(pb.InspectRequest(name=n), timeout=10).held]

    deadline = time.monotonic() + 5
    while (still := held()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not still, f"{len(still)} of {len(names)} locks still held 5 s after every Hold ended"


def test_shutdown_answers_waiting_acquires_and_fills_at_once(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """Acquires waiting for a lock and GetOrLeases waiting for a fill, at SIGTERM: each is
    answered at once UNAVAILABLE (reason SHUTTING_DOWN, with a RetryInfo), as open streams
    are, so that its client retries elsewhere; the server exits long before its grace."""
    server = server_on_own_redis("--shutdown-grace", "20")

    async def scenario() -> float:
        async with grpc.aio.insecure_channel(server.address) as channel:
            locker, cache = Stub(channel), cache_pb2_grpc.CacheStub(channel)
            assert (await locker.Acquire(pb.AcquireRequest(name="job", ttl=MINUTE))).acquired
            fill = cache_pb2.GetOrLeaseRequest(key="page", lease_ttl=MINUTE)
            assert (await cache.GetOrLease(fill)).HasField("lease")
            acquire = pb.AcquireRequest(name="job", ttl=MINUTE, wait_timeout=MINUTE)
            fill.wait_timeout.CopyFrom(MINUTE)
            waits = [asyncio.ensure_future(locker.Acquire(acquire)) for _ in range(3)]
            waits += [asyncio.ensure_future(cache.GetOrLease(fill)) for _ in range(3)]
            redis = own_redis.client()
            # Parked: subscribed to the wake-ups of the lock and of the fill.
            await asyncio.to_thread(
                eventually, lambda: len(redis.pubsub_channels()) >= 2, 10, 0.05, "waits parked"
            )
            assert server.process is not None and not any(w.done() for w in waits)
            stopped_at = time.monotonic()
            server.process.terminate()
            for wait in waits:
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await wait
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
                assert details(ended.value)["ErrorInfo"].reason == "SHUTTING_DOWN"
                assert (retry_delay(ended.value) or 0) > 0
            answered = time.monotonic() - stopped_at
            print(f"6 waits answered SHUTTING_DOWN {answered * 1000:.0f} ms after SIGTERM")
            assert answered < 2.0, f"the waits were answered {answered:.1f} s after SIGTERM"
            return stopped_at

    stopped_at = asyncio.run(scenario())
    assert server.wait() == 0
    exited = time.monotonic() - stopped_at
    print(f"the server exited {exited:.2f} s after SIGTERM (grace 20 s)")
    assert exited < 5.0


# Bad input, outages, grpcurl


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AcquireRequest(name="", ttl=SECOND), "name"),
        (pb.AcquireRequest(name="n" * 513, ttl=SECOND), "name"),
        (pb.AcquireRequest(name="n"), "ttl"),
        (pb.AcquireRequest(name="n", ttl=Duration(nanos=999_999)), "ttl"),
        (pb.AcquireRequest(name="n", ttl=Duration(seconds=86_401)), "ttl"),
        (
            pb.AcquireRequest(name="n", ttl=SECOND, wait_timeout=Duration(seconds=-1)),
            "wait_timeout",
        ),
        (
            pb.AcquireRequest(name="n", ttl=SECOND, wait_timeout=Duration(seconds=86_401)),
            "wait_timeout",
        ),
        (pb.AcquireRequest(name="n", ttl=Duration(seconds=1, nanos=-1)), "ttl"),
    ],
)
def test_acquire_rejects_bad_input(locker: Stub, request_: pb.AcquireRequest, field: str) -> None:
    assert_invalid(lambda: locker.Acquire(request_), field)


def test_the_other_calls_reject_bad_input(locker: Stub) -> None:
    assert_invalid(lambda: locker.Release(pb.ReleaseRequest(name="n")), "token")
    assert_invalid(lambda: locker.Release(pb.ReleaseRequest(name="", token="t")), "name")
    assert_invalid(lambda: locker.Extend(pb.ExtendRequest(name="n", token="t")), "ttl")
    assert_invalid(lambda: locker.Extend(pb.ExtendRequest(name="n", ttl=SECOND)), "token")
    assert_invalid(lambda: locker.Inspect(pb.InspectRequest(name="n" * 513)), "name")
    assert_invalid(lambda: locker.ForceRelease(pb.ForceReleaseRequest()), "name")
    hold = pb.HoldRequest(
        name="n", ttl=duration_ms(99)
    )  # a Hold renews every ttl/3: 100 ms at least
    assert_invalid(lambda: list(locker.Hold(hold, timeout=10)), "ttl")


def test_redis_outage_is_unavailable_then_recovers(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    with grpc.insecure_channel(server_on_own_redis().address) as channel:
        locker = Stub(channel)
        assert acquire(locker, "a").acquired
        own_redis.stop()
        assert_unavailable(lambda: acquire(locker, "b"))
        own_redis.start()
        assert once_answered(lambda: acquire(locker, "b")).acquired


def test_grpcurl_acquires_and_inspects(
    grpcurl_path: str, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    def grpcurl(method: str, data: dict[str, Any]) -> Any:
        return grpcurl_call(grpcurl_path, server, method, data)

    granted = grpcurl("patterns.lock.v1.Locker/Acquire", {"name": name, "ttl": "30s"})
    assert granted["acquired"] is True and int(granted["fencingToken"]) >= 1
    state = grpcurl("patterns.lock.v1.Locker/Inspect", {"name": name})
    assert state["held"] is True and "token" not in state


def test_waiters_of_one_server_are_served_in_arrival_order(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()

    async def scenario() -> list[int]:
        async with stub_for(server.address, Stub) as stub:
            held = await stub.Acquire(pb.AcquireRequest(name=name, ttl=MINUTE))
            request = pb.AcquireRequest(name=name, ttl=MINUTE, wait_timeout=MINUTE)
            order: list[int] = []

            async def waiter(number: int) -> None:
                lease = await stub.Acquire(request)
                order.append(number)
                await asyncio.sleep(0.01)
                await stub.Release(pb.ReleaseRequest(name=name, token=lease.token))

            waiters = []
            for number in range(10):
                waiters.append(asyncio.ensure_future(waiter(number)))
                await asyncio.sleep(0.05)  # each in line before the next arrives
            await stub.Release(pb.ReleaseRequest(name=name, token=held.token))
            await asyncio.gather(*waiters)
            return order

    assert asyncio.run(scenario()) == list(range(10))
