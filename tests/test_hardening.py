"""What an adversarial probe of the runtime found, each finding held to a test: bad input,
Redis misbehaving, overload, and the edges of start and stop.

(Key naming, finding 2, is in test_keys.py; the sliding log's bounded work, finding 6, in
test_ratelimit.py; the write probe of health, finding 9, in test_storage.py and below.)
"""

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf import descriptor_pb2, timestamp_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from devtools.procfs import memory_bytes
from patterns_server.core.errors import InvalidArgument
from patterns_server.rpc.convert import optional_datetime, to_timedelta
from tests.conftest import node_clients, windows_of
from tests.rpc import assert_invalid, details, retry_delay, rpc_error
from tests.waiting import eventually

CONTRACT = Path(__file__).parents[1] / "server" / "patterns_server" / "contract.binpb"
HOUR = Duration(seconds=3_600)


def contract_methods() -> Iterator[tuple[str, descriptor_pb2.MethodDescriptorProto, Any]]:
    """(path, method, input message) of every method of every service in the contract."""
    files = [
        file
        for path in (CONTRACT, CONTRACT.with_name("envoy.binpb"))  # Envoy's service too
        for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    ]
    messages = {
        f".{file.package}.{message.name}": message
        for file in files
        for message in file.message_type
    }
    for file in files:
        for service in file.service:
            for method in service.method:
                path = f"/{file.package}.{service.name}/{method.name}"
                yield path, method, messages[method.input_type]


def bad_utf8_in_first_string(message: descriptor_pb2.DescriptorProto) -> bytes | None:
    """A message whose first string field holds invalid UTF-8; None if it has none."""
    for field in message.field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            return bytes([field.number << 3 | 2, 2, 0xFF, 0xFE])
    return None


# 1. Malformed protobuf


def test_malformed_requests_are_invalid_argument_on_every_method(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    server = server_on_own_redis("--log-level", "debug")
    with grpc.insecure_channel(server.address) as channel:
        tried = 0
        for path, method, message in contract_methods():
            call = (
                channel.unary_stream(path) if method.server_streaming else channel.unary_unary(path)
            )
            payloads = [b"\xff\xff\xff\xff", bad_utf8_in_first_string(message)]
            for payload in filter(None, payloads):
                tried += 1
                error = rpc_error(lambda: list(call(payload, timeout=10)))  # noqa: B023
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, error)
                assert details(error)["ErrorInfo"].reason == "MALFORMED_REQUEST"
                text = error.details() or ""
                assert "Error" not in text and "class" not in text, text
        assert tried >= 11  # every method, twice where a string comes first
    server.wait_for_log("INVALID_ARGUMENT")  # the request log's one line per call
    server.stop()  # all it logged is in: it has exited
    assert "Traceback" not in server.log
    assert " ERROR " not in server.log


# 3. Out-of-range Durations and Timestamps


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 1_500_000_000), (1, 2_147_483_647), (1, -1), (-1, 5), (315_576_000_001, 0)],
)
def test_invalid_durations_are_refused_wherever_they_appear(
    channel: grpc.Channel, seconds: int, nanos: int
) -> None:
    limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
    period = Duration(seconds=seconds, nanos=nanos)
    rule = pb.Policy(algorithm=pb.ALGORITHM_GCRA, limit=10, period=period)
    assert_invalid(lambda: limiter.Check(pb.CheckRequest(key="k", policy=rule)), "policy.period")
    good = pb.CheckRequest(
        key="k", policy=pb.Policy(algorithm=pb.ALGORITHM_GCRA, limit=1, period=HOUR)
    )
    many = pb.CheckManyRequest(checks=[good, good, pb.CheckRequest(key="k", policy=rule)])
    assert_invalid(lambda: limiter.CheckMany(many), "checks[2].policy.period")
    counter = counter_pb2_grpc.UniqueCounterStub(channel)
    add = counter_pb2.AddRequest(key="k", items=["a"], ttl=period)
    assert_invalid(lambda: counter.Add(add), "ttl")


def test_a_ttl_under_a_millisecond_is_refused_not_ignored(channel: grpc.Channel) -> None:
    counter = counter_pb2_grpc.UniqueCounterStub(channel)
    for ttl in (Duration(nanos=999), Duration(nanos=999_999)):
        add = counter_pb2.AddRequest(key="k", items=["a"], ttl=ttl)
        assert_invalid(lambda: counter.Add(add), "ttl")  # noqa: B023
        merge = counter_pb2.MergeRequest(destination="d", sources=["k"], ttl=ttl)
        assert_invalid(lambda: counter.Merge(merge), "ttl")  # noqa: B023


