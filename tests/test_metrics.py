"""Prometheus metrics, scraped over HTTP after a known workload: the exact counts of calls,
decisions, cache lookups, lock grants, streams and refusals, on Redis 7 and the Cluster."""

import asyncio
import re
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.cache.v1 import cache_pb2, cache_pb2_grpc
from patterns.events.v1 import events_pb2, events_pb2_grpc
from patterns.lock.v1 import lock_pb2, lock_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from devtools.processes import PatternsServer
from tests.rpc import rpc_error
from tests.waiting import eventually, eventually_async
from tests.windows import Windows

on_redis7_and_cluster = pytest.mark.parametrize("backend_url", ["redis7", "cluster"], indirect=True)
MINUTE = Duration(seconds=60)
SUBSCRIBE = {"service": "patterns.events.v1.Events", "method": "Subscribe"}


class Scrape:
    """One scrape of /metrics: the value of a sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


@pytest.fixture
def metered(backend_url: str) -> Iterator[tuple[PatternsServer, Callable[[], Scrape]]]:
    """A server of this test's own (its counts start at zero) with metrics on, and a
    scraper of its /metrics."""
    server = PatternsServer(
        backend_url, "--metrics-listen", "127.0.0.1:0", "--max-streams", "2", "--events-buffer", "4"
    ).start()
    server.wait_for_log("metrics on http://")
    match = re.search(r"metrics on http://([\d.]+:\d+)/metrics", server.log)
    assert match
    url = f"http://{match.group(1)}/metrics"

    def scrape() -> Scrape:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return Scrape(response.read().decode())

    yield server, scrape
    server.stop()


@on_redis7_and_cluster
def test_a_known_workload_reads_back_exactly(
    metered: tuple[PatternsServer, Callable[[], Scrape]],
    new_key: Callable[[], str],
    windows: Windows,
) -> None:
    server, scrape = metered
    with grpc.insecure_channel(server.address) as channel:
        limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
        policy = ratelimit_pb2.Policy(
            algorithm=ratelimit_pb2.ALGORITHM_FIXED_WINDOW,
            limit=7,
            period=windows.calm(timedelta(days=1)),
        )
        check = ratelimit_pb2.CheckRequest(key=new_key(), policy=policy)
        allowed = [limiter.Check(check, timeout=10).allowed for _ in range(10)]
        assert allowed == [True] * 7 + [False] * 3
        bad = ratelimit_pb2.CheckRequest(key="", policy=policy)
        assert rpc_error(lambda: limiter.Check(bad, timeout=10)).code() == (
            grpc.StatusCode.INVALID_ARGUMENT
        )

        cache = cache_pb2_grpc.CacheStub(channel)
        key = new_key()
        cache.Set(cache_pb2.SetRequest(key=key, value=b"v", ttl=MINUTE), timeout=10)
        for _ in range(2):
            assert cache.Get(cache_pb2.GetRequest(key=key), timeout=10).found
        assert not cache.Get(cache_pb2.GetRequest(key=new_key()), timeout=10).found
        cold = cache_pb2.GetOrLeaseRequest(key=new_key(), lease_ttl=MINUTE)
        lease = cache.GetOrLease(cold, timeout=10).lease
        assert cache.GetOrLease(cold, timeout=10).HasField("pending")
        cache.Delete(cache_pb2.DeleteRequest(keys=[cold.key]), timeout=10)  # ends the lease
        stale = cache_pb2.SetRequest(key=cold.key, value=b"v", ttl=MINUTE, lease_token=lease.token)
        assert not cache.Set(stale, timeout=10).stored

        locker = lock_pb2_grpc.LockerStub(channel)
        name = new_key()
        held = locker.Acquire(lock_pb2.AcquireRequest(name=name, ttl=MINUTE), timeout=10)
        waiting = locker.Acquire.future(
            lock_pb2.AcquireRequest(name=name, ttl=MINUTE, wait_timeout=MINUTE), timeout=30
        )
        eventually(lambda: scrape()("patterns_lock_waits_total") == 1)
        locker.Release(lock_pb2.ReleaseRequest(name=name, token=held.token), timeout=10)
        assert waiting.result().acquired

    before = scrape()
    _streams(server, new_key(), scrape)
    eventually(lambda: scrape()("patterns_streams_open", **SUBSCRIBE) == 0)

    got = scrape()
    assert (
        got("patterns_ratelimit_decisions_total", algorithm="fixed_window", outcome="allowed") == 7
    )
    assert (
        got("patterns_ratelimit_decisions_total", algorithm="fixed_window", outcome="refused") == 3
    )
    check_calls = {"service": "patterns.ratelimit.v1.RateLimiter", "method": "Check"}
    assert got("patterns_rpcs_total", **check_calls, code="OK", tenant="default") == 10
    assert got("patterns_rpcs_total", **check_calls, code="INVALID_ARGUMENT", tenant="default") == 1
    assert got("patterns_rpc_duration_seconds_count", **check_calls) == 11
    assert got("patterns_cache_lookups_total", result="hit") == 2
    assert got("patterns_cache_lookups_total", result="miss") == 3  # a Get, two GetOrLease
    assert got("patterns_cache_fill_leases_total", outcome="granted") == 1
    assert got("patterns_cache_fill_leases_total", outcome="pending") == 1
    assert got("patterns_cache_fills_refused_total") == 1
    assert got("patterns_lock_grants_total", waited="false") == 1
    assert got("patterns_lock_grants_total", waited="true") == 1
    assert got("patterns_lock_waits_total") == 1
    assert before("patterns_events_deliveries_total") == 0
    assert got("patterns_events_slow_consumers_total") == 1
    assert got("patterns_events_deliveries_total") >= 3  # the reader's, and the slow one's
    assert got("patterns_rpcs_total", **SUBSCRIBE, code="CANCELLED", tenant="default") == 2
    # The slow one, and the one refused at the limit.
    assert got("patterns_rpcs_total", **SUBSCRIBE, code="RESOURCE_EXHAUSTED", tenant="default") == 2
    assert got("patterns_admission_refusals_total", reason="OVERLOADED", tenant="default") == 1
    assert got("process_resident_memory_bytes") > 0
    assert got("patterns_streams_open", **SUBSCRIBE) == 0
    assert got("patterns_redis_up") == 1
    assert got("patterns_redis_round_trip_seconds_count") >= 20
    assert got("patterns_redis_batch_commands_sum") >= got(
        "patterns_redis_round_trip_seconds_count"
    )
    build = [k for k in got.samples if k[0] == "patterns_build_info"]
    assert len(build) == 1 and dict(build[0][1])["version"]


def _streams(server: PatternsServer, channel_name: str, scrape: Callable[[], Scrape]) -> None:
    """Three events read by a subscriber; with it and a second stream open (--max-streams
    2), a third refused OVERLOADED; then the second ended SLOW_CONSUMER: it reads nothing
    while large events fill gRPC's flow-control window and its buffer of 4."""

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            events = events_pb2_grpc.EventsStub(channel)
            request = events_pb2.SubscribeRequest(channels=[channel_name])
            reader = events.Subscribe(request, timeout=30)
            assert (await reader.read()).WhichOneof("kind") == "subscribed"
            for n in range(3):
                publish = events_pb2.PublishRequest(channel=channel_name, payload=b"%d" % n)
                await events.Publish(publish, timeout=10)
                assert (await reader.read()).event.payload == b"%d" % n
            reader.cancel()
            await eventually_async(lambda: scrape()("patterns_streams_open", **SUBSCRIBE) == 0)
            assert scrape()("patterns_events_deliveries_total") == 3
            slow = events.Subscribe(request, timeout=30)
            assert (await slow.read()).WhichOneof("kind") == "subscribed"
            other = events.Subscribe(events_pb2.SubscribeRequest(channels=["quiet"]), timeout=30)
            assert (await other.read()).WhichOneof("kind") == "subscribed"
            third = events.Subscribe(request, timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await third.read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            large = bytes(32_768)
            for _ in range(200):
                await events.Publish(
                    events_pb2.PublishRequest(channel=channel_name, payload=large), timeout=10
                )
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:  # what gRPC and the buffer held, then the end
                    await slow.read()
            assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            other.cancel()

    asyncio.run(scenario())


def test_without_metrics_listen_nothing_is_served(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    server = server_on_own_redis("--log-level", "debug")
    with grpc.insecure_channel(server.address) as channel:
        locker = lock_pb2_grpc.LockerStub(channel)
        locker.Inspect(lock_pb2.InspectRequest(name="x"), timeout=10)
    assert "metrics on" not in server.log
