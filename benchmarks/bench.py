"""`make bench`: load patterns-server with real gRPC clients and compare with baselines.

It starts a redis-server and a patterns-server (pinned to core 0 when the machine has two
or more), then runs each scenario for --seconds after a warm-up, with clients in separate
processes (pinned to the other cores, beside Redis):

  noop         grpc.health.v1.Health/Check: the gRPC ceiling of one server process
  check        RateLimiter/Check, --in-flight calls at once
  noop-single  the no-op RPC, one call at a time: the latency floor of gRPC in Python
  check-single RateLimiter/Check, one call at a time: the latency of an unloaded call
  check-refused RateLimiter/Check refused (one unit an hour on 100 keys): a refusal's cost
  envoy        Envoy's ShouldRateLimit of one descriptor, whose configured limit is Check's
               policy (GCRA, 1,000 a second, over the same 10,000 users)
  checkmany    RateLimiter/CheckMany of 100 checks
  checkstream  RateLimiter/CheckStream, one check per message, --in-flight checks at once
               carried over 2 streams per client process (calls/s: checks answered/s)
  client-check, client-checkstream, client-sync-check, client-sync-checkstream
               RateLimiter checks through the Python client from one process, --in-flight
               at once: aio tasks or blocking-client threads, each check a unary Check or
               a message of the client's one shared CheckStream (benchmarks/client.py)
  direct       no server: the same Lua decision made with redis-py asyncio from one
               Python process (pinned to core 0 like the server), one EVALSHA per decision
  cache-get    Cache/Get of 1 KiB values over 10,000 keys; direct-get: redis-py GET of the
               same, from one process pinned like the server
  cache-set    Cache/Set of 1 KiB values; direct-set: redis-py SET
  lb-submit    Leaderboard/Submit (BEST) to a board of 1,000,000 members
  lb-top       Leaderboard/Top(10) of that board
  session-touch  Sessions/Get with touch over 10,000 sessions of 1,000 users
  streams-append Streams/Append of 100 bytes over 100 streams
  streams-consume  Streams/Consume: deliveries of a filled stream, each acked at once, over
               4 Consume streams per client process with --in-flight deliveries in flight
               (calls/s: deliveries acked/s; latency: from an ack to the delivery it made
               room for)
  noop-workers, check-workers  noop and check against a second server started with
               --workers (2 by default), its workers free to use every core (the
               clients' and Redis's too), each client process calling over 8
               connections so that the kernel spreads them over the workers

then, once after the rounds, the Locker (`benchmarks/lock.py`): uncontended Acquire+Release
pairs per second with --in-flight clients, and the hand-off latency (one holder's Release
sent to the next holder's Acquire returned) with --lock-contenders waiting for one lock;
and the Events fan-out (`benchmarks/fanout.py`): --fanout-streams
subscriber streams on one channel, from client processes, asking for batches
(SubscribeRequest.batch; --fanout-unbatched as older clients do), and one publisher at each
of --fanout-rates messages/s, sending each message when due: deliveries/s,
publish-to-receive latency, the server's and the subscribers' CPU per delivery (which side
saturates first), events per gRPC message, streams ended early, and server memory per idle
stream.

and prints throughput, latency percentiles, the server's CPU time per call, and the ratios
the targets are stated in. --output writes the same as Markdown (benchmarks/RESULTS.md).

--script-cost measures something else instead: how long Redis is busy with the longest
single command (script) of each call whose work grows with its input, from SLOWLOG
(`benchmarks/script_cost.py`).
"""

import argparse
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from benchmarks import script_cost
from benchmarks.client import SCENARIOS as CLIENT_SCENARIOS
from benchmarks.client import run_client_worker
from benchmarks.fanout import FanoutResult, run_fanout
from benchmarks.load import (
    BOARD,
    BOARD_SIZE,
    CONSUME_FILL,
    CONSUME_STREAM,
    ENVOY_DOMAIN,
    PAYLOAD,
    SESSION_IDS_FILE,
    Window,
    WorkerResult,
    create_sessions,
    run_direct_worker,
    run_grpc_worker,
    run_grpc_worker_over_connections,
)
from benchmarks.lock import LockResult, run_locks
from devtools.processes import PatternsServer, RedisServer
from devtools.procfs import children, cpu_seconds
from patterns_server.ratelimit.ratelimit import CHECK
from patterns_server.runtime.auth import new_token
from patterns_server.storage.embedded import find_redis_server, server_version

