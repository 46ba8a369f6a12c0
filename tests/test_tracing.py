"""OpenTelemetry traces, sent over OTLP to a collector stand-in in this process: a call
that carries a W3C traceparent gets a server span that is its child, with the Redis span
of its script under it; the JSON request log carries the trace id."""

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import timedelta
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from patterns.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc

from devtools.processes import PatternsServer
from tests.waiting import eventually
from tests.windows import Windows

on_redis7_and_cluster = pytest.mark.parametrize("backend_url", ["redis7", "cluster"], indirect=True)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace collector that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: bytes) -> list[trace_pb2.Span]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    collected = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collected, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collected, port
    server.stop(None)


@on_redis7_and_cluster
def test_a_call_with_a_traceparent_is_a_child_span_with_its_redis_work_under_it(
    backend_url: str, collector: tuple[Collector, int], windows: Windows
) -> None:
    collected, port = collector
    environment = {
        **os.environ,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms between exports: the test need not wait 5 s
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }
    server = PatternsServer(
        backend_url,
        "--otel-endpoint",
        f"http://127.0.0.1:{port}",
        "--log-level",
        "debug",
        "--log-format",
        "json",
        env=environment,
    ).start()
    try:
        trace_id, parent_id = secrets.token_bytes(16), secrets.token_bytes(8)
        traceparent = f"00-{trace_id.hex()}-{parent_id.hex()}-01"
        with grpc.insecure_channel(server.address) as channel:
            policy = ratelimit_pb2.Policy(
                algorithm=ratelimit_pb2.ALGORITHM_GCRA,
                limit=10,
                period=windows.calm(timedelta(hours=1)),
            )
            ratelimit_pb2_grpc.RateLimiterStub(channel).Check(
                ratelimit_pb2.CheckRequest(key="traced", policy=policy),
                metadata=[("traceparent", traceparent)],
                timeout=10,
            )
        eventually(lambda: len(collected.of_trace(trace_id)) >= 2, within=15)
    finally:
        server.stop()
    spans = collected.of_trace(trace_id)
    (call,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert call.name == "patterns.ratelimit.v1.RateLimiter/Check"
    assert call.parent_span_id == parent_id
    attributes = {a.key: a.value.string_value or a.value.int_value for a in call.attributes}
    assert attributes["rpc.grpc.status_code"] == "OK"
    assert attributes["patterns.tenant"] == "default"
    (redis,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT]
    assert redis.parent_span_id == call.span_id
    assert redis.name == "redis check"
    redis_attributes = {a.key for a in redis.attributes}
    assert {"db.system", "patterns.redis.batch_commands"} <= redis_attributes
    lines = [json.loads(line) for line in server.log_lines if line.startswith("{")]
    (logged,) = [line for line in lines if line.get("method", "").endswith("/Check")]
    assert logged["trace_id"] == trace_id.hex() and logged["code"] == "OK"
    assert logged["tenant"] == "default" and logged["peer"].startswith("ipv")


def test_without_an_endpoint_no_tracing_is_loaded(own_redis: Any) -> None:
    """A server without tracing loads neither its tracing module nor OpenTelemetry's trace
    SDK and exporter (checked in a process of its own: this one has loaded them). redis-py
    loads OpenTelemetry's metrics API when it is installed: that is redis-py's, and off."""
    check = (
        "import sys, asyncio\n"
        "TRACING = ('patterns_server.runtime.tracing', 'opentelemetry.sdk.trace',"
        " 'opentelemetry.exporter')\n"
        "from patterns_server.app import start\n"
        "from patterns_server.core.settings import Settings\n"
        "async def main():\n"
        f"    app = await start(Settings(listen='127.0.0.1:0', redis_url='{own_redis.url}'))\n"
        "    await app.stop()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith(TRACING)))\n"
    )

    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    ran = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, env=environment
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "[]"
