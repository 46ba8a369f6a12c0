"""`--workers N`: N server processes on one port under a supervisor, as users run it, on
Redis 7 and the Cluster: they share the port, a killed worker is replaced while the others
answer, SIGTERM drains every worker, a killed supervisor takes its workers with it, SIGHUP
reaches them all, each answers health for itself, metrics add up across workers; and the
flag itself.

Which worker answered a call is read from the request log (`--log-level debug`,
`--log-format json`), whose lines carry the worker's pid. Each call goes on a channel of
its own (its own TCP connection): the kernel spreads connections over the workers by a
hash of their addresses, so 24 of them all landing on one of two workers (1 in 8 million)
would be a fault, not chance.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc
from patterns.events.v1 import events_pb2, events_pb2_grpc
from patterns.lock.v1 import lock_pb2, lock_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from devtools.processes import PatternsServer, RedisServer
from patterns_server.core.settings import load_settings, usable_cores
from patterns_server.runtime.auth import new_token
from tests.rpc import details
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # each starts a supervisor and its workers: seconds
on_redis7_and_cluster = pytest.mark.parametrize("backend_url", ["redis7", "cluster"], indirect=True)

CHANNELS = 24
# A channel of its own connection: channels of one process otherwise share connections.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
COUNT = "/patterns.counter.v1.UniqueCounter/Count"
MINUTE = Duration(seconds=60)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def workers(backend_url: str, *flags: str, count: int | str = 2) -> PatternsServer:
    return PatternsServer(
        backend_url, "--log-level", "debug", "--log-format", "json", *flags, workers=count
    ).start()


@pytest.fixture
def two_workers(backend_url: str) -> Iterator[PatternsServer]:
    server = workers(backend_url)
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()


def count_on_own_channels(address: str, key: str, calls: int = CHANNELS) -> None:
    """`calls` UniqueCounter.Count calls, each on a new channel (a new connection)."""
    for _ in range(calls):
        with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
            stub = counter_pb2_grpc.UniqueCounterStub(channel)
            stub.Count(counter_pb2.CountRequest(keys=[key]), timeout=10, wait_for_ready=True)


def pids_that_answered(server: PatternsServer, method: str, calls: int = CHANNELS) -> set[int]:
    """The pids of the workers whose request log has a line of `method` (waiting until
    there are `calls` of them)."""

    def lines() -> list[dict[str, object]]:
        entries = [json.loads(line) for line in list(server.log_lines) if line.startswith("{")]
        return [entry for entry in entries if entry.get("method") == method]

    eventually(lambda: len(lines()) >= calls, what=f"{calls} request lines of {method}")
    return {int(str(entry["pid"])) for entry in lines()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def statuses(address: str) -> set[int]:
    """What health checks on CHANNELS new connections answer."""
    found = set()
    for _ in range(CHANNELS):
        with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            found.add(health.Check(health_pb2.HealthCheckRequest(), timeout=10).status)
    return found


@on_redis7_and_cluster
def test_two_workers_share_the_port(
    two_workers: PatternsServer, new_key: Callable[[], str]
) -> None:
    server = two_workers
    pids = server.worker_pids()
    assert len(pids) == 2
    assert re.search(r"listening on 127\.0\.0\.1:\d+ with 2 workers", server.log)
    count_on_own_channels(server.address, new_key())
    assert pids_that_answered(server, COUNT) == set(pids)
    assert statuses(server.address) == {SERVING}  # wherever a health check lands
    assert server.stop() == 0


@on_redis7_and_cluster
def test_a_killed_worker_is_replaced_while_the_other_answers(
    two_workers: PatternsServer, new_key: Callable[[], str]
) -> None:
    server = two_workers
    key = new_key()
    killed, survivor = server.worker_pids()
    os.kill(killed, signal.SIGKILL)
    answered, deadline = 0, time.monotonic() + 20
    while "started again" not in server.log:
        count_on_own_channels(server.address, key, calls=1)  # answered all along
        answered += 1
        assert time.monotonic() < deadline, "no worker took the killed one's place"
    replacement = (set(server.worker_pids()) - {survivor}).pop()
    assert len(server.worker_pids()) == 2 and replacement != killed and not alive(killed)
    assert f"(pid {killed}) was killed by SIGKILL" in server.log
    print(f"{answered} calls answered while the worker was replaced")
    # The new worker serves: calls land on both again.
    before = len([line for line in server.log_lines if COUNT in line])
    count_on_own_channels(server.address, key)
    assert pids_that_answered(server, COUNT, before + CHANNELS) >= {survivor, replacement}
    assert server.stop() == 0


@on_redis7_and_cluster
def test_sigterm_drains_every_worker(backend_url: str, new_key: Callable[[], str]) -> None:
    """Streams and waiting Acquires on both workers, at SIGTERM to the supervisor: each
    ends as with one server (UNAVAILABLE, SHUTTING_DOWN), at once; every process exits,
    the supervisor with 0."""
    server = workers(backend_url, "--shutdown-grace", "20")
    pids = server.worker_pids()
    lock = new_key()

    async def scenario() -> float:
        channels = [
            grpc.aio.insecure_channel(server.address, options=OWN_CONNECTION)
            for _ in range(CHANNELS)
        ]
        try:
            streams = []
            for channel in channels:
                call = events_pb2_grpc.EventsStub(channel).Subscribe(
                    events_pb2.SubscribeRequest(channels=[new_key()]), timeout=30
                )
                assert (await call.read()).WhichOneof("kind") == "subscribed"
                streams.append(call)
            lockers = [lock_pb2_grpc.LockerStub(channel) for channel in channels[:4]]
            held = await lockers[0].Acquire(lock_pb2.AcquireRequest(name=lock, ttl=MINUTE))
            assert held.acquired
            wait = lock_pb2.AcquireRequest(name=lock, ttl=MINUTE, wait_timeout=MINUTE)
            waits = [asyncio.ensure_future(locker.Acquire(wait)) for locker in lockers[1:]]
            await asyncio.sleep(0.5)  # parked
            assert not any(w.done() for w in waits)
            stopped_at = time.monotonic()
            assert server.process is not None
            server.process.terminate()
            for ending in [*streams, *waits]:
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await (ending.read() if isinstance(ending, grpc.aio.Call) else ending)
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
                assert details(ended.value)["ErrorInfo"].reason == "SHUTTING_DOWN"
            answered = time.monotonic() - stopped_at
            assert answered < 5.0, f"answered {answered:.1f} s after SIGTERM"
            return stopped_at
        finally:
            for channel in channels:
                await channel.close()

    stopped_at = asyncio.run(scenario())
    assert server.wait() == 0
    assert time.monotonic() - stopped_at < 10.0  # not the grace of 20 s
    assert not any(alive(pid) for pid in pids)
    # The streams were on both workers, and each worker stopped gracefully.
    assert pids_that_answered(server, "/patterns.events.v1.Events/Subscribe") == set(pids)
    assert server.log.count("drains its calls") == 1
    stopped = [json.loads(line) for line in server.log_lines if '"message": "stopped"' in line]
    assert sorted(int(str(entry["pid"])) for entry in stopped if "pid" in entry) == sorted(pids)
    eventually(lambda: json.loads(server.log_lines[-1]).get("message") == "stopped")
    assert "pid" not in json.loads(server.log_lines[-1])  # the supervisor's, last


def test_every_worker_answers_health_for_itself(own_redis: RedisServer) -> None:
    """Redis gone: no worker says SERVING, wherever the check lands; back: all do."""
    server = PatternsServer(own_redis.url, workers=2).start()
    try:
        eventually(lambda: statuses(server.address) == {SERVING}, what="every worker serving")
        own_redis.stop()
        eventually(lambda: statuses(server.address) == {NOT_SERVING}, what="none serving")
        own_redis.start()
        eventually(lambda: statuses(server.address) == {SERVING}, what="every worker again")
    finally:
        assert server.stop() == 0


@on_redis7_and_cluster
def test_workers_stop_when_their_supervisor_is_killed(
    two_workers: PatternsServer, new_key: Callable[[], str]
) -> None:
    """No orphan keeps the port: each worker stops (gracefully) once the supervisor is
    gone, however it died, and the port is free again."""
    server = two_workers
    pids = server.worker_pids()
    os.kill(server.pid, signal.SIGKILL)
    eventually(lambda: not any(alive(pid) for pid in pids), what="the workers to exit")
    assert server.log.count("the supervisor is gone: stopping") == 2
    again = PatternsServer(server.args[server.args.index("--redis-url") + 1])
    again.args[again.args.index("--listen") + 1] = server.address
    again.start()
    try:
        count_on_own_channels(again.address, new_key(), calls=1)
    finally:
        assert again.stop() == 0


@on_redis7_and_cluster
def test_sighup_reaches_every_worker(backend_url: str, tmp_path: Path) -> None:
    auth = tmp_path / "tenants.toml"
    auth.write_text(f'[[tenant]]\nname = "a"\nnamespace = "a"\nkeys = ["{new_token()[1]}"]\n')
    server = workers(backend_url, "--auth-file", str(auth))
    try:
        pids = server.worker_pids()
        server.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]

        def reloaded() -> set[int]:
            entries = [json.loads(line) for line in list(server.log_lines) if '"pid"' in line]
            return {
                int(str(entry["pid"]))
                for entry in entries
                if str(entry["message"]).startswith("auth file reloaded")
            }

        eventually(lambda: reloaded() == set(pids), what="each worker to read the file again")
    finally:
        assert server.stop() == 0


@on_redis7_and_cluster
def test_metrics_add_up_across_workers(backend_url: str, new_key: Callable[[], str]) -> None:
    """One endpoint, served by the supervisor: the sum of both workers' counts, which a
    worker's death does not take back; the process_ metrics of each process."""
    server = workers(backend_url, "--metrics-listen", "127.0.0.1:0")
    try:
        match = re.search(r"metrics on http://([\d.]+:\d+)/metrics", server.log)
        assert match
        url = f"http://{match.group(1)}/metrics"

        def rpcs() -> float:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    labels = sample.labels
                    if (
                        sample.name == "patterns_rpcs_total"
                        and labels.get("method") == "Count"
                        and labels.get("code") == "OK"
                    ):
                        return float(sample.value)
            return 0.0

        key = new_key()
        count_on_own_channels(server.address, key)
        assert len(pids_that_answered(server, COUNT)) == 2  # both counted some
        assert rpcs() == CHANNELS
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for worker in ("supervisor", "1", "2"):
            assert f'process_resident_memory_bytes{{worker="{worker}"}}' in text
        os.kill(server.worker_pids()[0], signal.SIGKILL)
        server.wait_for_log("started again")
        count_on_own_channels(server.address, key, calls=1)
        assert rpcs() == CHANNELS + 1
    finally:
        assert server.stop() == 0


