"""Prometheus metrics: what the server does, by service, method, code and tenant, and
what its patterns and Redis do (`core.telemetry`), served on `--metrics-listen`.

`Metrics` is what `guard` tells about calls and streams; its base class ignores it (metrics
off). `PrometheusMetrics` counts into a registry of its own with `prometheus_client`. Every
label is a small vocabulary (a service, a method, a code, a tenant of the auth file, an
algorithm), never a key, channel, board or user. Children of labelled metrics are cached:
finding one per call would cost more than counting.

Made for several worker processes on one port too (`--workers`): each counts its own into
files of a directory (prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`),
and their supervisor serves the sum (`workers_registry`); every metric here is of a kind
it aggregates (counters and histograms sum, each gauge says how: `multiprocess_mode`).
The process_ metrics (CPU, memory, descriptors) are each process's own, labelled `worker`.
"""

import platform
import threading
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import version
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from patterns_server.core.telemetry import Recorder

# Seconds: a unary call is usually a millisecond or two; the tail reaches the deadline.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics(Recorder):
    """What `guard` tells about calls (and, as a `Recorder`, what patterns and storage
    tell). This class ignores it all: metrics off."""

    def call(self, service: str, method: str, code: str, tenant: str, seconds: float) -> None:
        """A unary call ended with `code` after `seconds`."""

    def stream_opened(self, service: str, method: str) -> None: ...

    def stream_closed(self, service: str, method: str, code: str, tenant: str) -> None: ...

    def stream_message(self, service: str, method: str) -> None: ...

    def refused(self, reason: str, tenant: str) -> None:
        """A call refused before its work began: OVERLOADED, TENANT_OVERLOADED, ..."""

    def stream_refused(self, service: str, method: str, code: str, tenant: str) -> None:
        """A stream that ended before it opened (refused, or its caller unknown)."""