def test_durations_and_timestamps_are_checked_in_the_shared_conversion() -> None:
    assert to_timedelta(0, 999, "f").total_seconds() == 0.000001  # never zero
    assert to_timedelta(0, 0, "f").total_seconds() == 0
    with pytest.raises(InvalidArgument, match="same sign"):
        to_timedelta(2, -3, "f")
    holder = timestamp_pb2.Timestamp  # the message a field holds is checked by the helper
    assert optional_datetime(_holding(holder(seconds=0, nanos=5_000)), "at") == datetime(
        1970, 1, 1, 0, 0, 0, 5, tzinfo=UTC
    )
    for bad in (holder(seconds=0, nanos=-1), holder(seconds=253_402_300_800)):
        with pytest.raises(InvalidArgument) as refused:
            optional_datetime(_holding(bad), "at", "entries[1].at")
        assert refused.value.field == "entries[1].at"


def _holding(stamp: timestamp_pb2.Timestamp) -> Message:
    """A stand-in message with one Timestamp field `at` (no message of the contract has
    one yet)."""

    class Holding:
        at = stamp

        def HasField(self, name: str) -> bool:
            return name == "at"

    return cast(Message, Holding())


# 4. The largest documented request of each service


def test_every_documented_maximum_request_is_accepted(channel: grpc.Channel) -> None:
    key = "k" * 500 + uuid.uuid4().hex[:12]  # 512 bytes
    counter = counter_pb2_grpc.UniqueCounterStub(channel)
    items = [f"{i:05d}" + "x" * 1_019 for i in range(10_000)]  # 10,000 x 1,024 bytes
    add = counter_pb2.AddRequest(key=key, items=items, ttl=HOUR)
    assert add.ByteSize() > 10_000_000
    assert counter.Add(add, timeout=60).changed
    keys = [key] + [key[:-3] + f"{i:03d}" for i in range(99)]
    assert counter.Count(counter_pb2.CountRequest(keys=keys), timeout=30).count > 9_000
    merge = counter_pb2.MergeRequest(destination=key, sources=keys, ttl=HOUR)
    assert counter.Merge(merge, timeout=30).count > 9_000
    limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
    rule = pb.Policy(algorithm=pb.ALGORITHM_SLIDING_WINDOW_LOG, limit=100_000, period=HOUR)
    checks = [pb.CheckRequest(key=key[:-4] + f"{i:04d}", policy=rule) for i in range(1_000)]
    assert limiter.CheckMany(pb.CheckManyRequest(checks=checks), timeout=60).allowed


# 5. An oversized CheckMany costs nothing but its refusal


def test_an_oversized_check_many_is_refused_before_any_check_is_read(
    channel: grpc.Channel,
) -> None:
    """Counted first: the invalid Duration in checks[0] is never looked at (the old server
    converted all 261,888 checks first, stalling every other call for up to a second)."""
    limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
    rule = pb.Policy(algorithm=pb.ALGORITHM_GCRA, limit=1, period=Duration(seconds=1, nanos=-1))
    checks = [pb.CheckRequest(key="k", policy=rule)] * 261_888
    started = time.monotonic()
    assert_invalid(
        lambda: limiter.CheckMany(pb.CheckManyRequest(checks=checks), timeout=30), "checks"
    )
    print(f"261,888 checks refused in {time.monotonic() - started:.3f} s (call included)")


# 7. A connection that Redis closed while idle


def kill_idle_connections(backend_url: str) -> None:
    """CLIENT KILL TYPE normal on every node: what Redis's `timeout`, a proxy, a NAT or a
    failover do to idle connections."""
    for node in node_clients(backend_url):
        node.client_kill_filter(_type="normal", skip_me=True)


