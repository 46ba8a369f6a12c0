"""Builds and runs the grpc.aio server: services, health, reflection, graceful shutdown."""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from patterns_server.cache import service as cache_service
from patterns_server.core import telemetry
from patterns_server.core.settings import Settings
from patterns_server.counter import service as counter_service
from patterns_server.events import service as events_service
from patterns_server.leaderboard import service as leaderboard_service
from patterns_server.lock import service as lock_service
from patterns_server.ratelimit import envoy_service
from patterns_server.ratelimit import service as ratelimit_service
from patterns_server.rpc.service import Runtime, Service
from patterns_server.runtime.auth import Access, AuthFile, Tenants, warn_if_open
from patterns_server.runtime.calls import SHUTTING_DOWN, Calls
from patterns_server.runtime.guard import Gate
from patterns_server.runtime.metrics import Metrics, PrometheusMetrics
from patterns_server.runtime.metrics import serve as serve_metrics
from patterns_server.runtime.reflection import CommentedReflectionServicer
from patterns_server.runtime.serving import ListenError, add_service
from patterns_server.runtime.tls import ServerCertificates
from patterns_server.runtime.worker import Worker
from patterns_server.session import service as session_service
from patterns_server.storage import RedisBackend, redispy
from patterns_server.storage.backend import redacted_url
from patterns_server.storage.embedded import EmbeddedRedis, data_directory
from patterns_server.streams import service as streams_service

if TYPE_CHECKING:  # imported only when tracing is on (see _tracing)
    from patterns_server.runtime.tracing import Tracing

logger = logging.getLogger("patterns_server")

# Every service of the server, in start order (closed in reverse).
SERVICES: tuple[Callable[[Runtime], Service], ...] = (
    ratelimit_service.build,
    counter_service.build,
    events_service.build,
    lock_service.build,
    cache_service.build,
    leaderboard_service.build,
    session_service.build,
    streams_service.build,
    envoy_service.build,
)

# Calls that gRPC may hold before the server has picked them up (see _grpc_options).
PENDING_CALLS = 20_000
# How often the auth file is checked for a change (SIGHUP reloads it at once).
AUTH_FILE_CHECK_SECONDS = 2.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class App:
    """A started server and what it owns; `stop()` ends it all in order."""

    server: grpc.aio.Server
    port: int
    redis: RedisBackend
    health: health.aio.HealthServicer
    services: list[Service]
    calls: Calls
    settings: Settings
    access: Access
    metrics: Metrics
    tracing: "Tracing | None" = None
    auth_file: AuthFile | None = None
    stop_metrics: Callable[[], None] | None = None
    certificates: ServerCertificates | None = None
    embedded: EmbeddedRedis | None = None
    _health_task: "asyncio.Task[None] | None" = None
    _auth_watch: "asyncio.Task[None] | None" = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def set_health(self, status: int) -> None:
        """The same status for the server as a whole ("") and for every service."""
        for name in ("", *(service.name for service in self.services)):
            await self.health.set(name, status)

    def start_health_monitor(self) -> None:
        self._stopping.clear()
        self._health_task = asyncio.create_task(self._monitor_redis())

    async def stop_health_monitor(self) -> None:
        """Ask the monitor to stop after its current probe, and wait for it. Not by
        cancelling it: redis-py can swallow a cancellation that lands mid-command (85 times
        in 200 in a probe, redis-py 8.1 on Python 3.11), and the monitor would run for ever."""
        self._stopping.set()
        if self._health_task is not None:
            await self._health_task

    async def _monitor_redis(self) -> None:
        """Health follows Redis: NOT_SERVING while it cannot serve, SERVING when it can."""
        status = None
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(self.settings.redis_timeout):
                    await self.redis.check()
                new_status = SERVING
            except Exception as error:  # any failure to answer means not serving
                new_status = NOT_SERVING
                reason = self._why(error)
            self.metrics.redis_up(new_status == SERVING)
            if new_status != status:
                if new_status == SERVING:
                    logger.info("Redis is reachable: serving")
                else:
                    logger.warning("Redis cannot serve (%s): not serving", reason)
                await self.set_health(new_status)
                status = new_status
            with contextlib.suppress(TimeoutError):  # the interval, or until stop
                async with asyncio.timeout(self.settings.health_interval):
                    await self._stopping.wait()

    def _why(self, error: Exception) -> str:
        """What the log says of a failed probe: redis-py's own error (a refused password,
        a certificate that does not verify), not the Unavailable made of it."""
        cause = error.__cause__ if isinstance(error.__cause__, Exception) else error
        if not isinstance(error, TimeoutError) and "Timeout" not in type(cause).__name__:
            return f"{type(cause).__name__}: {cause}"
        why = f"no answer within {self.settings.redis_timeout}s"
        if self.settings.redis_url.startswith("rediss"):  # the handshake waits for ever
            why += "; a port without TLS never answers a rediss:// URL's TLS handshake"
        return why

    def reload(self) -> None:
        """SIGHUP: read the auth file, the TLS files and the services' files again."""
        if self.auth_file is not None:
            self.auth_file.reload()
        if self.certificates is not None:
            self.certificates.reload()
        for service in self.services:
            service.reload()

    async def stop(self) -> None:
        """Graceful: health NOT_SERVING; new calls answered UNAVAILABLE, and open streams
        and waiting calls (a lock, a cache fill) ended so (their clients go elsewhere);
        unary calls in flight get the grace period to finish, the rest are cancelled; then
        the services, Redis and the embedded server go."""
        await self.health.enter_graceful_shutdown()
        await self.stop_health_monitor()
        if self._auth_watch is not None:
            self._auth_watch.cancel()
        started = asyncio.get_running_loop().time()
        self.redis.waits.end(SHUTTING_DOWN)  # answered now, not cut by gRPC after the grace
        await self.calls.shut(self.settings.shutdown_grace)
        spent = asyncio.get_running_loop().time() - started
        await self.server.stop(max(0.0, self.settings.shutdown_grace - spent))
        if self.stop_metrics is not None:
            await asyncio.to_thread(self.stop_metrics)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.close)  # sends the spans still buffered
        for service in reversed(self.services):
            await service.close()
        await self.redis.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        logger.info("stopped")


