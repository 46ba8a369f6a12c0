"""The same configuration and the same requests, sent to envoyproxy/ratelimit (built from
source with `go install`, on a Redis of its own) and to patterns-server: the same decisions,
for fixed windows.

The sequence keeps to what both count alike: hits that fit in what is left, and after a
refusal only single hits (envoyproxy/ratelimit counts refused hits too, patterns-server does
not: a larger hits_addend after a refusal would be decided differently, as docs/envoy.md
says). Needs Go and the Go module proxy: without them the test is skipped, with the reason
(under CI=true it fails instead)."""

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common
from envoy.service.ratelimit.v3 import rls_pb2 as pb
from envoy.service.ratelimit.v3 import rls_pb2_grpc

from devtools.processes import PatternsServer, RedisServer, free_port
from tests.conftest import on_ci, redis_server_binary, require_tool

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
# envoyproxy/ratelimit at a commit of January 2026, as the Go module proxy has it.
RATELIMIT = "github.com/envoyproxy/ratelimit/src/service_cmd@v1.4.1-0.20260122083618-3fb702589d36"
BUILT = ROOT / ".tools" / "envoyproxy-ratelimit"

CONFIG = """
domain: compare
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: path
    value: /api/login
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: path
    value: /api/*
    rate_limit: {unit: hour, requests_per_unit: 4}
  - key: path
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: tenant
    descriptors:
      - key: plan
        value: free
        rate_limit: {unit: hour, requests_per_unit: 1}
      - key: plan
        rate_limit: {unit: hour, requests_per_unit: 2}
  - key: health
    rate_limit: {unlimited: true}
  - key: bot
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: premium
    rate_limit: {unit: hour, requests_per_unit: 2, name: premium, replaces: [{name: basic}]}
  - key: basic
    rate_limit: {unit: hour, requests_per_unit: 1, name: basic}
"""


@pytest.fixture(scope="module")
def envoyproxy_ratelimit() -> Path:
    """envoyproxy/ratelimit's server, built once (kept in .tools/ for later runs)."""
    go = require_tool("go")
    binary = BUILT / "service_cmd"
    stamp = BUILT / "version"
    if binary.exists() and stamp.exists() and stamp.read_text() == RATELIMIT:
        return binary
    BUILT.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [go, "install", RATELIMIT],
        env={**os.environ, "GOBIN": str(BUILT), "GOFLAGS": ""},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        reason = f"envoyproxy/ratelimit could not be built: {result.stderr.strip()[-500:]}"
        if on_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    stamp.write_text(RATELIMIT)
    return binary


@pytest.fixture
def theirs(
    envoyproxy_ratelimit: Path, tmp_path: Path
) -> Iterator[rls_pb2_grpc.RateLimitServiceStub]:
    """envoyproxy/ratelimit on a Redis of its own, with CONFIG (RUNTIME_ROOT layout)."""
    redis = RedisServer(tmp_path / "their-redis", redis_server_binary())
    redis.start()
    config = tmp_path / "runtime" / "ratelimit" / "config"
    config.mkdir(parents=True)
    (config / "compare.yaml").write_text(CONFIG)
    port = free_port()
    env = {
        **os.environ,
        "RUNTIME_ROOT": str(tmp_path / "runtime"),
        "RUNTIME_SUBDIRECTORY": "ratelimit",
        "RUNTIME_WATCH_ROOT": "false",
        "USE_STATSD": "false",
        "LOG_LEVEL": "warn",
        "REDIS_SOCKET_TYPE": "tcp",
        "REDIS_URL": f"127.0.0.1:{redis.port}",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "DEBUG_HOST": "127.0.0.1",
        "DEBUG_PORT": str(free_port()),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
    }
    log = (tmp_path / "ratelimit.log").open("w")
    process = subprocess.Popen([str(envoyproxy_ratelimit)], env=env, stdout=log, stderr=log)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=30)
            except grpc.FutureTimeoutError:
                printed = (tmp_path / "ratelimit.log").read_text()
                pytest.fail(f"envoyproxy/ratelimit did not start: {printed}")
            yield rls_pb2_grpc.RateLimitServiceStub(channel)
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        redis.stop()


@pytest.fixture
def ours(
    server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path
) -> Iterator[rls_pb2_grpc.RateLimitServiceStub]:
    path = tmp_path / "ours.yaml"
    path.write_text(CONFIG)
    server = server_on_own_redis("--envoy-config", str(path))
    with grpc.insecure_channel(server.address) as channel:
        yield rls_pb2_grpc.RateLimitServiceStub(channel)


def request(*descriptors: list[tuple[str, str]], hits: int = 0) -> pb.RateLimitRequest:
    return pb.RateLimitRequest(
        domain="compare",
        hits_addend=hits,
        descriptors=[
            common.RateLimitDescriptor(
                entries=[common.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
            )
            for entries in descriptors
        ],
    )


def sequence() -> list[pb.RateLimitRequest]:
    """Requests for fresh counters (the same names for both servers, each on its Redis)."""
    user, tenant, other, bot, member = (uuid.uuid4().hex for _ in range(5))
    return [
        *[request([("user", user)]) for _ in range(5)],
        request([("user", other)], hits=2),
        request([("user", other)]),
        request([("user", other)]),
        *[request([("path", "/api/login")], [("path", f"/api/{user}")]) for _ in range(5)],
        *[request([("path", f"/{user}")]) for _ in range(6)],
        *[request([("tenant", tenant), ("plan", "free")]) for _ in range(2)],
        *[request([("tenant", tenant), ("plan", "gold")]) for _ in range(3)],
        request([("tenant", tenant)]),  # no limit at that depth
        request([("user", user), ("path", "/")]),  # deeper than any limit
        request([("health", "x")], [("unknown", "y")]),
        *[request([("bot", bot)]) for _ in range(3)],  # shadow mode
        *[request([("basic", member)]) for _ in range(2)],
        request([("premium", member)], [("basic", member)]),  # basic replaced
        request([("user", uuid.uuid4().hex)], [("user", user)]),  # one over, one not
    ]


def decisions(response: pb.RateLimitResponse) -> tuple[object, ...]:
    """What both must agree on: the codes, the limits and what remains (the times to reset
    differ in precision: whole seconds there, microseconds here)."""
    return (
        pb.RateLimitResponse.Code.Name(response.overall_code),
        [
            (
                pb.RateLimitResponse.Code.Name(status.code),
                status.current_limit.requests_per_unit,
                pb.RateLimitResponse.RateLimit.Unit.Name(status.current_limit.unit),
                status.current_limit.name,
                status.limit_remaining,
            )
            for status in response.statuses
        ],
    )


def wait_for_a_calm_hour() -> None:
    """Both count in clock hours: no hour may end during the sequence (at most a minute's
    wait, when the test starts in the last one of an hour)."""
    while 3_600 - time.time() % 3_600 < 60:
        time.sleep(1)


def test_the_same_requests_get_the_same_decisions(
    theirs: rls_pb2_grpc.RateLimitServiceStub, ours: rls_pb2_grpc.RateLimitServiceStub
) -> None:
    wait_for_a_calm_hour()
    for number, each in enumerate(sequence()):
        expected = decisions(theirs.ShouldRateLimit(each, timeout=10))
        got = decisions(ours.ShouldRateLimit(each, timeout=10))
        assert got == expected, f"request {number}: {each}"
