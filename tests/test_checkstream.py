"""RateLimiter.CheckStream: a bidi stream of checks answered by id as each is decided, on
Redis 7 and the Cluster; and the servicer itself, in process, for what a live server
cannot show (the per-stream limit, nothing left behind a cancelled stream)."""

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from patterns_server.core.errors import Unavailable
from patterns_server.ratelimit.ratelimit import Check, Decision
from patterns_server.ratelimit.service import MAX_IN_PROGRESS, RateLimiterServicer
from patterns_server.runtime.auth import new_token
from tests.rpc import bearer, details, stub_for
from tests.tenants import Tenant, write_auth_file
from tests.windows import Windows

Stub = ratelimit_pb2_grpc.RateLimiterStub
CHECK_STREAM = "/patterns.ratelimit.v1.RateLimiter/CheckStream"
DAY = timedelta(days=1)

on_redis7_and_cluster = pytest.mark.parametrize("backend_url", ["redis7", "cluster"], indirect=True)


@pytest.fixture
def day(windows: Windows) -> Duration:
    """About a day, the Redis clock mid-window: no window ends while a test runs."""
    return windows.calm(DAY)


def fixed(limit: int, period: Duration) -> pb.Policy:
    return pb.Policy(algorithm=pb.ALGORITHM_FIXED_WINDOW, limit=limit, period=period)


def request(check_id: int, key: str, policy: pb.Policy, cost: int = 0) -> pb.CheckStreamRequest:
    return pb.CheckStreamRequest(
        id=check_id, check=pb.CheckRequest(key=key, policy=policy, cost=cost)
    )


async def answers_of(call: Any, count: int) -> dict[int, pb.CheckStreamResponse]:
    """The next `count` answers of `call`, by id (each id once)."""
    answers: dict[int, pb.CheckStreamResponse] = {}
    for _ in range(count):
        answer = await call.read()
        assert answer.id not in answers
        answers[answer.id] = answer
    return answers


@on_redis7_and_cluster
def test_every_check_is_answered_once_matched_by_its_id(
    server: PatternsServer, new_key: Callable[[], str], day: Duration
) -> None:
    """200 checks on 20 keys (limit 5 each) in one go: 200 answers, one per id, whatever
    their order; each key admits exactly 5; then the client ends its half and the stream
    ends OK."""
    keys = [new_key() for _ in range(20)]

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            call = stub.CheckStream(timeout=30)
            for n in range(200):
                await call.write(request(1000 + n, keys[n % 20], fixed(5, day)))
            answers = await answers_of(call, 200)
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
        assert set(answers) == {1000 + n for n in range(200)}
        for k in range(20):
            mine = [answers[1000 + n] for n in range(k, 200, 20)]
            assert all(a.WhichOneof("outcome") == "result" for a in mine)
            assert sum(a.result.allowed for a in mine) == 5
            assert all(a.result.limit == 5 for a in mine)

    asyncio.run(scenario())


@on_redis7_and_cluster
def test_a_bad_check_is_answered_with_its_own_error_and_the_stream_goes_on(
    server: PatternsServer, new_key: Callable[[], str], day: Duration
) -> None:
    key = new_key()

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            call = stub.CheckStream(timeout=30)
            await call.write(request(1, key, fixed(3, day)))
            await call.write(request(2, key, fixed(0, day)))  # limit 0: invalid
            await call.write(request(3, key, fixed(3, day), cost=4))  # beyond the limit
            await call.write(pb.CheckStreamRequest(id=4))  # no check at all
            await call.write(request(5, key, fixed(3, day)))
            answers = await answers_of(call, 5)
            for check_id, field in ((2, "policy.limit"), (3, "cost"), (4, "key")):
                error = answers[check_id].error
                assert answers[check_id].WhichOneof("outcome") == "error"
                assert (error.code, error.reason, error.field) == (
                    grpc.StatusCode.INVALID_ARGUMENT.value[0],
                    "INVALID_ARGUMENT",
                    field,
                )
                assert error.message.startswith(f"{field}: ")
                assert not error.HasField("retry_after")
            assert answers[1].result.allowed and answers[5].result.allowed
            assert answers[1].result.remaining + answers[5].result.remaining == 2 + 1
            await call.write(request(6, key, fixed(3, day)))  # the stream goes on
            sixth = await call.read()
            assert sixth.id == 6 and sixth.result.allowed and sixth.result.remaining == 0
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK

    asyncio.run(scenario())