def test_the_first_call_after_redis_closed_idle_connections_succeeds(
    backend_url: str, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    period = windows_of(backend_url).calm(timedelta(days=1))
    rule = pb.Policy(algorithm=pb.ALGORITHM_FIXED_WINDOW, limit=100, period=period)
    keys = [new_key() for _ in range(20)]  # spread over every Cluster node
    with grpc.insecure_channel(server.address) as channel:
        limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
        for key in keys:
            limiter.Check(pb.CheckRequest(key=key, policy=rule), timeout=10)
        for _ in range(3):
            kill_idle_connections(backend_url)
            time.sleep(0.05)
            for key in keys:
                assert limiter.Check(pb.CheckRequest(key=key, policy=rule), timeout=10).allowed
            many = pb.CheckManyRequest(checks=[pb.CheckRequest(key=k, policy=rule) for k in keys])
            kill_idle_connections(backend_url)
            time.sleep(0.05)
            assert limiter.CheckMany(many, timeout=10).allowed


# 8 and 10. Overload: large requests, too many calls


def run_calls(address: str, calls: list[Callable[[Any], Any]]) -> list[Any]:
    """Start every call at once on one channel; each one's response or RpcError."""

    async def everyone() -> list[Any]:
        async with grpc.aio.insecure_channel(address) as channel:
            return await asyncio.gather(*(call(channel) for call in calls), return_exceptions=True)

    return asyncio.run(everyone())


def outcome(result: Any) -> str:
    if isinstance(result, BaseException) and not isinstance(result, grpc.aio.AioRpcError):
        raise result  # not an answer of the server's: the test's own failure
    if isinstance(result, grpc.aio.AioRpcError):
        if result.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            found = details(result)
            assert found["RetryInfo"].retry_delay.ToTimedelta().total_seconds() > 0
            return f"RESOURCE_EXHAUSTED {found['ErrorInfo'].reason}"
        return f"{result.code().name} {result.details()}"
    return "OK"


@pytest.mark.slow
def test_large_requests_are_bounded_not_timed_out(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    """60 concurrent Adds of 4 MiB: each succeeds or is refused as overload, none times
    out waiting behind the others, and the server's memory stays bounded (once: 1.7-2.4 GiB
    and half the Adds UNAVAILABLE, all in one pipeline under one socket timeout). The
    timeout is 3 s, not 1: on a machine busy with other tests, one 4 MiB round trip once
    took over 1 s, and its timeout was then every queued Add's answer (an outage is given
    to the calls waiting behind it); a single pipeline of them all still shows in memory."""
    server = server_on_own_redis("--redis-timeout", "3")
    items = [f"{i:05d}" + "x" * 1_019 for i in range(4_000)]

    def add(number: int) -> Callable[[Any], Any]:
        request = counter_pb2.AddRequest(key=f"big-{number}", items=items)
        return lambda channel: counter_pb2_grpc.UniqueCounterStub(channel).Add(request, timeout=60)

    results = run_calls(server.address, [add(n) for n in range(60)])
    assert server.process is not None
    peak = memory_bytes(server.process.pid, "VmHWM")
    outcomes = [outcome(result) for result in results]
    counts = {each: outcomes.count(each) for each in set(outcomes)}
    assert set(outcomes) <= {"OK", "RESOURCE_EXHAUSTED OVERLOADED"}, counts
    assert outcomes.count("OK") >= 16  # 64 MiB of requests in progress at a time
    print(f"peak server memory {peak / 2**20:.0f} MiB; {outcomes.count('OK')} of 60 admitted")
    assert peak < 1 << 30


@pytest.mark.slow
def test_overload_is_answered_resource_exhausted_never_cancelled(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """2,000 calls at once against a server admitting 100 while Redis is paused: those
    beyond are refused at once with RESOURCE_EXHAUSTED OVERLOADED (gRPC's own queue used
    to cancel a third of them, silently), health answers meanwhile, and the admitted ones
    complete when Redis returns."""
    server = server_on_own_redis("--max-concurrent-rpcs", "100", "--redis-timeout", "5")
    rule = pb.Policy(algorithm=pb.ALGORITHM_GCRA, limit=10**6, period=HOUR)

    def check(number: int) -> Callable[[Any], Any]:
        request = pb.CheckRequest(key=f"user-{number}", policy=rule)
        return lambda channel: ratelimit_pb2_grpc.RateLimiterStub(channel).Check(
            request, timeout=30
        )

    own_redis.client().client_pause(1_000, all=True)
    health: list[float] = []
    prober = threading.Thread(target=lambda: health.append(_health_seconds(server)))
    prober.start()
    results = run_calls(server.address, [check(n) for n in range(2_000)])
    prober.join()
    with grpc.insecure_channel(server.address) as channel:  # recovered at once
        stub = ratelimit_pb2_grpc.RateLimiterStub(channel)
        assert stub.Check(pb.CheckRequest(key="after", policy=rule), timeout=10).allowed
    server.wait_for_log("overloaded: refused")
    outcomes = [outcome(result) for result in results]
    assert set(outcomes) == {"OK", "RESOURCE_EXHAUSTED OVERLOADED"}, set(outcomes)
    assert outcomes.count("OK") >= 100
    print(f"{outcomes.count('OK')} admitted of 2,000; health answered in {health[0]:.3f} s")
    assert health[0] < 5


def _health_seconds(server: PatternsServer) -> float:
    time.sleep(0.3)  # while the calls pile up
    with grpc.insecure_channel(server.address) as channel:
        started = time.monotonic()
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        return time.monotonic() - started


# 9. Health follows what the server needs: writes


def test_health_turns_not_serving_when_redis_refuses_writes(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    server = server_on_own_redis()
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def status() -> int:
            return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status

        eventually(lambda: status() == health_pb2.HealthCheckResponse.SERVING)
        own_redis.client().config_set("maxmemory", 1)  # with noeviction: no write fits
        eventually(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING)
        own_redis.client().config_set("maxmemory", 0)
        eventually(lambda: status() == health_pb2.HealthCheckResponse.SERVING)


# 11. Failing open when Redis hangs


def test_fail_open_answers_before_the_deadline_when_redis_hangs(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    server = server_on_own_redis("--ratelimit-failure-mode", "open")
    rule = pb.Policy(algorithm=pb.ALGORITHM_FIXED_WINDOW, limit=3, period=HOUR)
    assert own_redis.process is not None
    with grpc.insecure_channel(server.address) as channel:
        limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
        assert limiter.Check(pb.CheckRequest(key="u", policy=rule), timeout=10).allowed
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            answers = [
                limiter.Check(pb.CheckRequest(key="u", policy=rule), timeout=0.25) for _ in range(3)
            ]
            many = limiter.CheckMany(
                pb.CheckManyRequest(checks=[pb.CheckRequest(key="u", policy=rule)] * 2),
                timeout=0.25,
            )
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
    assert all(answer.allowed for answer in answers) and many.allowed
    server.wait_for_log("admitted")


# 12. The edges of start and stop


def test_a_killed_servers_embedded_redis_directory_is_removed_at_the_next_start() -> None:
    first = PatternsServer(None).start()
    directory = Path(first.log.split("unix://")[1].split()[0]).parent
    assert first.process is not None
    first.process.kill()
    first.wait()
    assert directory.exists()  # nothing could clean up after a SIGKILL
    second = PatternsServer(None).start()
    try:
        assert not directory.exists()
    finally:
        second.stop()


@pytest.mark.slow
def test_calls_racing_shutdown_are_answered_unavailable_never_cancelled(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    """40 clients calling in a loop through SIGTERM, each honouring RetryInfo: every call
    is answered OK or UNAVAILABLE. (gRPC cancels the calls it holds but has not handed
    over when the server stops: the server first answers UNAVAILABLE with a RetryInfo
    until no call has come for a moment, so that clients have gone when it stops.)"""
    server = server_on_own_redis("--shutdown-grace", "2")
    rule = pb.Policy(algorithm=pb.ALGORITHM_GCRA, limit=10**6, period=HOUR)
    codes: list[str] = []

    async def hammer(stop: asyncio.Event) -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = ratelimit_pb2_grpc.RateLimiterStub(channel)

            async def one_client(number: int) -> None:
                while not stop.is_set():
                    try:
                        await stub.Check(pb.CheckRequest(key=f"u{number}", policy=rule), timeout=5)
                        codes.append("OK")
                    except grpc.aio.AioRpcError as error:
                        codes.append(error.code().name)
                        await asyncio.sleep(retry_delay(error) or 0.01)

            await asyncio.gather(*(one_client(n) for n in range(40)))

    async def scenario() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(hammer(stop))
        # Every client calling in its loop, not after a fixed time: on a busy machine a
        # client still connecting then calls late, maybe after the server's quiet moment.
        deadline = time.monotonic() + 30
        while codes.count("OK") < 100:
            assert time.monotonic() < deadline, "fewer than 100 calls answered in 30 s"
            await asyncio.sleep(0.05)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.wait)
        await asyncio.sleep(0.3)
        stop.set()
        await load

    asyncio.run(scenario())
    assert codes.count("OK") >= 100
    assert set(codes) <= {"OK", "UNAVAILABLE"}, {code: codes.count(code) for code in set(codes)}
