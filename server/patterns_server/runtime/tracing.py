"""OpenTelemetry traces (the optional extra `patterns-server[otel]`): each call is a server
span that continues its caller's W3C `traceparent`, with a child span for its Redis work
(the scripts it ran, the Cluster slot, the size of the pipeline that carried them).

Imported only when tracing is on (`--otel-endpoint` or OTEL_EXPORTER_OTLP_ENDPOINT): a
server without it loads nothing of OpenTelemetry, and its calls pay nothing for it.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from patterns_server.core import telemetry

PROPAGATOR = TraceContextTextMapPropagator()


class _Span(telemetry.Span):
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, name: str, value: str | int) -> None:
        self._span.set_attribute(name, value)


class Tracing(telemetry.Tracer):
    """Server spans for calls (`call`), and client spans for their Redis work."""

    enabled = True

    def __init__(self, exporter: SpanExporter | None = None, endpoint: str = "") -> None:
        """Spans go to `exporter`, or to an OTLP collector at `endpoint` (gRPC; empty: the
        standard OTEL_EXPORTER_OTLP_* variables say where)."""
        resource = Resource.create({"service.name": "patterns-server"})
        self.provider = TracerProvider(resource=resource)
        exporter = exporter or OTLPSpanExporter(endpoint=endpoint or None)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self.provider.get_tracer("patterns_server")

    @contextmanager
    def call(self, method: str, metadata: Iterable[tuple[str, Any]]) -> Iterator[trace.Span]:
        """The server span of a call to `method` ("/package.Service/Method"), a child of
        the caller's span when its metadata carries a `traceparent`, current while the
        call runs (so that its Redis spans are its children)."""
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
        parent = PROPAGATOR.extract(carrier)
        service, name = method.strip("/").split("/", 1)
        with self._tracer.start_as_current_span(
            method.strip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,  # a failure is a status, told by set_code
            set_status_on_exception=False,
        ) as span:
            yield span

    @staticmethod
    def end_call(code: str, tenant: str) -> None:
        """What the current call's span ends with: its status code and its tenant."""
        span = trace.get_current_span()
        span.set_attribute("rpc.grpc.status_code", code)
        span.set_attribute("patterns.tenant", tenant)
        if code not in ("OK", "NOT_FOUND", "CANCELLED"):
            span.set_status(Status(StatusCode.ERROR, code))

    @contextmanager
    def redis_span(self, scripts: str, commands: int) -> Iterator[telemetry.Span]:  # type: ignore[override]
        with self._tracer.start_as_current_span(
            f"redis {scripts}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "redis",
                "db.operation": scripts,
                "patterns.redis.commands": commands,
            },
        ) as span:
            yield _Span(span)

    @staticmethod
    def trace_id() -> str:
        """The current span's trace id (hex), for the request log; "" outside a span."""
        context = trace.get_current_span().get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else ""

    def close(self) -> None:
        """Send what is buffered, then stop."""
        self.provider.shutdown()
