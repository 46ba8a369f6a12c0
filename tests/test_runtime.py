"""The server runtime: health, reflection, errors, deadlines, Redis failures, shutdown."""

import asyncio
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from patterns.counter.v1 import counter_pb2 as pb
from patterns.counter.v1 import counter_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from patterns_server.app import SERVICES, start
from patterns_server.core.settings import Settings
from patterns_server.rpc.service import Runtime, Service
from patterns_server.storage import RedisBackend
from tests.rpc import assert_unavailable, details, rpc_error
from tests.waiting import eventually

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def served_names() -> set[str]:
    """The names of the services in app.SERVICES (building one connects nothing)."""
    redis = RedisBackend.from_url("redis://127.0.0.1:1", prefix="p", timeout=1, batch_wait=0)
    runtime = Runtime(redis, Settings())
    return {build(runtime).name for build in SERVICES}


def test_every_service_of_the_product_is_served() -> None:
    assert served_names() >= {
        "patterns.counter.v1.UniqueCounter",
        "patterns.ratelimit.v1.RateLimiter",
    }


@pytest.fixture
def own_server(server_on_own_redis: Callable[..., PatternsServer]) -> PatternsServer:
    return server_on_own_redis("--redis-timeout", "1", "--shutdown-grace", "5")


def health_of(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for_health(channel: grpc.Channel, wanted: int) -> None:
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)
    eventually(lambda: health_of(channel) == wanted, what=f"health {status}")


def add(channel: grpc.Channel, key: str, item: str = "x", timeout: float = 10) -> bool:
    stub = counter_pb2_grpc.UniqueCounterStub(channel)
    return stub.Add(pb.AddRequest(key=key, items=[item]), timeout=timeout).changed


def count(channel: grpc.Channel, key: str) -> int:
    stub = counter_pb2_grpc.UniqueCounterStub(channel)
    return stub.Count(pb.CountRequest(keys=[key]), timeout=10).count


def test_health_is_serving_for_every_service(channel: grpc.Channel) -> None:
    wait_for_health(channel, SERVING)
    for service in served_names():
        assert health_of(channel, service) == SERVING