class PrometheusMetrics(Metrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._children: dict[Any, Any] = {}
        self._lock = threading.Lock()
        r = self.registry

        self._rpcs = Counter(
            "patterns_rpcs",
            "Calls ended, by service, method, status code and tenant (unary and streaming).",
            ["service", "method", "code", "tenant"],
            registry=r,
        )
        self._rpc_seconds = Histogram(
            "patterns_rpc_duration_seconds",
            "Time to answer a unary call, from its admission to its answer.",
            ["service", "method"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self._streams = Gauge(
            "patterns_streams_open",
            "Streams open now (Events.Subscribe, Locker.Hold, RateLimiter.CheckStream).",
            ["service", "method"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self._stream_messages = Counter(
            "patterns_stream_messages",
            "Messages sent on streams (a CheckStream's: one per check answered).",
            ["service", "method"],
            registry=r,
        )
        self._refusals = Counter(
            "patterns_admission_refusals",
            "Calls refused before any work: the server's or a tenant's limits, or shutdown.",
            ["reason", "tenant"],
            registry=r,
        )
        self._redis_seconds = Histogram(
            "patterns_redis_round_trip_seconds",
            "Time of one Redis round trip (a pipeline of the commands of concurrent calls).",
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self._redis_batch = Histogram(
            "patterns_redis_batch_commands",
            "Commands sent in one Redis round trip.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._redis_queue = Gauge(
            "patterns_redis_queue_depth",
            "Calls waiting for the next Redis pipeline when the last one was sent.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self._redis_up = Gauge(
            "patterns_redis_up",
            "1 while the health probe finds that Redis can serve (writes), else 0.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self._reconnects = Counter(
            "patterns_redis_reconnects",
            "Redis connections made anew: the Pub/Sub hub's, or a pooled one Redis closed.",
            ["connection"],
            registry=r,
        )
        self._decisions = Counter(
            "patterns_ratelimit_decisions",
            "Rate-limit checks decided by Redis, by algorithm and outcome.",
            ["algorithm", "outcome"],
            registry=r,
        )
        self._failed_open = Counter(
            "patterns_ratelimit_failed_open",
            "Checks admitted unchecked while Redis could not decide (failure mode open).",
            registry=r,
        )
        self._deliveries = Counter(
            "patterns_events_deliveries", "Events handed to subscriber streams.", registry=r
        )
        self._slow = Counter(
            "patterns_events_slow_consumers",
            "Subscriber streams ended for falling behind (SLOW_CONSUMER).",
            registry=r,
        )
        self._lock_grants = Counter(
            "patterns_lock_grants",
            "Lock leases granted: at once, or after waiting (a hand-off).",
            ["waited"],
            registry=r,
        )
        self._lock_waits = Counter(
            "patterns_lock_waits", "Acquires that found the lock held and waited.", registry=r
        )
        self._cache_lookups = Counter(
            "patterns_cache_lookups",
            "Cache entries read: found (hit) or not (miss).",
            ["result"],
            registry=r,
        )
        self._cache_leases = Counter(
            "patterns_cache_fill_leases",
            "Misses of GetOrLease: a fill lease granted, or another caller's fill pending.",
            ["outcome"],
            registry=r,
        )
        self._fills_refused = Counter(
            "patterns_cache_fills_refused",
            "Sets with a fill lease no longer valid (ended, or its tags invalidated).",
            registry=r,
        )
        ProcessCollector(registry=r)  # the server's CPU, memory and file descriptors
        self._build = Gauge(
            "patterns_build_info",
            "1, labelled with the versions the server runs.",
            ["version", "python", "grpcio", "redis_py"],
            multiprocess_mode="max",
            registry=r,
        )
        self._build.labels(
            version("patterns-server"),
            platform.python_version(),
            version("grpcio"),
            version("redis"),
        ).set(1)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children[key] = metric.labels(*labels)
        return child

    # Calls

    def call(self, service: str, method: str, code: str, tenant: str, seconds: float) -> None:
        self._child(self._rpcs, service, method, code, tenant).inc()
        self._child(self._rpc_seconds, service, method).observe(seconds)

    def stream_opened(self, service: str, method: str) -> None:
        self._child(self._streams, service, method).inc()

    def stream_closed(self, service: str, method: str, code: str, tenant: str) -> None:
        self._child(self._streams, service, method).dec()
        self._child(self._rpcs, service, method, code, tenant).inc()

    def stream_message(self, service: str, method: str) -> None:
        self._child(self._stream_messages, service, method).inc()

    def refused(self, reason: str, tenant: str) -> None:
        self._child(self._refusals, reason, tenant).inc()

    def stream_refused(self, service: str, method: str, code: str, tenant: str) -> None:
        self._child(self._rpcs, service, method, code, tenant).inc()

    # Redis

    def redis_round_trip(self, commands: int, seconds: float) -> None:
        self._redis_seconds.observe(seconds)
        self._redis_batch.observe(commands)

    def redis_queue(self, waiting: int) -> None:
        self._redis_queue.set(waiting)

    def redis_up(self, up: bool) -> None:
        self._redis_up.set(1 if up else 0)

    def redis_reconnect(self, connection: str) -> None:
        self._child(self._reconnects, connection).inc()

    # Patterns

    def decisions(self, algorithm: str, allowed: int, refused: int) -> None:
        if allowed:
            self._child(self._decisions, algorithm, "allowed").inc(allowed)
        if refused:
            self._child(self._decisions, algorithm, "refused").inc(refused)

    def failed_open(self, checks: int) -> None:
        self._failed_open.inc(checks)

    def deliveries(self, count: int) -> None:
        self._deliveries.inc(count)

    def slow_consumer(self) -> None:
        self._slow.inc()

    def lock_granted(self, waited: bool) -> None:
        self._child(self._lock_grants, "true" if waited else "false").inc()

    def lock_wait(self) -> None:
        self._lock_waits.inc()

    def cache_lookups(self, hits: int, misses: int) -> None:
        if hits:
            self._child(self._cache_lookups, "hit").inc(hits)
        if misses:
            self._child(self._cache_lookups, "miss").inc(misses)

    def cache_lease(self, granted: bool) -> None:
        self._child(self._cache_leases, "granted" if granted else "pending").inc()

    def cache_fill_refused(self) -> None:
        self._fills_refused.inc()


def workers_registry(
    directory: str, processes: Callable[[], Mapping[str, int]]
) -> CollectorRegistry:
    """What the supervisor of workers serves: the sum of what they counted in `directory`,
    and the process_ metrics of each of `processes()` (pids by the `worker` label)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(_Processes(processes))
    return registry


def worker_gone(directory: str, pid: int) -> None:
    """A worker has exited: its gauges of the living ("livesum", ...) no longer count; its
    counters still do (a sum across workers must not go back)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class _Processes(Collector):
    def __init__(self, processes: Callable[[], Mapping[str, int]]) -> None:
        self._processes = processes

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for worker, pid in self._processes().items():
            for family in ProcessCollector(pid=_constant(pid), registry=None).collect():
                merged = families.setdefault(
                    family.name,
                    Metric(family.name, family.documentation, family.type, family.unit),
                )
                for sample in family.samples:
                    merged.add_sample(
                        sample.name, {**sample.labels, "worker": worker}, sample.value
                    )
        return families.values()


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


def serve(listen: str, registry: CollectorRegistry) -> tuple[int, Callable[[], None]]:
    """Serve `/metrics` on `listen` ("host:port", port 0 for any) from a thread: the port,
    and the function that stops it."""
    host, _, port = listen.rpartition(":")
    server, thread = start_http_server(
        int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry
    )

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return int(server.server_port), stop
