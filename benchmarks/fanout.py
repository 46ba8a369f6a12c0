"""The Events fan-out scenario: one publisher, many subscriber streams on one server.

Subscribers run in processes of their own (beside Redis, on the client cores); each opens
its share of the streams on one channel, says when all are subscribed, and records the
publish-to-receive latency of every message published inside the measured window (the
publisher writes its clock into the payload: all processes share the machine's clock).
The publisher, in the calling process, publishes at a fixed rate, each message when due.
Subscribers ask for batches unless told not to, and report their own CPU time: when their
CPU per delivery is above the server's, the subscribers' core is what saturates first.
"""

import asyncio
import contextlib
import multiprocessing
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import grpc
import redis.asyncio
from patterns.events.v1 import events_pb2 as pb
from patterns.events.v1 import events_pb2_grpc

from benchmarks.load import pin, run_on_uvloop
from devtools.procfs import cpu_seconds, memory_bytes

CHANNEL = "fanout"
# Its Redis channel, as the server names it (KeySpace.channel: default prefix, namespace).
REDIS_CHANNEL = f"patterns:default:events:{CHANNEL}"
PADDING = bytes(92)  # payloads of 100 bytes: a timestamp and padding


@dataclass
class FanoutResult:
    rate: int
    streams: int
    published: int
    delivered: int
    seconds: float
    latencies_ns: list[int]
    server_cpu_seconds: float
    memory_per_stream: float  # bytes of server RSS per idle stream
    batch: bool  # the subscribers asked for batches
    messages: int  # the gRPC messages that carried the deliveries (fewer when batched)
    ended_streams: int  # streams the server ended early (SLOW_CONSUMER)
    client_cpu_seconds: float  # of the subscriber processes, over the same time as the server's
    publish_failures: int  # Publish calls that failed UNAVAILABLE (not in `published`)

    @property
    def deliveries_per_second(self) -> float:
        return self.delivered / self.seconds

    @property
    def delivered_share(self) -> float:
        expected = self.published * self.streams
        return self.delivered / expected if expected else 0.0


def run_subscribers(
    address: str,
    streams: int,
    ready: Any,
    window: tuple[float, float],
    cores: set[int] | None,
    batch: bool,
    settle: float,
) -> tuple[int, int, list[int], int, float]:
    """Open `streams` streams (asking for batches if `batch`), report ready, then count the
    events sent inside `window` (time.time() bounds), the gRPC messages that carried them,
    their latencies, the streams that ended early (SLOW_CONSUMER), and the CPU seconds this
    process spent from the window's start to its end (and the settling time after it)."""
    pin(cores)
    start, end = window

    async def main() -> tuple[int, int, list[int], int, float]:
        latencies: list[int] = []
        delivered = messages = 0
        async with grpc.aio.insecure_channel(address) as channel:
            stub = events_pb2_grpc.EventsStub(channel)
            request = pb.SubscribeRequest(channels=[CHANNEL], batch=batch)
            calls = [stub.Subscribe(request) for _ in range(streams)]
            for call in calls:
                await call.read()  # subscribed
            ready.put(streams)

            async def read(call: grpc.aio.UnaryStreamCall) -> None:
                nonlocal delivered, messages
                while (response := await call.read()) is not grpc.aio.EOF:
                    received = time.time()
                    # A server older than SubscribeRequest.batch sends `event` messages.
                    events = response.batch.events or (response.event,)
                    counted = 0
                    for event in events:
                        (sent,) = struct.unpack_from("d", event.payload)
                        if start <= sent <= end:
                            counted += 1
                            latencies.append(int((received - sent) * 1e9))
                    delivered += counted
                    messages += counted > 0

            readers = [asyncio.create_task(read(call)) for call in calls]
            await asyncio.sleep(max(0.0, start - time.time()))
            cpu_before = time.process_time()
            await asyncio.sleep(max(0.0, end + settle - time.time()))
            cpu_used = time.process_time() - cpu_before
            for call in calls:
                call.cancel()
            outcomes = await asyncio.gather(*readers, return_exceptions=True)
        ended = sum(
            isinstance(outcome, grpc.aio.AioRpcError)
            and outcome.code() != grpc.StatusCode.CANCELLED
            for outcome in outcomes
        )
        return delivered, messages, latencies, ended, cpu_used

    return run_on_uvloop(main())


