"""The server's settings: one typed object, built once from flags and PATTERNS_* variables.

Every field is a flag (`--redis-url`) and an environment variable (`PATTERNS_REDIS_URL`);
a flag wins over the variable, the variable over the default.
"""

import argparse
import dataclasses
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_origin

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
Reflection = Literal["on", "off", "authenticated"]
FailureMode = Literal["closed", "open"]
EnvoyHeaders = Literal["off", "ratelimit", "x-ratelimit"]
T = TypeVar("T")


def _setting(default: T, help: str, **argparse_options: Any) -> T:
    """A field of Settings: its default (whose type must match the field's: mypy checks)
    and its help; `argparse_options` go to its flag (choices, ...)."""
    return field(default=default, metadata={"help": help, **argparse_options})


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which containers and taskset
    narrow), else every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _parse_workers(text: str) -> int:
    if text.strip().lower() == "auto":
        return usable_cores()
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number of workers: {text!r} (a whole number, at least 1, or auto)"
        ) from None
    if workers < 1:
        raise argparse.ArgumentTypeError(f"workers must be at least 1 (or auto), not {workers}")
    return workers


@dataclass(frozen=True)
class Settings:
    listen: str = _setting("127.0.0.1:50051", "address the gRPC server listens on (host:port)")
    workers: int = _setting(
        1,
        "server processes sharing the --listen port (SO_REUSEPORT), each with its own event "
        "loop, Redis connections and limits, under one supervising process; 'auto': one per "
        "core this process may use",
        type=_parse_workers,
        metavar="N|auto",
    )
    redis_url: str = _setting(
        "",
        "Redis to use: redis://, rediss://, unix://, redis+cluster://host:port for a Redis "
        "Cluster, or redis+sentinel://host:port[,host:port...]/service_name[/db] for the "
        "master that Redis Sentinels name; empty starts an embedded, private redis-server "
        "for this process",
    )
    embedded_dir: str = _setting(
        "",
        "directory where the embedded Redis (no --redis-url) keeps its data (an append-only "
        "file), so that what it holds, fencing tokens included, outlives a restart; one "
        "server at a time uses it; empty: $XDG_STATE_HOME/patterns-server, or "
        "~/.local/state/patterns-server; 'none': a temporary directory, nothing kept",
    )
    key_prefix: str = _setting("patterns", "first part of every Redis key this server writes")
    auth_file: str = _setting(
        "",
        "TOML file of tenants (namespace, SHA-256 digests of API keys, services, shares of "
        "the limits), read again on SIGHUP and when it changes; empty: every caller is the "
        "tenant 'default'",
    )
    reflection: Reflection = _setting(
        "on",
        "server reflection: on, off, or authenticated (callers need an API key or a known "
        "client certificate)",
        choices=["on", "off", "authenticated"],
    )
    tls_cert: str = _setting(
        "", "PEM certificate chain to serve TLS with (with --tls-key); read again on SIGHUP"
    )
    tls_key: str = _setting("", "PEM private key of --tls-cert")
    tls_client_ca: str = _setting(
        "",
        "PEM CA certificates that client certificates must chain to: mutual TLS, every "
        "client presents one (with --tls-cert)",
    )
    log_level: LogLevel = _setting(
        "info",
        "log level; debug adds one line per request",
        choices=["debug", "info", "warning", "error"],
    )
    log_format: LogFormat = _setting(
        "text",
        "log lines as text, or as JSON objects (one a line: time, level, logger, message, "
        "and a request's method, code, duration, peer, tenant and trace id)",
        choices=["text", "json"],
    )
    metrics_listen: str = _setting(
        "",
        "host:port to serve Prometheus metrics on (/metrics); empty: no metrics, and none counted",
    )
    otel_endpoint: str = _setting(
        "",
        "OTLP/gRPC endpoint to send traces to (a span per call, continuing the caller's "
        "traceparent, and its Redis work); needs the extra patterns-server[otel]; empty: "
        "OTEL_EXPORTER_OTLP_ENDPOINT if set, else no tracing",
    )
    redis_timeout: float = _setting(
        1.0, "seconds to wait for Redis to connect or answer before the call fails UNAVAILABLE"
    )
    redis_batch_wait_ms: float = _setting(
        2.0,
        "when calls arrive together, how long (ms) to gather them into one Redis pipeline; "
        "a lone call never waits; 0 sends at once",
    )
    redis_wait_replicas: int = _setting(
        0,
        "after each pipeline of commands, WAIT until this many replicas have its writes (at "
        "most half of --redis-timeout), so that fewer acknowledged writes are lost when a "
        "master fails; the answers stand even if fewer replicas confirm; 0: no WAIT",
    )
    ratelimit_failure_mode: FailureMode = _setting(
        "closed",
        "what RateLimiter and Envoy's ShouldRateLimit answer while Redis is unavailable: "
        "closed fails the call UNAVAILABLE; open admits every check (and logs how many)",
        choices=["closed", "open"],
    )
    envoy_config: str = _setting(
        "",
        "envoyproxy/ratelimit's YAML configuration for Envoy's rate limit service "
        "(envoy.service.ratelimit.v3.RateLimitService): a file, or a directory whose *.yaml "
        "and *.yml files are read together (one domain each); read again when it changes and "
        "on SIGHUP; empty: no domain is configured, and every descriptor is under no limit",
    )
    envoy_response_headers: EnvoyHeaders = _setting(
        "off",
        "headers that ShouldRateLimit asks Envoy to add to the response (limit, remaining and "
        "seconds to reset of the descriptor nearest its limit): ratelimit names them "
        "RateLimit-Limit, -Remaining, -Reset (as envoyproxy/ratelimit's "
        "LIMIT_RESPONSE_HEADERS_ENABLED does); x-ratelimit: X-RateLimit-Limit, -Remaining, "
        "-Reset; off: none",
        choices=["off", "ratelimit", "x-ratelimit"],
    )
    max_concurrent_rpcs: int = _setting(
        1_000,
        "unary calls handled at once; beyond, a call is refused at once with "
        "RESOURCE_EXHAUSTED (reason OVERLOADED, with a RetryInfo)",
    )
    max_inflight_bytes: int = _setting(
        64 << 20,
        "bytes of requests of unary calls in progress; beyond, a call is refused as above "
        "(at least --max-request-bytes)",
    )
    max_request_bytes: int = _setting(
        16 << 20,
        "the largest request accepted, in bytes (every documented maximum request fits "
        "within the default)",
    )
    max_streams: int = _setting(
        10_000,
        "server-streaming calls open at once (Events subscriptions, ...); beyond, a new one "
        "is refused with RESOURCE_EXHAUSTED (reason OVERLOADED)",
    )
    events_buffer: int = _setting(
        1_000,
        "messages an Events subscriber may fall behind before its stream is ended with "
        "RESOURCE_EXHAUSTED (reason SLOW_CONSUMER); 16 MiB of payload at most, whatever this",
    )
    events_max_payload_bytes: int = _setting(
        1 << 20, "the largest payload Events.Publish takes, in bytes"
    )
    cache_default_ttl: float = _setting(
        3_600.0, "seconds a Cache value lives when its Set gives neither ttl nor expire_at"
    )
    cache_max_value_bytes: int = _setting(1 << 20, "the largest value Cache.Set takes, in bytes")
    sessions_max_per_user: int = _setting(
        0,
        "the most sessions a user may have when a Sessions.Create gives no max_per_user; "
        "0: 10,000, the most there can be",
    )
    health_interval: float = _setting(1.0, "seconds between Redis health probes")
    shutdown_grace: float = _setting(
        10.0, "seconds in-flight calls get to finish after SIGTERM/SIGINT"
    )

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)")
        if "{" in self.key_prefix or "}" in self.key_prefix:
            raise ValueError("key_prefix must not contain braces (they mark Redis hash tags)")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        for name in ("redis_timeout", "health_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.redis_wait_replicas <= 100:
            raise ValueError("redis_wait_replicas must be 0 to 100")
        if self.redis_batch_wait_ms < 0 or self.shutdown_grace < 0:
            raise ValueError("redis_batch_wait_ms and shutdown_grace must not be negative")
        for name in (
            "max_concurrent_rpcs",
            "max_request_bytes",
            "max_streams",
            "events_buffer",
            "events_max_payload_bytes",
            "cache_max_value_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_inflight_bytes < self.max_request_bytes:
            raise ValueError("max_inflight_bytes must be at least max_request_bytes")
        for name in ("events_max_payload_bytes", "cache_max_value_bytes"):
            if getattr(self, name) > self.max_request_bytes - 64 * 1024:
                raise ValueError(f"{name} must leave room (64 KiB) within max_request_bytes")
        if not 0 <= self.sessions_max_per_user <= 10_000:
            raise ValueError("sessions_max_per_user must be 0 to 10,000")
        if not 0.001 <= self.cache_default_ttl <= 3_650 * 86_400:
            raise ValueError("cache_default_ttl must be 0.001 to 315,360,000 seconds")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (use true or false)")


def _parser_for(kind: Any) -> Callable[[str], Any]:
    """How a flag's text becomes a value of the setting's declared type."""
    if kind is bool:
        return _parse_bool
    if kind in (int, float, str):
        return kind  # type: ignore[no-any-return]
    if get_origin(kind) is Literal:  # the choices are checked by argparse
        return str
    raise TypeError(f"settings of type {kind} have no parser: add one to _parser_for")


def _env_name(field_name: str) -> str:
    return "PATTERNS_" + field_name.upper()


def _flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patterns-server",
        description="Serve Redis patterns (rate limiting, unique counting, ...) over gRPC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    types = typing.get_type_hints(Settings)
    for setting in dataclasses.fields(Settings):
        options = dict(setting.metadata)
        env = _env_name(setting.name)
        options["help"] = f"{options['help']} [env {env}]"
        options.setdefault("type", _parser_for(types[setting.name]))
        parser.add_argument(_flag_name(setting.name), default=setting.default, **options)
    return parser


def load_settings(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from command-line flags over environment variables over defaults."""
    parser = build_parser()
    # Environment values go first as if they were flags: argparse checks them the same way,
    # and a flag given on the command line comes later and wins.
    from_env = [
        f"{_flag_name(setting.name)}={environ[_env_name(setting.name)]}"
        for setting in dataclasses.fields(Settings)
        if _env_name(setting.name) in environ
    ]
    namespace = parser.parse_args([*from_env, *argv])
    try:
        return Settings(**vars(namespace))
    except ValueError as error:
        parser.error(str(error))
