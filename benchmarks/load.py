"""Load generation, run in processes of their own: closed-loop grpc.aio clients, or the
direct redis-py baseline. Each worker reports the latencies of the calls it completed
inside the measured window [start, end] (time.monotonic, which all processes share)."""

import asyncio
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import uvloop
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as envoy_common
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from patterns.cache.v1 import cache_pb2, cache_pb2_grpc
from patterns.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc
from patterns.session.v1 import session_pb2, session_pb2_grpc
from patterns.streams.v1 import streams_pb2, streams_pb2_grpc

USERS = 10_000
# A policy that admits most traffic spread over USERS keys: the work of a decision, not
# of refusals, is what is measured.
T = TypeVar("T")
POLICY = pb.Policy(algorithm=pb.ALGORITHM_GCRA, limit=1_000, period=Duration(seconds=1))
# A policy that refuses: one unit per hour on each of a few keys, so that after the first
# calls (the warm-up) every check is refused, and the cost of a refusal is what is measured.
REFUSING_POLICY = pb.Policy(
    algorithm=pb.ALGORITHM_FIXED_WINDOW, limit=1, period=Duration(seconds=3_600)
)
REFUSED_KEYS = 100
# The domain of the envoy scenario's configuration (benchmarks/bench.py's ENVOY_CONFIG).
ENVOY_DOMAIN = "bench"
BATCH = 100
# The checkstream scenario carries each worker's checks in flight over this many streams.
STREAMS_PER_WORKER = 2
VALUE = bytes(1024)  # cache values of 1 KiB
BOARD, BOARD_SIZE = "bench", 1_000_000  # a leaderboard of a million members
CACHE_TTL = Duration(seconds=3_600)
SESSION_USERS = 1_000  # USERS sessions, 10 per user
# The file of the session ids of the session- scenarios (created by the bench beforehand),
# named by an environment variable that the worker processes inherit.
SESSION_IDS_FILE = "PATTERNS_BENCH_SESSION_IDS"
# Streams: appends spread over this many streams, of PAYLOAD each; the streams-consume
# scenario reads CONSUME_STREAM (filled beforehand with CONSUME_FILL entries) in a group of
# its own per run, over CONSUMERS_PER_WORKER Consume streams per worker process.
APPEND_STREAMS = 100
PAYLOAD = bytes(100)
CONSUME_STREAM = "bench-consume"
CONSUME_FILL = 300_000
CONSUMERS_PER_WORKER = 4


@dataclass
class Window:
    start: float
    end: float


@dataclass
class WorkerResult:
    latencies_ns: list[int]
    decisions_per_call: int


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop, as the server does: clients as cheap as Python clients get."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def pin(cores: set[int] | None) -> None:
    if cores:
        os.sched_setaffinity(0, cores)