@on_redis7_and_cluster
def test_the_checks_in_progress_are_answered_after_the_client_ends_its_half(
    server: PatternsServer, new_key: Callable[[], str], day: Duration
) -> None:
    key = new_key()

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            call = stub.CheckStream(timeout=30)
            for n in range(100):
                await call.write(request(n, key, fixed(1000, day)))
            await call.done_writing()
            answers = await answers_of(call, 100)
            assert await call.read() == grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
        assert sorted(a.result.remaining for a in answers.values()) == list(range(900, 1000))

    asyncio.run(scenario())


@on_redis7_and_cluster
def test_sixty_streams_on_one_key_admit_exactly_the_limit(
    server: PatternsServer, new_key: Callable[[], str], day: Duration
) -> None:
    """60 streams, 40 checks each in flight at once, one key of limit 700: exactly 700 of
    the 2,400 admitted, whichever algorithm."""
    algorithms = [
        pb.ALGORITHM_FIXED_WINDOW,
        pb.ALGORITHM_SLIDING_WINDOW_LOG,
        pb.ALGORITHM_SLIDING_WINDOW_COUNTER,
        pb.ALGORITHM_TOKEN_BUCKET,
        pb.ALGORITHM_GCRA,
    ]

    async def one_stream(stub: Stub, key: str, policy: pb.Policy, stream: int) -> int:
        call = stub.CheckStream(timeout=60)
        for n in range(40):
            await call.write(request(stream * 100 + n, key, policy))
        await call.done_writing()
        admitted = 0
        async for answer in call:
            assert answer.WhichOneof("outcome") == "result", answer
            admitted += answer.result.allowed
        assert await call.code() == grpc.StatusCode.OK
        return admitted

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            for algorithm in algorithms:
                # A bucket refills: 700 in about a year, so that none comes back during
                # the test; a whole number of microseconds per unit (45,000 s), so that
                # no rounding of the emission interval adds up over checks of one instant.
                period = day if algorithm not in (4, 5) else Duration(seconds=700 * 45_000)
                policy = pb.Policy(algorithm=algorithm, limit=700, period=period)
                key = new_key()
                counts = await asyncio.gather(
                    *(one_stream(stub, key, policy, stream) for stream in range(60))
                )
                assert sum(counts) == 700, pb.Algorithm.Name(algorithm)

    asyncio.run(scenario())


@on_redis7_and_cluster
def test_a_malformed_message_ends_the_stream_invalid_argument(
    server: PatternsServer, new_key: Callable[[], str], day: Duration
) -> None:
    """A message that is no CheckStreamRequest has no id to answer it by: the stream ends
    INVALID_ARGUMENT (MALFORMED_REQUEST), after the answers already decided."""

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            method = channel.stream_stream(
                CHECK_STREAM,
                request_serializer=lambda data: data,
                response_deserializer=pb.CheckStreamResponse.FromString,
            )
            call = method(timeout=30)
            await call.write(request(1, new_key(), fixed(3, day)).SerializeToString())
            assert (await call.read()).id == 1
            await call.write(b"\x0a\xff")  # a string field whose length runs off the end
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await call.read()
            assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert details(ended.value)["ErrorInfo"].reason == "MALFORMED_REQUEST"

    asyncio.run(scenario())


@on_redis7_and_cluster
def test_a_deadline_ends_the_stream(
    server: PatternsServer, new_key: Callable[[], str], day: Duration
) -> None:
    log_start = len(server.log_lines)

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            call = stub.CheckStream(timeout=0.5)
            await call.write(request(1, new_key(), fixed(3, day)))
            assert (await call.read()).result.allowed
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await call.read()
            assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # The server goes on serving.
            again = stub.CheckStream(timeout=10)
            await again.write(request(2, new_key(), fixed(3, day)))
            assert (await again.read()).result.allowed
            again.cancel()

    asyncio.run(scenario())
    logged = server.log_lines[log_start:]
    assert not [line for line in logged if "Traceback" in line or " ERROR " in line]


@on_redis7_and_cluster
def test_a_stream_cancelled_by_its_client_leaves_the_server_serving(
    server: PatternsServer, new_key: Callable[[], str], day: Duration
) -> None:
    key = new_key()
    log_start = len(server.log_lines)

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            for _ in range(20):
                call = stub.CheckStream(timeout=30)
                for n in range(50):
                    await call.write(request(n, key, fixed(100_000, day)))
                await call.read()
                call.cancel()
            call = stub.CheckStream(timeout=10)
            await call.write(request(1, key, fixed(100_000, day)))
            answer = await call.read()
            assert answer.result.allowed
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF

    asyncio.run(scenario())
    logged = server.log_lines[log_start:]
    assert not [line for line in logged if "Traceback" in line or " ERROR " in line]