RESULTS_PREAMBLE = """Written by `make bench ARGS="--output benchmarks/RESULTS.md"`; see
`benchmarks/bench.py` for what each scenario does. Figures from a shared, noisy machine:
compare the ratios (each computed within one round) rather than absolute rates, and rerun
before drawing conclusions from a difference under 10%.
"""

SCENARIOS = (
    "noop",
    "check",
    "check-auth",
    "check-metrics",
    "noop-single",
    "check-single",
    "check-refused",
    "envoy",
    "checkmany",
    "checkstream",
    "client-check",
    "client-checkstream",
    "client-sync-check",
    "client-sync-checkstream",
    "direct",
    "cache-get",
    "direct-get",
    "cache-set",
    "direct-set",
    "lb-submit",
    "lb-top",
    "session-touch",
    "streams-append",
    "streams-consume",
    "noop-workers",
    "check-workers",
)
DIRECT = ("direct", "direct-get", "direct-set")
# The envoy scenario's limit: Check's policy (benchmarks/load.py), in Envoy's configuration.
ENVOY_CONFIG = f"""domain: {ENVOY_DOMAIN}
descriptors:
  - key: user
    rate_limit: {{unit: second, requests_per_unit: 1000, algorithm: gcra}}
"""
# Scenario suffixes served by a second, differently set server.
VARIANTS = ("auth", "metrics", "workers")
WORKER_CONNECTIONS = 8  # per client process, against the server of --workers


@dataclass
class Figures:
    scenario: str
    in_flight: int
    calls: int
    decisions: int
    seconds: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    server_cpu_us_per_call: float | None

    @property
    def rps(self) -> float:
        return self.calls / self.seconds

    @property
    def decisions_per_second(self) -> float:
        return self.decisions / self.seconds


def percentile(ordered: Sequence[int], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, int(fraction * len(ordered)))
    return ordered[index] / 1e6


def core_sets() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, client cores): split when there are two cores or more."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return {cores[0]}, set(cores[1:])