def _requests_for(scenario: str) -> tuple[list[object], int]:
    if scenario in ("noop", "noop-single"):
        return [health_pb2.HealthCheckRequest()], 0
    keys = [f"user:{n}" for n in range(USERS)]
    random.shuffle(keys)
    if scenario in ("check", "check-single"):
        return [pb.CheckRequest(key=key, policy=POLICY) for key in keys], 1
    if scenario == "check-refused":
        refused = [f"refused:{n}" for n in range(REFUSED_KEYS)]
        return [pb.CheckRequest(key=key, policy=REFUSING_POLICY) for key in refused], 1
    if scenario == "envoy":
        return [
            rls_pb2.RateLimitRequest(
                domain=ENVOY_DOMAIN,
                descriptors=[
                    envoy_common.RateLimitDescriptor(
                        entries=[envoy_common.RateLimitDescriptor.Entry(key="user", value=key)]
                    )
                ],
            )
            for key in keys
        ], 1
    if scenario == "checkstream":  # each its own id, unique among the checks in flight
        return [
            pb.CheckStreamRequest(id=n, check=pb.CheckRequest(key=key, policy=POLICY))
            for n, key in enumerate(keys)
        ], 1
    if scenario == "checkmany":
        checks = [pb.CheckRequest(key=key, policy=POLICY) for key in keys]
        return [
            pb.CheckManyRequest(checks=checks[i : i + BATCH]) for i in range(0, USERS, BATCH)
        ], BATCH
    if scenario == "lb-submit":
        best = leaderboard_pb2.MODE_BEST
        return [
            leaderboard_pb2.SubmitRequest(
                board=BOARD,
                member=f"player:{random.randrange(BOARD_SIZE)}",
                score=random.randrange(1_000_000),
                mode=best,
            )
            for _ in range(USERS)
        ], 1
    if scenario == "lb-top":
        return [leaderboard_pb2.TopRequest(board=BOARD, limit=10)], 1
    if scenario == "cache-get":
        return [cache_pb2.GetRequest(key=key) for key in keys], 1
    if scenario == "session-touch":
        ids = Path(os.environ[SESSION_IDS_FILE]).read_text().split()
        random.shuffle(ids)
        return [session_pb2.GetRequest(id=i, touch=True) for i in ids], 1
    if scenario == "cache-set":
        return [cache_pb2.SetRequest(key=key, value=VALUE, ttl=CACHE_TTL) for key in keys], 1
    if scenario == "streams-append":
        return [
            streams_pb2.AppendRequest(stream=f"bench-append:{n % APPEND_STREAMS}", payload=PAYLOAD)
            for n in range(USERS)
        ], 1
    if scenario == "streams-consume":
        return [], 1
    raise ValueError(scenario)


def _method(channel: grpc.aio.Channel, scenario: str) -> Callable[..., Awaitable[object]]:
    if scenario in ("noop", "noop-single"):
        return health_pb2_grpc.HealthStub(channel).Check  # type: ignore[no-any-return]
    if scenario.startswith("lb-"):
        board = leaderboard_pb2_grpc.LeaderboardStub(channel)
        return board.Submit if scenario == "lb-submit" else board.Top  # type: ignore[no-any-return]
    if scenario == "envoy":
        return rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit  # type: ignore[no-any-return]
    if scenario.startswith("session-"):
        return session_pb2_grpc.SessionsStub(channel).Get  # type: ignore[no-any-return]
    if scenario == "streams-append":
        return streams_pb2_grpc.StreamsStub(channel).Append  # type: ignore[no-any-return]
    if scenario.startswith("cache-"):
        cache = cache_pb2_grpc.CacheStub(channel)
        return cache.Get if scenario == "cache-get" else cache.Set  # type: ignore[no-any-return]
    stub = ratelimit_pb2_grpc.RateLimiterStub(channel)
    return stub.CheckMany if scenario == "checkmany" else stub.Check  # type: ignore[no-any-return]


def create_sessions(address: str, path: Path) -> None:
    """The sessions of the session- scenarios: USERS of them, 10 per user, created through
    the server; their ids go to `path`, for the workers."""

    async def main() -> list[str]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = session_pb2_grpc.SessionsStub(channel)
            ids: list[str] = []
            for start in range(0, USERS, 500):
                requests = [
                    session_pb2.CreateRequest(
                        user_id=f"user:{n % SESSION_USERS}",
                        ttl=Duration(seconds=86_400),
                        attributes={"ip": "203.0.113.7", "agent": "bench"},
                    )
                    for n in range(start, start + 500)
                ]
                replies = await asyncio.gather(*(stub.Create(r, timeout=30) for r in requests))
                ids += [reply.session.id for reply in replies]
            return ids

    path.write_text("\n".join(run_on_uvloop(main())))


VARIANT_SUFFIXES = ("-auth", "-metrics")