async def start(settings: Settings, worker: Worker | None = None) -> App:
    """Connect Redis (embedded unless `settings.redis_url`), then start serving; as
    `worker`, one of several on the same port (`--workers`)."""
    redispy.install_packer()  # process-wide: see storage/redispy.py
    embedded = None
    redis_url = settings.redis_url
    if not redis_url:
        # The default directory may be unusable (no writable home): then nothing is kept.
        data = data_directory(settings.embedded_dir)
        embedded = EmbeddedRedis(data, optional=not settings.embedded_dir)
        redis_url = await asyncio.to_thread(embedded.start)
    redis = RedisBackend.from_url(
        redis_url,
        prefix=settings.key_prefix,
        timeout=settings.redis_timeout,
        batch_wait=settings.redis_batch_wait_ms / 1000,
        wait_replicas=settings.redis_wait_replicas,
        ping_interval=settings.health_interval,
    )
    try:
        return await _serve(settings, redis, embedded, worker)
    except BaseException:
        await redis.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise


async def _serve(
    settings: Settings, redis: RedisBackend, embedded: EmbeddedRedis | None, worker: Worker | None
) -> App:
    server = grpc.aio.server(options=_grpc_options(settings, reuseport=worker is not None))
    calls = Calls.for_settings(settings)
    runtime = Runtime(redis, settings)
    services = [build(runtime) for build in SERVICES]
    names = [service.name for service in services]
    access = Access()
    auth_file = None
    if settings.auth_file:
        auth_file = AuthFile(Path(settings.auth_file), names, access, _revoker(calls))
        tenants = auth_file.load()  # AuthFileError: the server does not start
        logger.info("auth file %s: %d tenants", settings.auth_file, len(tenants.all))
    # A worker counts; its supervisor serves what every worker counted.
    counted = settings.metrics_listen or (worker is not None and worker.metrics)
    metrics = PrometheusMetrics() if counted else Metrics()
    telemetry.install(metrics)  # what patterns and storage count goes there too
    tracing = _tracing(settings)
    if tracing is not None:
        telemetry.install_tracer(tracing)
    gate = Gate(calls, access, metrics, tracing)
    for service in services:
        add_service(server, service, gate)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)  # always open
    if settings.reflection != "off":
        reflected = [*names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        gated = access if settings.reflection == "authenticated" else None
        reflection_servicer = CommentedReflectionServicer(reflected, gated)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection_servicer, server)
    certificates = _certificates(settings)
    try:
        if certificates is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, certificates.credentials())
    except RuntimeError as error:
        raise ListenError(f"cannot listen on {settings.listen}: {error}") from None
    if port == 0:
        raise ListenError(f"cannot listen on {settings.listen}")
    app = App(
        server=server,
        port=port,
        redis=redis,
        health=health_servicer,
        services=services,
        calls=calls,
        settings=settings,
        access=access,
        metrics=metrics,
        tracing=tracing,
        auth_file=auth_file,
        certificates=certificates,
        embedded=embedded,
    )
    await app.set_health(NOT_SERVING)  # until the first probe says otherwise
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
    except BaseException:
        for service in reversed(started):
            await service.close()
        raise
    await server.start()
    if isinstance(metrics, PrometheusMetrics) and settings.metrics_listen:
        try:
            metrics_port, app.stop_metrics = serve_metrics(
                settings.metrics_listen, metrics.registry
            )
        except OSError as error:
            await server.stop(None)
            raise ListenError(
                f"cannot serve metrics on {settings.metrics_listen}: {error}"
            ) from None
        logger.info(
            "metrics on http://%s:%d/metrics",
            settings.metrics_listen.rpartition(":")[0],
            metrics_port,
        )
    app.start_health_monitor()
    if auth_file is not None:
        app._auth_watch = asyncio.create_task(auth_file.watch(AUTH_FILE_CHECK_SECONDS))
    host = settings.listen.rsplit(":", 1)[0]
    logger.info(
        "%s on %s:%d%s (Redis %s)",
        "listening" if worker is None else "serving",
        host,
        port,
        " with mutual TLS"
        if certificates and certificates.mutual
        else " with TLS" * bool(certificates),
        "embedded" if embedded else redacted_url(settings.redis_url),
    )
    if auth_file is None and worker is None:
        warn_if_open(settings.listen, port)
    return app