def run_fanout(
    address: str,
    server_pid: int,
    streams: int,
    rate: int,
    seconds: float,
    client_processes: int,
    client_cores: set[int] | None,
    batch: bool = True,
    settle: float = 1.0,
    redis_url: str | None = None,
) -> FanoutResult:
    """`streams` subscribers, one publisher at `rate` messages/s for `seconds`; the
    subscribers ask for batches (SubscribeRequest.batch) when `batch`; what arrives later
    than `settle` seconds after the window is not delivered. With `redis_url`, the
    publisher PUBLISHes to Redis itself, as the Publish calls of other server processes
    would, instead of calling this server's Publish."""
    context = multiprocessing.get_context("spawn")
    per_process = max(1, streams // client_processes)
    streams = per_process * client_processes
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(client_processes, mp_context=context) as pool,
    ):
        ready = manager.Queue()
        memory_before = memory_bytes(server_pid)
        # The window opens once every stream is subscribed (10 s at most to get there).
        start = time.time() + 10.0
        window = (start, start + seconds)
        futures = [
            pool.submit(
                run_subscribers, address, per_process, ready, window, client_cores, batch, settle
            )
            for _ in range(client_processes)
        ]
        opened = sum(ready.get(timeout=60) for _ in range(client_processes))
        assert opened == streams
        memory_per_stream = (memory_bytes(server_pid) - memory_before) / streams
        time.sleep(max(0.0, start - time.time()))
        cpu_before = cpu_seconds(server_pid)
        publisher = _publish_to_redis(redis_url) if redis_url else _publish_to_server(address)
        published, publish_failures = run_on_uvloop(_publish(publisher, rate, window))
        time.sleep(max(0.0, window[1] + settle - time.time()))  # the last deliveries
        cpu_used = cpu_seconds(server_pid) - cpu_before
        results = [future.result() for future in futures]
    return FanoutResult(
        rate,
        streams,
        published,
        sum(result[0] for result in results),
        seconds,
        sorted(ns for result in results for ns in result[2]),
        cpu_used,
        memory_per_stream,
        batch,
        sum(result[1] for result in results),
        sum(result[3] for result in results),
        sum(result[4] for result in results),
        publish_failures,
    )


Publisher = Callable[[], AbstractAsyncContextManager[Callable[[bytes], Awaitable[None]]]]


async def _publish(publisher: Publisher, rate: int, window: tuple[float, float]) -> tuple[int, int]:
    """Publish `rate` messages a second, on schedule, through the window; how many were
    published, and how many failed UNAVAILABLE (Redis slow to answer on a loaded machine:
    counted rather than ending the run). Each is sent when due, without waiting for the
    one before to be answered: a busy server answers a Publish late, and a publisher that
    waited would slow down with it, measuring less than the rate asked for."""
    start, end = window
    async with publisher() as send:

        async def publish() -> bool:
            try:
                await send(struct.pack("d", time.time()) + PADDING)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return False
            return True

        calls: list[asyncio.Task[bool]] = []
        while (due := start + len(calls) / rate) < end:
            await asyncio.sleep(max(0.0, due - time.time()))
            calls.append(asyncio.create_task(publish()))
        published = sum(await asyncio.gather(*calls))
    return published, len(calls) - published


def _publish_to_server(address: str) -> Publisher:
    """Publish calls to the server under test. It accepts one new call per turn of its
    event loop, so while it fans out, publishers wait for it."""

    @contextlib.asynccontextmanager
    async def publisher() -> AsyncIterator[Callable[[bytes], Awaitable[None]]]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = events_pb2_grpc.EventsStub(channel)

            async def send(payload: bytes) -> None:
                await stub.Publish(pb.PublishRequest(channel=CHANNEL, payload=payload))

            yield send

    return publisher


def _publish_to_redis(url: str) -> Publisher:
    """PUBLISH to Redis directly: what other server processes do for their callers."""

    @contextlib.asynccontextmanager
    async def publisher() -> AsyncIterator[Callable[[bytes], Awaitable[None]]]:
        client = redis.asyncio.Redis.from_url(url)
        try:

            async def send(payload: bytes) -> None:
                await client.publish(REDIS_CHANNEL, payload)

            yield send
        finally:
            await client.aclose()

    return publisher