def run_grpc_worker(
    address: str,
    scenario: str,
    in_flight: int,
    window: Window,
    cores: set[int] | None,
    api_key: str = "",
) -> WorkerResult:
    """Calls of `scenario`, `in_flight` at once; with `api_key`, each carries it."""
    pin(cores)
    plain = scenario.split("-")[0] if scenario.endswith(VARIANT_SUFFIXES) else scenario
    requests, decisions = _requests_for(plain)
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None

    if plain == "checkstream":
        return WorkerResult(
            run_on_uvloop(_stream_checks(address, requests, in_flight, window, metadata)),
            decisions,
        )
    if plain == "streams-consume":
        return WorkerResult(run_on_uvloop(_consume(address, in_flight, window)), decisions)

    async def main() -> list[int]:
        latencies: list[int] = []
        async with grpc.aio.insecure_channel(address) as channel:
            method = _method(channel, plain)

            def call(request: object) -> Awaitable[object]:
                return method(request, metadata=metadata)

            async def client(offset: int) -> None:
                i = offset
                while time.monotonic() < window.end:
                    request = requests[i % len(requests)]
                    i += 1
                    started = time.perf_counter_ns()
                    await call(request)
                    if window.start <= time.monotonic() <= window.end:
                        latencies.append(time.perf_counter_ns() - started)

            step = max(1, len(requests) // in_flight)
            await asyncio.gather(*(client(n * step) for n in range(in_flight)))
        return latencies

    return WorkerResult(run_on_uvloop(main()), decisions)


async def _consume(address: str, in_flight: int, window: Window) -> list[int]:
    """Deliveries of CONSUME_STREAM, each acknowledged as it arrives, `in_flight` at once
    (each Consume stream's max_in_flight is its share), in a group of this run's own that
    starts at the stream's first entry (every worker of the run derives the same name from
    the window). A delivery's latency: from the ack that made room for it to its arrival,
    the server's turnaround for one delivery+ack."""
    latencies: list[int] = []
    streams = min(CONSUMERS_PER_WORKER, in_flight)
    group = f"bench-{window.start:.6f}"

    async def consumer(stub: streams_pb2_grpc.StreamsStub, number: int, depth: int) -> None:
        call = stub.Consume()
        opening = streams_pb2.ConsumeOpen(
            stream=CONSUME_STREAM,
            group=group,
            consumer=f"{os.getpid()}-{number}",
            start=streams_pb2.START_POSITION_EARLIEST,
            max_in_flight=depth,
            ack_timeout=Duration(seconds=600),
        )
        await call.write(streams_pb2.ConsumeRequest(open=opening))
        acked: deque[int] = deque()  # when each ack not yet followed by a delivery was sent
        async for message in call:
            if not message.HasField("delivery"):
                continue
            arrived = time.perf_counter_ns()
            if acked:
                started = acked.popleft()
                if window.start <= time.monotonic() <= window.end:
                    latencies.append(arrived - started)
            if time.monotonic() > window.end:
                break
            acked.append(time.perf_counter_ns())
            await call.write(
                streams_pb2.ConsumeRequest(ack=streams_pb2.Ack(ids=[message.delivery.id]))
            )
        call.cancel()

    async with grpc.aio.insecure_channel(address) as channel:
        stub = streams_pb2_grpc.StreamsStub(channel)
        depths = [in_flight // streams + (n < in_flight % streams) for n in range(streams)]
        await asyncio.gather(*(consumer(stub, n, depth) for n, depth in enumerate(depths)))
    return latencies


async def _stream_checks(
    address: str,
    requests: list[Any],
    in_flight: int,
    window: Window,
    metadata: tuple[tuple[str, str], ...] | None,
) -> list[int]:
    """`in_flight` checks at once, one per message, over STREAMS_PER_WORKER CheckStreams:
    each stream sends a check as soon as one of its own is answered (closed loop, as the
    unary clients). The latency of each check: from its write to its answer."""
    latencies: list[int] = []
    streams = min(STREAMS_PER_WORKER, in_flight)

    async def stream(number: int, depth: int) -> None:
        call = ratelimit_pb2_grpc.RateLimiterStub(channel).CheckStream(metadata=metadata)
        sent: dict[int, int] = {}
        credit = asyncio.Semaphore(depth)

        async def write() -> None:
            i = number * len(requests) // streams
            while time.monotonic() < window.end:
                await credit.acquire()
                request = requests[i % len(requests)]
                i += 1
                sent[request.id] = time.perf_counter_ns()
                await call.write(request)
            await call.done_writing()

        async def read() -> None:
            async for answer in call:
                started = sent.pop(answer.id)
                credit.release()
                if window.start <= time.monotonic() <= window.end:
                    latencies.append(time.perf_counter_ns() - started)

        await asyncio.gather(write(), read())

    async with grpc.aio.insecure_channel(address) as channel:
        depths = [in_flight // streams + (n < in_flight % streams) for n in range(streams)]
        await asyncio.gather(*(stream(n, depth) for n, depth in enumerate(depths)))
    return latencies


def run_direct_worker(
    redis_url: str,
    scenario: str,
    script_source: str,
    in_flight: int,
    window: Window,
    cores: set[int] | None,
) -> WorkerResult:
    """What a team does without the service, from redis-py asyncio, `in_flight` coroutines
    in one Python process: the same Lua decision, one EVALSHA per decision ("direct"), or
    a plain GET or SET of a 1 KiB value ("direct-get", "direct-set")."""
    pin(cores)
    from redis.asyncio import Redis

    period_us = POLICY.period.seconds * 1_000_000

    async def main() -> list[int]:
        latencies: list[int] = []
        client = Redis.from_url(redis_url, max_connections=in_flight)
        script = client.register_script(script_source)

        async def decide(number: int) -> None:
            key = f"patterns:default:ratelimit:{{user:{number}}}:direct"
            await script(
                keys=[key], args=["0", "gcra", POLICY.limit, period_us, POLICY.limit, 1, 0]
            )

        async def read(number: int) -> None:
            await client.get(f"direct:cache:{number}")

        async def write(number: int) -> None:
            await client.set(f"direct:cache:{number}", VALUE, ex=3_600)

        call = {"direct": decide, "direct-get": read, "direct-set": write}[scenario]

        async def worker(offset: int) -> None:
            i = offset
            while time.monotonic() < window.end:
                i += 1
                started = time.perf_counter_ns()
                await call(i % USERS)
                if window.start <= time.monotonic() <= window.end:
                    latencies.append(time.perf_counter_ns() - started)

        await asyncio.gather(*(worker(n * 97) for n in range(in_flight)))
        await client.aclose()
        return latencies

    return WorkerResult(run_on_uvloop(main()), 1)


# A channel of its own connection: the channels of one process otherwise share one.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def run_grpc_worker_over_connections(
    address: str,
    scenario: str,
    in_flight: int,
    window: Window,
    cores: set[int] | None,
    connections: int,
) -> WorkerResult:
    """As `run_grpc_worker`, over `connections` connections (their calls in flight shared
    out): the kernel gives each connection to one of a server's `--workers`."""
    pin(cores)
    plain = scenario.split("-")[0]
    requests, decisions = _requests_for(plain)

    async def main() -> list[int]:
        latencies: list[int] = []
        channels = [
            grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(connections)
        ]
        methods = [_method(channel, plain) for channel in channels]

        async def client(number: int, offset: int) -> None:
            method = methods[number % len(methods)]
            i = offset
            while time.monotonic() < window.end:
                request = requests[i % len(requests)]
                i += 1
                started = time.perf_counter_ns()
                await method(request)
                if window.start <= time.monotonic() <= window.end:
                    latencies.append(time.perf_counter_ns() - started)

        step = max(1, len(requests) // in_flight)
        try:
            await asyncio.gather(*(client(n, n * step) for n in range(in_flight)))
        finally:
            for channel in channels:
                await channel.close()
        return latencies

    return WorkerResult(run_on_uvloop(main()), decisions)