def _revoker(calls: Calls) -> Callable[[Tenants], None]:
    """What a new auth file does to calls in progress: streams of revoked keys end."""

    def revoke(tenants: Tenants) -> None:
        ended = calls.revoke(tenants.still_valid)
        if ended:
            logger.warning("auth file: ended %d streams whose credentials were revoked", ended)

    return revoke


def _tracing(settings: Settings) -> "Tracing | None":
    """Tracing, when an OTLP endpoint is given (by flag, or OpenTelemetry's variable)."""
    if not (settings.otel_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    try:
        from patterns_server.runtime.tracing import Tracing
    except ImportError as error:
        raise ListenError(
            f"tracing needs OpenTelemetry: pip install 'patterns-server[otel]' ({error})"
        ) from None
    return Tracing(endpoint=settings.otel_endpoint)


def _certificates(settings: Settings) -> ServerCertificates | None:
    if not settings.tls_cert:
        return None
    try:
        return ServerCertificates(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except (OSError, ValueError) as error:
        raise ListenError(f"cannot serve TLS: {error}") from None


def _grpc_options(settings: Settings, reuseport: bool = False) -> list[tuple[str, int]]:
    # Calls gRPC has accepted but the server not yet picked up: gRPC cancels them beyond
    # its own limit (1,000 by default), silently. Far more room than is ever admitted lets
    # the server answer overload itself, with RESOURCE_EXHAUSTED (see runtime/calls.py).
    pending = max(PENDING_CALLS, 10 * settings.max_concurrent_rpcs)
    return [
        # Off: a second server on a busy port fails loudly instead of sharing it. On for
        # the workers of one supervisor, which shares it out (runtime/supervisor.py).
        ("grpc.so_reuseport", int(reuseport)),
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", 2 * pending),
    ]


async def run(settings: Settings, worker: Worker | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully; SIGHUP reads the auth file and
    the TLS files again. The handlers come first: a signal sent as soon as the server says
    it listens must find them (SIGHUP's default would end the process). As `worker`, it
    also stops when its supervisor is gone, and tells it when it listens."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    started: list[App] = []

    def reload() -> None:
        for app in started:  # none yet: the files are being read for the first time
            app.reload()

    loop.add_signal_handler(signal.SIGHUP, reload)
    if worker is not None:
        worker.watch_supervisor(stopping.set)
    app = await start(settings, worker)
    started.append(app)
    if worker is not None:
        worker.ready()
    await stopping.wait()
    logger.info("stopping: draining calls for up to %.1fs", settings.shutdown_grace)
    await app.stop()
