"""Rate-limit checks through the Python client (patterns_client), as a web app makes
them: one process, `in_flight` checks at once, from tasks of one event loop (the aio
client) or from as many threads (the blocking client), each check a unary Check or a
message of the client's shared CheckStream (`stream_checks`). Runs in a process of its own,
like the workers of `benchmarks/load.py`, and reports the same WorkerResult.

  client-check              aio client, unary Checks
  client-checkstream        aio client, over one CheckStream
  client-sync-check         blocking client from `in_flight` threads, unary Checks
  client-sync-checkstream   blocking client from `in_flight` threads, over one CheckStream
"""

import asyncio
import random
import threading
import time
from datetime import timedelta

from benchmarks.load import USERS, Window, WorkerResult, pin, run_on_uvloop
from patterns_client import Client, PatternsError, Policy, aio

SCENARIOS = ("client-check", "client-checkstream", "client-sync-check", "client-sync-checkstream")
# As benchmarks/load.py's POLICY: admits most traffic spread over USERS keys.
POLICY = Policy.gcra(1_000, timedelta(seconds=1))


def run_client_worker(
    address: str, scenario: str, in_flight: int, window: Window, cores: set[int] | None
) -> WorkerResult:
    """Checks of `scenario`, `in_flight` at once, until the window ends; the latency of
    each one completed inside it."""
    pin(cores)
    keys = [f"user:{n}" for n in range(USERS)]
    random.shuffle(keys)
    streamed = scenario.endswith("checkstream")
    if scenario.startswith("client-sync-"):
        return WorkerResult(_threads(address, streamed, keys, in_flight, window), 1)
    return WorkerResult(run_on_uvloop(_tasks(address, streamed, keys, in_flight, window)), 1)


async def _tasks(
    address: str, streamed: bool, keys: list[str], in_flight: int, window: Window
) -> list[int]:
    latencies: list[int] = []
    async with aio.Client(address, stream_checks=streamed) as client:
        check = client.ratelimit.check

        async def user(offset: int) -> None:
            i = offset
            while time.monotonic() < window.end:
                key = keys[i % len(keys)]
                i += 1
                started = time.perf_counter_ns()
                try:
                    await check(key, POLICY)
                except PatternsError:  # a busy machine's REDIS_TIMEOUT: not a decision
                    continue
                if window.start <= time.monotonic() <= window.end:
                    latencies.append(time.perf_counter_ns() - started)

        step = max(1, len(keys) // in_flight)
        await asyncio.gather(*(user(n * step) for n in range(in_flight)))
    return latencies


def _threads(
    address: str, streamed: bool, keys: list[str], in_flight: int, window: Window
) -> list[int]:
    latencies: list[int] = []  # list.append is atomic: no lock needed
    with Client(address, stream_checks=streamed) as client:
        check = client.ratelimit.check

        def user(offset: int) -> None:
            i = offset
            while time.monotonic() < window.end:
                key = keys[i % len(keys)]
                i += 1
                started = time.perf_counter_ns()
                try:
                    check(key, POLICY)
                except PatternsError:  # a busy machine's REDIS_TIMEOUT: not a decision
                    continue
                if window.start <= time.monotonic() <= window.end:
                    latencies.append(time.perf_counter_ns() - started)

        step = max(1, len(keys) // in_flight)
        threads = [threading.Thread(target=user, args=(n * step,)) for n in range(in_flight)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return latencies