on_redis7 = pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)


@on_redis7
def test_workers_auto_is_the_number_of_usable_cores(backend_url: str) -> None:
    cores = len(os.sched_getaffinity(0))
    assert usable_cores() == cores
    assert load_settings(["--workers", "auto"]).workers == cores
    assert load_settings([], {"PATTERNS_WORKERS": "auto"}).workers == cores
    server = workers(backend_url, count="auto")
    try:
        if cores > 1:
            assert f"with {cores} workers" in server.log
        assert len(server.worker_pids()) == (cores if cores > 1 else 0)
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("flags", "env", "says"),
    [
        (["--workers", "0"], {}, "workers must be at least 1 (or auto), not 0"),
        (["--workers", "-1"], {}, "workers must be at least 1 (or auto), not -1"),
        (["--workers", "x"], {}, "not a number of workers: 'x'"),
        ([], {"PATTERNS_WORKERS": "1.5"}, "not a number of workers: '1.5'"),
    ],
)
def test_a_bad_number_of_workers_is_a_clear_error(
    flags: list[str], env: dict[str, str], says: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "patterns_server", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert result.returncode == 2
    assert f"error: argument --workers: {says}" in result.stderr
    assert "Traceback" not in result.stderr


@on_redis7
def test_a_setting_that_cannot_serve_fails_once_and_the_supervisor_exits_1(
    backend_url: str, tmp_path: Path
) -> None:
    """The first worker starts alone: its error is logged once, not by every worker."""
    broken = tmp_path / "tenants.toml"
    broken.write_text("[[tenant]\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "patterns_server",
            "--workers",
            "3",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            backend_url,
            "--auth-file",
            str(broken),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("not valid TOML") == 1
    assert (
        "worker 1 (pid " in result.stderr
        and "did not start: it exited with code 1" in result.stderr
    )
    assert "Traceback" not in result.stderr and "worker 2" not in result.stderr


@on_redis7
def test_workers_on_a_busy_port_fail_at_start(two_workers: PatternsServer) -> None:
    """As one server does: a port already served is not shared, not even with another
    server of workers (whose sockets would let it)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "patterns_server",
            "--workers",
            "2",
            "--listen",
            two_workers.address,
            "--redis-url",
            "redis://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"cannot listen on {two_workers.address}" in result.stderr
    assert "Traceback" not in result.stderr