def test_reflection_lists_every_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = stub.ServerReflectionInfo(iter([request]), timeout=5)
    listed = {service.name for service in response.list_services_response.service}
    assert listed == served_names() | {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def run_healthcheck(server: PatternsServer) -> int:
    """Exit code of the container probe, `python -m patterns_server.healthcheck`."""
    probe = [sys.executable, "-m", "patterns_server.healthcheck", server.address]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode


def test_redis_stopped_gives_unavailable_then_recovers(
    own_redis: RedisServer, own_server: PatternsServer
) -> None:
    with grpc.insecure_channel(own_server.address) as channel:
        wait_for_health(channel, SERVING)
        assert add(channel, "before") is True

        assert run_healthcheck(own_server) == 0
        own_redis.stop()
        # A generous deadline: the call must fail UNAVAILABLE on its own, not hang.
        assert_unavailable(lambda: add(channel, "during", timeout=10))
        wait_for_health(channel, NOT_SERVING)
        assert run_healthcheck(own_server) == 1
        own_server.wait_for_log("Redis cannot serve")
        assert own_server.process is not None and own_server.process.poll() is None

        own_redis.start()
        wait_for_health(channel, SERVING)
        assert add(channel, "after") is True
        own_server.wait_for_log("Redis is reachable")


def test_unexpected_redis_reply_is_internal_with_an_incident_id(
    own_redis: RedisServer, own_server: PatternsServer
) -> None:
    # Something other than this server wrote a plain string where a counter lives.
    own_redis.client().set("patterns:default:counter:{corrupt}", "not a HyperLogLog")
    with grpc.insecure_channel(own_server.address) as channel:
        error = rpc_error(lambda: add(channel, "corrupt"))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "Traceback" not in (error.details() or "")
    incident = (error.details() or "").split("incident ")[1].rstrip(")")
    assert details(error)["ErrorInfo"].reason == "INTERNAL"
    own_server.wait_for_log(f"internal error {incident}")


def pause_redis(server: RedisServer, seconds: float) -> None:
    server.client().client_pause(int(seconds * 1000), all=True)


def test_call_past_its_deadline_never_reaches_redis(
    own_redis: RedisServer, own_server: PatternsServer
) -> None:
    slow_key, late_key = f"slow-{uuid.uuid4()}", f"late-{uuid.uuid4()}"
    with grpc.insecure_channel(own_server.address) as channel:
        add(channel, "warm-up")
        pause_redis(own_redis, 0.8)
        # This call's commands are sent and wait in Redis until the pause ends...
        slow = threading.Thread(target=add, args=(channel, slow_key))
        slow.start()
        time.sleep(0.2)
        # ...while this one queues behind them, and its deadline passes first.
        error = rpc_error(lambda: add(channel, late_key, timeout=0.2))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        slow.join()
        assert count(channel, slow_key) == 1
        assert count(channel, late_key) == 0  # its Add was dropped, never sent


def test_sigterm_drains_in_flight_calls_then_exits(
    own_redis: RedisServer, own_server: PatternsServer
) -> None:
    key = f"drain-{uuid.uuid4()}"
    with grpc.insecure_channel(own_server.address) as channel:
        add(channel, "warm-up")
        pause_redis(own_redis, 0.6)
        results: list[bool] = []
        in_flight = threading.Thread(target=lambda: results.append(add(channel, key)))
        in_flight.start()
        time.sleep(0.2)
        assert own_server.process is not None
        own_server.process.send_signal(signal.SIGTERM)
        in_flight.join()
        assert results == [True]  # finished during the grace period
    assert own_server.wait() == 0
    assert "stopping: draining calls" in own_server.log
    assert own_server.log.rstrip().endswith("stopped")
    # New calls are refused once the server is gone.
    with grpc.insecure_channel(own_server.address) as channel:
        assert rpc_error(lambda: add(channel, key, timeout=2)).code() in {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        }


def empty_service(name: str) -> ServiceDescriptor:
    """The descriptor of a service called `name` that has no methods."""
    pool = descriptor_pool.DescriptorPool()
    service = descriptor_pb2.ServiceDescriptorProto(name=name)
    pool.Add(descriptor_pb2.FileDescriptorProto(name=f"{name}.proto", service=[service]))
    return pool.FindServiceByName(name)


class RecordingService(Service):
    """A service that records its lifecycle, and checks Redis is still open when closing."""

    def __init__(self, name: str, runtime: Runtime, events: list[str]) -> None:
        super().__init__(object(), empty_service(name))
        self._redis = runtime.redis
        self._events = events

    async def start(self) -> None:
        self._events.append(f"start {self.name}")

    async def close(self) -> None:
        await self._redis.call("PING")  # Redis closes after the services
        self._events.append(f"close {self.name}")


def test_services_start_in_order_and_close_in_reverse(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    monkeypatch.setattr(
        "patterns_server.app.SERVICES",
        tuple(
            lambda runtime, name=name: RecordingService(name, runtime, events)
            for name in ("first", "second")
        ),
    )

    async def scenario() -> None:
        app = await start(Settings(listen="127.0.0.1:0", redis_url=own_redis.url))
        events.append("serving")
        await app.stop()

    asyncio.run(scenario())
    assert events == [
        "start first",
        "start second",
        "serving",
        "close second",
        "close first",
    ]


def test_the_health_monitor_always_stops_when_asked(own_redis: RedisServer) -> None:
    """Shutdown stops the Redis health monitor whatever it is doing at that moment (a
    cancelled redis-py command can swallow its cancellation: stopping must not rely on it)."""
    settings = Settings(listen="127.0.0.1:0", redis_url=own_redis.url, health_interval=0.0005)

    async def scenario() -> int:
        app = await start(settings)
        hung = 0
        try:
            for _ in range(200):
                app.start_health_monitor()
                await asyncio.sleep(random.uniform(0, 0.003))
                try:
                    async with asyncio.timeout(2):
                        await app.stop_health_monitor()
                except TimeoutError:
                    hung += 1
        finally:
            await app.stop()
        return hung

    assert asyncio.run(scenario()) == 0