class Processes:
    """The redis-server and patterns-server under test; `close()` stops both."""

    def __init__(
        self,
        server_cores: set[int] | None,
        client_cores: set[int] | None,
        server_args: Sequence[str],
        workers: int = 2,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="patterns-bench-"))
        binary, _ = find_redis_server()
        self.redis = RedisServer(self.directory, str(binary), cores=client_cores)
        self.redis.start()
        self.redis_version = server_version(self.redis.client().info("server"))
        envoy_config = self.directory / "envoy.yaml"
        envoy_config.write_text(ENVOY_CONFIG)
        self.server = PatternsServer(
            self.redis.url,
            "--health-interval",
            "1",
            "--envoy-config",
            str(envoy_config),
            *server_args,
            cores=server_cores,
        ).start()
        self.variants: dict[str, PatternsServer] = {}  # by scenario suffix: "auth", ...
        self.api_key = ""
        self._server_cores = server_cores
        self._client_cores = client_cores
        self._server_args = server_args
        self.workers = workers

    def start_variant(self, variant: str) -> None:
        """A second server on the same core and Redis, configured as `variant` says: the
        scenarios named `<scenario>-<variant>` call it, beside the plain server in the same
        run. "auth": with an auth file of one tenant, whose API key the calls carry;
        "metrics": with --metrics-listen (metrics counted and served); "workers": with
        --workers, on every core (the kernel places the workers; the clients and Redis
        share their cores)."""
        flags: list[str] = []
        cores = self._server_cores
        if variant == "auth":
            self.api_key, digest = new_token()
            auth = self.directory / "tenants.toml"
            auth.write_text(
                f'[[tenant]]\nname = "bench"\nnamespace = "bench"\nkeys = ["{digest}"]\n'
            )
            flags = ["--auth-file", str(auth)]
        elif variant == "metrics":
            flags = ["--metrics-listen", "127.0.0.1:0"]
        elif variant == "workers":
            flags = ["--workers", str(self.workers)]
            if cores and self.workers > 1:  # --workers 1: the same layout, 8 connections
                cores = cores | (self._client_cores or set())
        self.variants[variant] = PatternsServer(
            self.redis.url,
            "--health-interval",
            "1",
            *flags,
            *self._server_args,
            cores=cores,
        ).start()

    def server_for(self, scenario: str) -> PatternsServer:
        _, _, variant = scenario.partition("-")
        return self.variants.get(variant, self.server)

    def fill_leaderboard(self) -> None:
        """The board of the lb- scenarios: a million members, written straight to Redis in
        the server's layout (a HIGH_FIRST board stores negated scores)."""
        client = self.redis.client()
        key = f"patterns:default:leaderboard:{{{BOARD}}}:h:all"
        for start in range(0, BOARD_SIZE, 20_000):
            batch = range(start, start + 20_000)
            client.zadd(key, {f"player:{n}": -((n * 7_919) % 1_000_000) for n in batch})

    def fill_stream(self) -> None:
        """The stream of the streams-consume scenario, written straight to Redis in the
        server's layout (an entry's payload is its field "p")."""
        client = self.redis.client()
        key = f"patterns:default:streams:{{{CONSUME_STREAM}}}"
        for _ in range(CONSUME_FILL // 10_000):
            pipeline = client.pipeline(transaction=False)
            for _entry in range(10_000):
                pipeline.xadd(key, {"p": PAYLOAD})
            pipeline.execute()

    def create_sessions(self) -> None:
        """The sessions of the session- scenarios, created through the server."""
        path = self.directory / "session-ids.txt"
        create_sessions(self.server.address, path)
        os.environ[SESSION_IDS_FILE] = str(path)  # inherited by the worker processes

    @property
    def server_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def close(self) -> None:
        self.server.stop()
        for variant in self.variants.values():
            variant.stop()
        self.redis.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def server_cpu_seconds(pid: int) -> float:
    """CPU time of the server of `pid` so far: its own, and its workers' (--workers)."""
    return cpu_seconds(pid) + sum(
        cpu_seconds(worker) for worker in children(pid, "patterns_server worker")
    )


def run_scenario(
    processes: Processes,
    scenario: str,
    in_flight: int,
    client_processes: int,
    seconds: float,
    warmup: float,
    server_cores: set[int] | None,
    client_cores: set[int] | None,
) -> Figures:
    server = processes.server_for(scenario)
    assert server.process is not None
    server_pid = server.process.pid
    single = scenario.endswith("-single")
    # The client- scenarios are one app's process: its checks share one client.
    one_process = single or scenario in DIRECT or scenario in CLIENT_SCENARIOS
    workers = 1 if one_process else client_processes
    per_worker = 1 if single else max(1, in_flight // workers)
    begin = time.monotonic() + 2.0  # worker start-up
    window = Window(begin + warmup, begin + warmup + seconds)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        if scenario in DIRECT:
            futures = [
                pool.submit(
                    run_direct_worker,
                    processes.redis.url,
                    scenario,
                    CHECK.source,
                    per_worker,
                    window,
                    server_cores,
                )
            ]
        elif scenario.endswith("-workers"):
            futures = [
                pool.submit(
                    run_grpc_worker_over_connections,
                    server.address,
                    scenario,
                    per_worker,
                    window,
                    client_cores,
                    WORKER_CONNECTIONS,
                )
                for _ in range(workers)
            ]
        elif scenario in CLIENT_SCENARIOS:
            futures = [
                pool.submit(
                    run_client_worker, server.address, scenario, per_worker, window, client_cores
                )
            ]
        else:
            futures = [
                pool.submit(
                    run_grpc_worker,
                    server.address,
                    scenario,
                    per_worker,
                    window,
                    client_cores,
                    processes.api_key if scenario.endswith("-auth") else "",
                )
                for _ in range(workers)
            ]
        time.sleep(max(0.0, window.start - time.monotonic()))
        cpu_before = server_cpu_seconds(server_pid)
        time.sleep(max(0.0, window.end - time.monotonic()))
        cpu_used = server_cpu_seconds(server_pid) - cpu_before
        results: list[WorkerResult] = [future.result() for future in futures]
    latencies = sorted(ns for result in results for ns in result.latencies_ns)
    calls = len(latencies)
    decisions = calls * results[0].decisions_per_call
    server_cpu = None if scenario in DIRECT or not calls else cpu_used / calls * 1e6
    return Figures(
        scenario,
        per_worker * workers,
        calls,
        decisions,
        seconds,
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        percentile(latencies, 0.999),
        server_cpu,
    )


def describe_machine(processes: Processes) -> list[str]:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return [
        f"machine: {os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}",
        f"versions: Python {platform.python_version()}, grpcio {version('grpcio')}, "
        f"redis-py {version('redis')}, hiredis {version('hiredis')}, "
        f"uvloop {version('uvloop')}, {processes.redis_version}",
    ]


def median_figures(rounds: list[Figures]) -> Figures:
    """Each measure's median over the rounds of one scenario."""
    first = rounds[0]

    def middle(values: list[float]) -> float:
        return statistics.median(values)

    cpu = [f.server_cpu_us_per_call for f in rounds if f.server_cpu_us_per_call is not None]
    return Figures(
        first.scenario,
        first.in_flight,
        int(middle([f.calls for f in rounds])),
        int(middle([f.decisions for f in rounds])),
        first.seconds,
        middle([f.p50_ms for f in rounds]),
        middle([f.p99_ms for f in rounds]),
        middle([f.p999_ms for f in rounds]),
        middle(cpu) if cpu else None,
    )


# (name, numerator scenario and measure, denominator scenario and measure)
RATIOS = [
    ("Check calls/s ÷ no-op RPC calls/s (target ≥ 0.9)", "check", "noop", "rps"),
    (
        "server CPU per refused Check ÷ per admitted Check (target ≤ 1)",
        "check-refused",
        "check",
        "server_cpu_us_per_call",
    ),
    ("refused Check calls/s ÷ no-op RPC calls/s", "check-refused", "noop", "rps"),
    ("Envoy ShouldRateLimit calls/s ÷ Check calls/s", "envoy", "check", "rps"),
    (
        "server CPU per Envoy ShouldRateLimit ÷ per Check",
        "envoy",
        "check",
        "server_cpu_us_per_call",
    ),
    (
        "Check with an API key (--auth-file) calls/s ÷ no-op RPC calls/s",
        "check-auth",
        "noop",
        "rps",
    ),
    ("Check with an API key calls/s ÷ Check calls/s", "check-auth", "check", "rps"),
    (
        "Check with metrics on (--metrics-listen) calls/s ÷ no-op RPC calls/s",
        "check-metrics",
        "noop",
        "rps",
    ),
    ("Check with metrics on calls/s ÷ Check calls/s", "check-metrics", "check", "rps"),
    (
        "server CPU per Check with an API key ÷ per Check",
        "check-auth",
        "check",
        "server_cpu_us_per_call",
    ),
    (
        "server CPU per Check with metrics on ÷ per Check (target ≤ 1.05)",
        "check-metrics",
        "check",
        "server_cpu_us_per_call",
    ),
    ("CheckStream decisions/s ÷ Check calls/s (target ≥ 2)", "checkstream", "check", "rps"),
    ("CheckStream decisions/s ÷ no-op RPC calls/s", "checkstream", "noop", "rps"),
    (
        "server CPU per CheckStream decision ÷ per Check",
        "checkstream",
        "check",
        "server_cpu_us_per_call",
    ),
    (
        "server CPU per decision, aio client over its CheckStream ÷ unary",
        "client-checkstream",
        "client-check",
        "server_cpu_us_per_call",
    ),
    (
        "decisions/s, aio client over its CheckStream ÷ unary",
        "client-checkstream",
        "client-check",
        "rps",
    ),
    (
        "server CPU per decision, blocking client (threads) over its CheckStream ÷ unary",
        "client-sync-checkstream",
        "client-sync-check",
        "server_cpu_us_per_call",
    ),
    (
        "decisions/s, blocking client (threads) over its CheckStream ÷ unary",
        "client-sync-checkstream",
        "client-sync-check",
        "rps",
    ),
    (
        "CheckMany(100) decisions/s ÷ direct redis-py decisions/s (target ≥ 2)",
        "checkmany",
        "direct",
        "decisions_per_second",
    ),
    ("Cache Get calls/s ÷ direct redis-py GET/s (1 KiB)", "cache-get", "direct-get", "rps"),
    ("Cache Get calls/s ÷ no-op RPC calls/s (target ≥ 0.8)", "cache-get", "noop", "rps"),
    (
        "Leaderboard Submit (1M members) calls/s ÷ no-op RPC calls/s (target ≥ 0.8)",
        "lb-submit",
        "noop",
        "rps",
    ),
    (
        "Leaderboard Top(10) (1M members) calls/s ÷ no-op RPC calls/s (target ≥ 0.8)",
        "lb-top",
        "noop",
        "rps",
    ),
    ("Cache Set calls/s ÷ direct redis-py SET/s (1 KiB)", "cache-set", "direct-set", "rps"),
    ("Cache Set calls/s ÷ no-op RPC calls/s (target ≥ 0.8)", "cache-set", "noop", "rps"),
    (
        "Sessions Get+touch calls/s ÷ no-op RPC calls/s (target ≥ 0.8)",
        "session-touch",
        "noop",
        "rps",
    ),
    ("Sessions Get+touch calls/s ÷ Cache Get calls/s", "session-touch", "cache-get", "rps"),
    ("Streams Append calls/s ÷ no-op RPC calls/s", "streams-append", "noop", "rps"),
    (
        "Streams deliveries acked/s (delivery+ack) ÷ no-op RPC calls/s",
        "streams-consume",
        "noop",
        "rps",
    ),
    (
        "server CPU per Streams delivery+ack ÷ per no-op RPC",
        "streams-consume",
        "noop",
        "server_cpu_us_per_call",
    ),
    ("no-op RPC calls/s, --workers {workers} ÷ one process", "noop-workers", "noop", "rps"),
    ("Check calls/s, --workers {workers} ÷ one process", "check-workers", "check", "rps"),
    (
        "server CPU per Check (all processes), --workers {workers} ÷ one process",
        "check-workers",
        "check",
        "server_cpu_us_per_call",
    ),
]


def report(
    rounds: list[dict[str, Figures]], header: list[str], command: str, workers: int = 2
) -> str:
    scenarios = list(rounds[0])
    medians = {s: median_figures([r[s] for r in rounds]) for s in scenarios}
    lines = [
        f"command: `{command}`",
        *header,
        f"{len(rounds)} rounds, scenarios interleaved; each figure is the median over rounds.",
        "",
        "| scenario | in flight | calls/s | decisions/s | p50 ms | p99 ms | p99.9 ms "
        "| server CPU µs/call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in medians.values():
        cpu = f"{f.server_cpu_us_per_call:.0f}" if f.server_cpu_us_per_call else "-"
        decisions = f"{f.decisions_per_second:,.0f}" if f.decisions else "-"
        lines.append(
            f"| {f.scenario} | {f.in_flight} | {f.rps:,.0f} | "
            f"{decisions} | {f.p50_ms:.2f} | {f.p99_ms:.2f} | "
            f"{f.p999_ms:.2f} | {cpu} |"
        )
    lines.append("")
    for template, numerator, denominator, measure in RATIOS:
        name = template.format(workers=workers)
        if numerator in medians and denominator in medians:
            per_round = sorted(
                getattr(r[numerator], measure) / getattr(r[denominator], measure)
                for r in rounds
                # A round in which either side completed no call says nothing.
                if getattr(r[denominator], measure) and getattr(r[numerator], measure)
            )
            if not per_round:
                lines.append(f"- {name}: n/a (no round had calls of both)")
                continue
            lines.append(
                f"- {name}: **{statistics.median(per_round):.2f}** "
                f"(rounds: {', '.join(f'{v:.2f}' for v in per_round)})"
            )
    if "check-single" in medians:
        single = medians["check-single"]
        noop = medians.get("noop-single")
        floor = f"; the no-op RPC's: {noop.p99_ms:.2f} ms" if noop else ""
        lines.append(
            f"- p99 of one Check at a time (target ≤ 1.5 ms): **{single.p99_ms:.2f} ms**{floor}"
        )
        if noop:
            lines.append(
                f"- p50 of one Check at a time ÷ the no-op RPC's (target ≤ 1.5): "
                f"**{single.p50_ms / noop.p50_ms:.2f}** ({single.p50_ms:.2f} ms, "
                f"{noop.p50_ms:.2f} ms)"
            )
    return "\n".join(lines)


FANOUT_LATENCY_TARGET_MS = 50.0


HANDOFF_TARGET_MS = 5.0


def lock_report(result: LockResult | None, in_flight: int, contenders: int) -> list[str]:
    if result is None:
        return []
    p99 = percentile(result.handoffs_ns, 0.99)
    return [
        "",
        f"Locker ({result.seconds:g} s each):",
        "",
        f"- uncontended Acquire+Release pairs, {in_flight} clients: "
        f"**{result.pairs / result.seconds:,.0f} pairs/s**",
        f"- hand-off, {contenders} contenders for one lock ({len(result.handoffs_ns):,} "
        f"hand-offs): p50 {percentile(result.handoffs_ns, 0.5):.2f} ms, "
        f"**p99 {p99:.2f} ms** (target ≤ {HANDOFF_TARGET_MS:g} ms)",
    ]


def fanout_report(results: list[FanoutResult]) -> list[str]:
    if not results:
        return []
    lines = [
        "",
        f"Events fan-out: {results[0].streams:,} subscriber streams on one channel, one "
        f"publisher, {results[0].seconds:g} s per rate; subscribers "
        + ("ask for batches (SubscribeRequest.batch):" if results[0].batch else "unbatched:"),
        "",
        "| messages/s | deliveries/s | delivered | p50 ms | p99 ms | server CPU µs/delivery "
        "| subscribers' CPU µs/delivery | events per message | streams ended |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        count = max(result.delivered, 1)
        cpu = result.server_cpu_seconds / count * 1e6
        client_cpu = result.client_cpu_seconds / count * 1e6
        per_message = result.delivered / max(result.messages, 1)
        lines.append(
            f"| {result.rate:,} | {result.deliveries_per_second:,.0f} | "
            f"{result.delivered_share:.1%} | {percentile(result.latencies_ns, 0.5):.1f} | "
            f"{percentile(result.latencies_ns, 0.99):.1f} | {cpu:.0f} | {client_cpu:.0f} | "
            f"{per_message:.2f} | {result.ended_streams} |"
        )
    failures = sum(r.publish_failures for r in results)
    if failures:
        lines += ["", f"- Publish calls failed UNAVAILABLE (not counted as published): {failures}"]
    lines.append("")
    top = max(results, key=lambda r: r.rate)
    if top.delivered:
        # What one core would deliver at the CPU each side spent per delivery at the highest
        # rate (batches grow with load, so costs fall as rates rise): the lower side limits.
        lines.append(
            f"- one core's worth at {top.rate:,} messages/s's costs: server "
            f"**{top.delivered / top.server_cpu_seconds:,.0f} deliveries/s**, subscribers "
            f"{top.delivered / max(top.client_cpu_seconds, 1e-9):,.0f} deliveries/s"
        )
    per_stream = statistics.median(r.memory_per_stream for r in results)
    lines.append(f"- server memory per idle stream: **{per_stream / 1024:.1f} KiB**")
    delivered = [r for r in results if r.delivered_share >= 0.999]
    on_time = [r for r in delivered if percentile(r.latencies_ns, 0.99) <= FANOUT_LATENCY_TARGET_MS]
    lines.append(
        "- highest rate with every message delivered (goal ≥ 20,000 deliveries/s): "
        f"**{max((r.deliveries_per_second for r in delivered), default=0.0):,.0f} "
        "deliveries/s**; with p99 ≤ "
        f"{FANOUT_LATENCY_TARGET_MS:g} ms as well: "
        f"**{max((r.deliveries_per_second for r in on_time), default=0.0):,.0f} deliveries/s**"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, from: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time of each")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time first")
    parser.add_argument("--rounds", type=int, default=3, help="times to run every scenario")
    parser.add_argument("--in-flight", type=int, default=64, help="concurrent calls")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--server-args", default="", help="extra patterns-server flags")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="--workers of the server of the -workers scenarios (1: the single process "
        "again, as placed as the plain one, called over as many connections: a control)",
    )
    parser.add_argument("--lock-seconds", type=float, default=5.0, help="each Locker part; 0 skips")
    parser.add_argument("--lock-contenders", type=int, default=8, help="waiting for one lock")
    parser.add_argument("--fanout-streams", type=int, default=1_000, help="subscriber streams")
    parser.add_argument(
        "--fanout-rates",
        default="10,20,40",
        help="messages/s to publish, comma-separated; '' skips",
    )
    parser.add_argument("--fanout-seconds", type=float, default=5.0, help="measured per rate")
    parser.add_argument(
        "--fanout-settle",
        type=float,
        default=1.0,
        help="seconds after each rate's window for its last deliveries; later ones count as "
        "not delivered",
    )
    parser.add_argument(
        "--fanout-publish-to-redis",
        action="store_true",
        help="the publisher PUBLISHes to Redis itself, as other server processes would, "
        "instead of calling the server under test (which takes one new call per turn of its "
        "event loop, so its own fan-out slows its publishers)",
    )
    parser.add_argument(
        "--fanout-unbatched",
        action="store_true",
        help="subscribe without SubscribeRequest.batch (one message per event, as older "
        "clients do); by default subscribers ask for batches",
    )
    parser.add_argument("--output", type=Path, help="also write the report as Markdown")
    parser.add_argument(
        "--script-cost",
        action="store_true",
        help="instead: what one call costs Redis at the limits, from SLOWLOG "
        "(benchmarks/script_cost.py; its --cases and --repeat may follow)",
    )
    args, rest = parser.parse_known_args(argv)
    if args.script_cost:
        script_cost.main(rest)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")

    server_cores, client_cores = core_sets()
    processes = Processes(server_cores, client_cores, args.server_args.split(), args.workers)
    try:
        if any(scenario.startswith("lb-") for scenario in scenarios):
            processes.fill_leaderboard()
        if any(scenario.startswith("session-") for scenario in scenarios):
            processes.create_sessions()
        if "streams-consume" in scenarios:
            processes.fill_stream()
        for variant in VARIANTS:
            if any(scenario.endswith(f"-{variant}") for scenario in scenarios):
                processes.start_variant(variant)
        rounds = []
        for number in range(1, args.rounds + 1):
            figures = {}
            for scenario in scenarios:
                figures[scenario] = run_scenario(
                    processes,
                    scenario,
                    args.in_flight,
                    args.client_processes,
                    args.seconds,
                    args.warmup,
                    server_cores,
                    client_cores,
                )
                print(
                    f"round {number}, {scenario}: {figures[scenario].rps:,.0f} calls/s",
                    file=sys.stderr,
                )
            rounds.append(figures)
        locks = None
        if args.lock_seconds > 0:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                locks = pool.submit(
                    run_locks,
                    processes.server.address,
                    args.in_flight,
                    args.lock_contenders,
                    args.lock_seconds,
                    client_cores,
                ).result()
            print(f"locks: {locks.pairs / locks.seconds:,.0f} pairs/s", file=sys.stderr)
        fanout = []
        for rate in (int(r) for r in args.fanout_rates.split(",") if r):
            fanout.append(
                run_fanout(
                    processes.server.address,
                    processes.server_pid,
                    args.fanout_streams,
                    rate,
                    args.fanout_seconds,
                    args.client_processes,
                    client_cores,
                    batch=not args.fanout_unbatched,
                    settle=args.fanout_settle,
                    redis_url=processes.redis.url if args.fanout_publish_to_redis else None,
                )
            )
            print(
                f"fan-out at {rate} messages/s: "
                f"{fanout[-1].deliveries_per_second:,.0f} deliveries/s",
                file=sys.stderr,
            )
        given = list(argv if argv is not None else sys.argv[1:])
        command = "make bench" + (f' ARGS="{" ".join(given)}"' if given else "")
        header = describe_machine(processes)
        header.append(
            f"layout: server pinned to cores {sorted(server_cores or [])}, "
            f"clients and Redis to {sorted(client_cores or [])}"
            if server_cores
            else "layout: not pinned (one core)"
        )
        if "workers" in processes.variants:
            where = (
                f"free to run on cores {sorted((server_cores or set()) | (client_cores or set()))}"
                if args.workers > 1 and server_cores
                else "placed as the server"
            )
            header.append(
                f"-workers scenarios: a server of --workers {args.workers}, {where}; each "
                f"client process calls over {WORKER_CONNECTIONS} connections"
            )
        text = "\n".join(
            [
                report(rounds, header, command, args.workers),
                *lock_report(locks, args.in_flight, args.lock_contenders),
                *fanout_report(fanout),
            ]
        )
    finally:
        processes.close()
    print(text)
    if args.output:
        args.output.write_text(f"# Benchmark results\n\n{RESULTS_PREAMBLE}\n{text}\n")


if __name__ == "__main__":
    main()