def test_shutdown_ends_the_streams_unavailable(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    server = server_on_own_redis("--shutdown-grace", "5")

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            period = Duration(seconds=86400)
            calls = []
            for n in range(10):
                call = stub.CheckStream(timeout=30)
                await call.write(request(n, f"k{n}", fixed(10, period)))
                assert (await call.read()).result.allowed
                calls.append(call)
            assert server.process is not None
            started = time.monotonic()
            server.process.terminate()
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await call.read()
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                assert details(ended.value)["ErrorInfo"].reason == "SHUTTING_DOWN"
            assert time.monotonic() - started < 4  # not held for the grace period

    asyncio.run(scenario())
    assert server.wait() == 0


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_checks_while_redis_is_down_are_answered_each_on_its_own(
    server_on_own_redis: Callable[..., PatternsServer], own_redis: RedisServer, mode: str
) -> None:
    """Closed: each check is answered UNAVAILABLE (REDIS_UNAVAILABLE, with a retry delay)
    and the stream goes on; open: each is admitted."""
    server = server_on_own_redis("--ratelimit-failure-mode", mode)
    period = Duration(seconds=86400)

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            call = stub.CheckStream(timeout=30)
            await call.write(request(1, "k", fixed(10, period)))
            assert (await call.read()).result.allowed
            own_redis.stop()
            for n in range(2, 5):
                await call.write(request(n, "k", fixed(10, period)))
            answers = await answers_of(call, 3)
            for answer in answers.values():
                if mode == "open":
                    assert answer.result.allowed, answer
                else:
                    assert answer.WhichOneof("outcome") == "error", answer
                    assert (answer.error.code, answer.error.reason) == (14, "REDIS_UNAVAILABLE")
                    assert answer.error.retry_after.ToTimedelta() > timedelta(0)
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK

    asyncio.run(scenario())


def test_a_stream_whose_credentials_are_revoked_ends_unauthenticated(
    server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path
) -> None:
    alpha = Tenant("alpha", "alpha", *new_token())
    beta = Tenant("beta", "beta", *new_token())
    auth_file = write_auth_file(tmp_path / "a.toml", [alpha, beta])
    server = server_on_own_redis("--auth-file", str(auth_file))
    period = Duration(seconds=86400)

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            call = stub.CheckStream(metadata=bearer(beta), timeout=30)
            await call.write(request(1, "k", fixed(10, period)))
            assert (await call.read()).result.allowed
            write_auth_file(auth_file, [alpha])
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await call.read()
            assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert details(ended.value)["ErrorInfo"].reason == "CREDENTIALS_REVOKED"

    asyncio.run(scenario())


def test_a_tenant_beyond_its_share_of_streams_is_refused_and_each_has_its_own_keys(
    server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path
) -> None:
    alpha = Tenant("alpha", "alpha", *new_token(), extra=["max_streams = 1"])
    beta = Tenant("beta", "beta", *new_token())
    server = server_on_own_redis(
        "--auth-file", str(write_auth_file(tmp_path / "a.toml", [alpha, beta]))
    )
    period = Duration(seconds=86400)

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            first = stub.CheckStream(metadata=bearer(alpha), timeout=30)
            await first.write(request(1, "k", fixed(1, period)))
            assert (await first.read()).result.allowed
            await first.write(request(2, "k", fixed(1, period)))
            assert not (await first.read()).result.allowed
            second = stub.CheckStream(metadata=bearer(alpha), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await second.read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details(refused.value)["ErrorInfo"].reason == "TENANT_OVERLOADED"
            anonymous = stub.CheckStream(timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                await anonymous.read()
            assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
            other = stub.CheckStream(metadata=bearer(beta), timeout=30)
            await other.write(request(3, "k", fixed(1, period)))
            assert (await other.read()).result.allowed  # its own namespace, its own "k"
            first.cancel()
            other.cancel()

    asyncio.run(scenario())


# The servicer in process, over a limiter that decides when the test says


class HeldLimiter:
    """Decides each batch when `release` is set; counts the batches it was given."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.batches: list[int] = []
        self.started = asyncio.Event()

    async def check_each(self, checks: list[Check], within: float | None = None) -> list[Any]:
        self.batches.append(len(checks))
        self.started.set()
        await self.release.wait()
        return [
            Unavailable("Redis is down", "REDIS_UNAVAILABLE", timedelta(seconds=1))
            if check.key == "down"
            else Decision(True, 10, 9, 1_000, 0)
            for check in checks
        ]


class Context:
    def time_remaining(self) -> float | None:
        return None


async def _feed(queue: "asyncio.Queue[pb.CheckStreamRequest | None]") -> AsyncIterator[Any]:
    while (item := await queue.get()) is not None:
        yield item


def _checks(count: int, key: str = "k", start: int = 0) -> list[pb.CheckStreamRequest]:
    policy = fixed(10, Duration(seconds=60))
    return [request(start + n, key, policy) for n in range(count)]


def test_checks_read_while_a_batch_is_in_flight_go_in_the_next_batch() -> None:
    """1 check, then 63 while it is decided: two batches, not 64; each answered by id;
    a round trip's error (Redis down) answered on the checks it concerns."""

    async def scenario() -> None:
        limiter = HeldLimiter()
        requests: asyncio.Queue[Any] = asyncio.Queue()
        answers = RateLimiterServicer(limiter).CheckStream(_feed(requests), Context())  # type: ignore[arg-type]
        requests.put_nowait(_checks(1)[0])
        first = asyncio.ensure_future(anext(answers))
        await limiter.started.wait()
        for each in _checks(60, start=1) + _checks(3, key="down", start=61):
            requests.put_nowait(each)
        requests.put_nowait(None)  # the client ends its half
        await asyncio.sleep(0.01)
        limiter.release.set()
        got = [await first] + [answer async for answer in answers]
        assert limiter.batches == [1, 63]
        assert sorted(a.id for a in got) == list(range(64))
        down = [a for a in got if a.id >= 61]
        assert {(a.error.code, a.error.reason, a.error.retry_after.seconds) for a in down} == {
            (14, "REDIS_UNAVAILABLE", 1)
        }
        assert all(a.result.remaining == 9 for a in got if a.id < 61)

    asyncio.run(scenario())


def test_beyond_the_checks_in_progress_of_a_stream_a_check_is_answered_overloaded() -> None:
    async def scenario() -> None:
        limiter = HeldLimiter()
        requests: asyncio.Queue[Any] = asyncio.Queue()
        answers = RateLimiterServicer(limiter).CheckStream(_feed(requests), Context())  # type: ignore[arg-type]
        for each in _checks(MAX_IN_PROGRESS + 5):
            requests.put_nowait(each)
        overloaded = [await anext(answers) for _ in range(5)]  # at once: the rest are held
        assert [a.id for a in overloaded] == list(range(MAX_IN_PROGRESS, MAX_IN_PROGRESS + 5))
        assert {(a.error.code, a.error.reason) for a in overloaded} == {(8, "OVERLOADED")}
        assert all(a.error.retry_after.nanos == 250_000_000 for a in overloaded)
        requests.put_nowait(None)
        limiter.release.set()
        rest = [answer async for answer in answers]
        assert len(rest) == MAX_IN_PROGRESS and all(a.result.allowed for a in rest)

    asyncio.run(scenario())


def test_a_cancelled_stream_leaves_no_task_behind() -> None:
    async def scenario() -> None:
        before = asyncio.all_tasks()
        limiter = HeldLimiter()
        requests: asyncio.Queue[Any] = asyncio.Queue()
        answers = RateLimiterServicer(limiter).CheckStream(_feed(requests), Context())  # type: ignore[arg-type]
        for each in _checks(10):
            requests.put_nowait(each)
        waiting = asyncio.ensure_future(anext(answers))
        await limiter.started.wait()  # a batch in flight, the reader waiting for more
        assert len(asyncio.all_tasks() - before) == 3
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert asyncio.all_tasks() - before == set()

    asyncio.run(scenario())


def test_an_answer_may_come_before_those_of_earlier_checks() -> None:
    """A check the servicer finds invalid is answered as soon as it is read, before the
    valid check sent before it, still in Redis."""

    async def scenario() -> None:
        limiter = HeldLimiter()
        requests: asyncio.Queue[Any] = asyncio.Queue()
        answers = RateLimiterServicer(limiter).CheckStream(_feed(requests), Context())  # type: ignore[arg-type]
        requests.put_nowait(_checks(1)[0])
        invalid = Duration(seconds=60, nanos=-1)  # not a Duration: its parts' signs differ
        requests.put_nowait(request(7, "k", fixed(10, invalid)))
        first = await anext(answers)
        assert (first.id, first.error.field) == (7, "policy.period")
        requests.put_nowait(None)
        limiter.release.set()
        assert [(a.id, a.result.allowed) async for a in answers] == [(0, True)]

    asyncio.run(scenario())
