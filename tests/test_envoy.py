"""Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`)
against a real server and Redis (standalone 7, 6.2, Cluster), through the stubs generated
from the vendored Envoy protos: matching, hits_addend, statuses, shadow mode, unlimited,
replaces, the algorithms, the headers, the keys' namespace, reloads and Redis failures."""

import json
import signal
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common
from envoy.service.ratelimit.v3 import rls_pb2 as pb
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from google.protobuf.wrappers_pb2 import UInt64Value
from patterns.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from patterns_server.runtime.auth import new_token
from tests.conftest import windows_of
from tests.rpc import (
    assert_invalid,
    assert_unavailable,
    bearer,
    details,
    grpcurl_call,
    rpc_error,
)
from tests.tenants import Tenant, write_auth_file

on_three_backends = pytest.mark.parametrize(
    "backend_url", ["redis7", "redis6.2", "cluster"], indirect=True
)
OK = pb.RateLimitResponse.OK
OVER_LIMIT = pb.RateLimitResponse.OVER_LIMIT
HOUR = pb.RateLimitResponse.RateLimit.HOUR
MAX_UINT32 = 2**32 - 1
SHOULD_RATE_LIMIT = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

# Every limit here counts in windows of `hour * {m}`: m is chosen at start so that the
# current window has at least 20 minutes left (windows start at multiples of their length on
# the Redis clock, so a plain hour would put a test at whatever point of it the time says).
CONFIG = """
domain: test
descriptors:
  - key: user
    rate_limit: {{unit: hour, unit_multiplier: {m}, requests_per_unit: 3}}
  - key: path
    value: /api/*
    rate_limit: {{unit: hour, unit_multiplier: {m}, requests_per_unit: 10}}
  - key: path
    value: /api/login
    rate_limit: {{unit: hour, unit_multiplier: {m}, requests_per_unit: 5}}
  - key: path
    rate_limit: {{unit: hour, unit_multiplier: {m}, requests_per_unit: 1000}}
  - key: shadow
    shadow_mode: true
    rate_limit: {{unit: hour, unit_multiplier: {m}, requests_per_unit: 1}}
  - key: free
    rate_limit: {{unlimited: true}}
  - key: closed
    rate_limit: {{unit: hour, requests_per_unit: 0}}
  - key: watched
    shadow_mode: true
    rate_limit: {{unit: hour, requests_per_unit: 0}}
  - key: premium
    rate_limit:
      unit: hour
      unit_multiplier: {m}
      requests_per_unit: 100
      name: premium
      replaces: [{{name: basic}}]
  - key: basic
    rate_limit: {{unit: hour, unit_multiplier: {m}, requests_per_unit: 1, name: basic}}
  - key: tenant
    descriptors:
      - key: plan
        rate_limit: {{unit: hour, unit_multiplier: {m}, requests_per_unit: 2}}
  - key: bucket
    rate_limit:
      unit: hour
      unit_multiplier: {m}
      requests_per_unit: 2
      algorithm: token_bucket
  - key: gcra
    rate_limit: {{unit: hour, unit_multiplier: {m}, requests_per_unit: 2, algorithm: gcra}}
"""


def calm_multiplier(now_us: int, at_least_left_s: int = 20 * 60) -> int:
    """The least m such that the window of `hour * m` holding now has enough time left."""
    now = now_us // 1_000_000
    for m in range(1, 100):
        period = 3_600 * m
        if period - now % period >= at_least_left_s and now % period >= 1:
            return m
    raise AssertionError("no multiplier of an hour leaves the window calm")


def write_config(directory: Path, url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "test.yaml"
    path.write_text(CONFIG.format(m=calm_multiplier(windows_of(url).now_us())))
    return path


@pytest.fixture(scope="module")
def envoy_server(
    backend_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PatternsServer]:
    """A server with the configuration above, asking for X-RateLimit-* headers."""
    config = write_config(tmp_path_factory.mktemp("envoy"), backend_url)
    server = PatternsServer(
        backend_url,
        "--envoy-config",
        str(config),
        "--envoy-response-headers",
        "x-ratelimit",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rls(envoy_server: PatternsServer) -> Iterator[rls_pb2_grpc.RateLimitServiceStub]:
    with grpc.insecure_channel(envoy_server.address) as channel:
        yield rls_pb2_grpc.RateLimitServiceStub(channel)


def fresh() -> str:
    return uuid.uuid4().hex


def descriptor(*entries: tuple[str, str], **fields: Any) -> common.RateLimitDescriptor:
    return common.RateLimitDescriptor(
        entries=[common.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries], **fields
    )


def ask(
    rls: rls_pb2_grpc.RateLimitServiceStub,
    *descriptors: common.RateLimitDescriptor,
    hits_addend: int = 0,
    domain: str = "test",
) -> pb.RateLimitResponse:
    request = pb.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits_addend)
    response: pb.RateLimitResponse = rls.ShouldRateLimit(request, timeout=10)
    return response


def codes(response: pb.RateLimitResponse) -> list[tuple[int, int]]:
    """(code, limit_remaining) of each descriptor."""
    return [(status.code, status.limit_remaining) for status in response.statuses]


@on_three_backends
def test_a_fixed_window_admits_its_limit_then_refuses(
    rls: rls_pb2_grpc.RateLimitServiceStub,
) -> None:
    user = descriptor(("user", fresh()))
    answers = [ask(rls, user) for _ in range(5)]
    assert [codes(a) for a in answers] == [
        [(OK, 2)],
        [(OK, 1)],
        [(OK, 0)],
        [(OVER_LIMIT, 0)],
        [(OVER_LIMIT, 0)],
    ]
    assert [a.overall_code for a in answers] == [OK, OK, OK, OVER_LIMIT, OVER_LIMIT]
    status = answers[0].statuses[0]
    assert status.current_limit == pb.RateLimitResponse.RateLimit(requests_per_unit=3, unit=HOUR)
    # The window's end, at least 20 minutes away (see calm_multiplier), at most m hours.
    assert 20 * 60 - 60 <= status.duration_until_reset.seconds <= 100 * 3_600


@on_three_backends
def test_the_most_specific_match_decides(rls: rls_pb2_grpc.RateLimitServiceStub) -> None:
    def limit(*entries: tuple[str, str]) -> int | None:
        status = ask(rls, descriptor(*entries)).statuses[0]
        return status.current_limit.requests_per_unit if status.HasField("current_limit") else None

    assert limit(("path", "/api/login")) == 5  # the exact value
    assert limit(("path", f"/api/{fresh()}")) == 10  # the wildcard
    assert limit(("path", f"/{fresh()}")) == 1000  # the key alone
    assert limit(("tenant", fresh()), ("plan", fresh())) == 2  # nested
    assert limit(("tenant", fresh())) is None  # no limit at that depth
    assert limit(("user", fresh()), ("path", "/")) is None  # deeper than any limit
    assert limit(("nothing", "x")) is None
    unknown = ask(rls, descriptor(("user", "x")), domain=f"unknown-{fresh()}")
    assert unknown.overall_code == OK and codes(unknown) == [(OK, 0)]
    assert not unknown.statuses[0].HasField("current_limit")


@on_three_backends
def test_hits_addend_of_the_request_and_of_each_descriptor(
    rls: rls_pb2_grpc.RateLimitServiceStub,
) -> None:
    user = descriptor(("user", fresh()))
    assert codes(ask(rls, user, hits_addend=0)) == [(OK, 2)]  # 0 counts as 1
    assert codes(ask(rls, user, hits_addend=2)) == [(OK, 0)]
    other = fresh()
    # The descriptor's own hits_addend wins over the request's; 0 there checks only.
    assert codes(
        ask(rls, descriptor(("user", other), hits_addend=UInt64Value(value=2)), hits_addend=3)
    ) == [(OK, 1)]
    assert codes(ask(rls, descriptor(("user", other), hits_addend=UInt64Value(value=0)))) == [
        (OK, 1)
    ]
    assert codes(ask(rls, descriptor(("user", other)))) == [(OK, 0)]
    # More hits than the limit can ever admit: over the limit, and nothing counted.
    third = descriptor(("user", fresh()))
    assert codes(ask(rls, third, hits_addend=4)) == [(OVER_LIMIT, 0)]
    assert codes(ask(rls, third, hits_addend=2**32 - 1)) == [(OVER_LIMIT, 0)]
    assert codes(ask(rls, third)) == [(OK, 2)]
    # More than what is left: over the limit, and nothing counted.
    assert codes(ask(rls, third, hits_addend=3)) == [(OVER_LIMIT, 0)]
    assert codes(ask(rls, third, hits_addend=2)) == [(OK, 0)]


@on_three_backends
def test_descriptors_of_one_request_are_decided_together_each_on_its_own(
    rls: rls_pb2_grpc.RateLimitServiceStub,
) -> None:
    full, spare = fresh(), fresh()
    ask(rls, descriptor(("user", full)), hits_addend=3)
    # Keys of many slots (on a Cluster, nodes) in one call; each counts its own hit.
    many = [descriptor(("user", fresh())) for _ in range(20)]
    answer = ask(rls, descriptor(("user", full)), descriptor(("user", spare)), *many)
    assert answer.overall_code == OVER_LIMIT
    assert codes(answer) == [(OVER_LIMIT, 0), (OK, 2)] + [(OK, 2)] * 20
    assert codes(ask(rls, descriptor(("user", spare)))) == [(OK, 1)]  # it was counted


@on_three_backends
def test_shadow_mode_decides_and_counts_but_answers_ok(
    rls: rls_pb2_grpc.RateLimitServiceStub,
) -> None:
    shadow = descriptor(("shadow", fresh()))
    assert codes(ask(rls, shadow)) == [(OK, 0)]
    over = ask(rls, shadow)
    assert over.overall_code == OK and codes(over) == [(OK, 0)]  # over it, yet OK
    assert over.statuses[0].current_limit.requests_per_unit == 1


@on_three_backends
def test_unlimited_zero_and_replaced_limits(rls: rls_pb2_grpc.RateLimitServiceStub) -> None:
    free = ask(rls, descriptor(("free", fresh())))
    assert codes(free) == [(OK, MAX_UINT32)] and not free.statuses[0].HasField("current_limit")
    closed = ask(rls, descriptor(("closed", fresh())))
    assert closed.overall_code == OVER_LIMIT and codes(closed) == [(OVER_LIMIT, 0)]
    watched = ask(rls, descriptor(("watched", fresh())))  # in shadow mode
    assert watched.overall_code == OK and codes(watched) == [(OK, 0)]
    basic = descriptor(("basic", fresh()))
    assert codes(ask(rls, basic)) == [(OK, 0)]
    assert codes(ask(rls, basic)) == [(OVER_LIMIT, 0)]
    # With a premium descriptor beside it, basic's limit is replaced: no limit of its own.
    both = ask(rls, descriptor(("premium", fresh())), basic)
    assert both.overall_code == OK
    assert codes(both) == [(OK, 99), (OK, 0)]
    assert not both.statuses[1].HasField("current_limit")


@on_three_backends
def test_a_limit_given_by_the_descriptor_overrides_the_configuration(
    rls: rls_pb2_grpc.RateLimitServiceStub,
) -> None:
    hour = common.RateLimitDescriptor.RateLimitOverride  # envoy.type.v3.RateLimitUnit.HOUR
    override = hour(requests_per_unit=1, unit="HOUR")
    user = descriptor(("user", fresh()), limit=override)
    first = ask(rls, user)
    assert codes(first) == [(OK, 0)]
    assert first.statuses[0].current_limit.requests_per_unit == 1
    assert codes(ask(rls, user)) == [(OVER_LIMIT, 0)]
    # Without a unit it overrides nothing; with one Envoy does not know, it is refused.
    unset = descriptor(("user", fresh()), limit=hour(requests_per_unit=1))
    assert codes(ask(rls, unset)) == [(OK, 2)]
    bad = descriptor(("user", fresh()))
    bad.limit.requests_per_unit, bad.limit.unit = 1, 99  # type: ignore[assignment]
    assert_invalid(lambda: ask(rls, bad), "descriptors[0].limit.unit")


@on_three_backends
@pytest.mark.parametrize("kind", ["bucket", "gcra"])
def test_an_algorithm_of_ours_per_limit(rls: rls_pb2_grpc.RateLimitServiceStub, kind: str) -> None:
    key = descriptor((kind, fresh()))
    answers = [ask(rls, key) for _ in range(3)]
    assert [a.overall_code for a in answers] == [OK, OK, OVER_LIMIT]
    assert answers[0].statuses[0].limit_remaining == 1


@on_three_backends
def test_headers_name_the_descriptor_nearest_its_limit(
    rls: rls_pb2_grpc.RateLimitServiceStub,
) -> None:
    answer = ask(rls, descriptor(("path", f"/{fresh()}")), descriptor(("user", fresh())))
    headers = {h.key: h.value for h in answer.response_headers_to_add}
    assert headers["X-RateLimit-Limit"] == "3"
    assert headers["X-RateLimit-Remaining"] == "2"
    reset = answer.statuses[1].duration_until_reset
    assert int(headers["X-RateLimit-Reset"]) == reset.seconds + (reset.nanos > 0)
    only_free = ask(rls, descriptor(("free", fresh())))
    assert list(only_free.response_headers_to_add) == []


@on_three_backends
def test_requests_that_cannot_be_decided_are_invalid(
    rls: rls_pb2_grpc.RateLimitServiceStub,
) -> None:
    user = descriptor(("user", fresh()))
    assert_invalid(lambda: ask(rls, user, domain=""), "domain")
    assert_invalid(lambda: ask(rls), "descriptors")
    assert_invalid(lambda: ask(rls, user, descriptor()), "descriptors[1].entries")
    assert_invalid(lambda: ask(rls, *[user] * 1_001), "descriptors")


@on_three_backends
def test_counters_live_in_their_own_namespace(
    rls: rls_pb2_grpc.RateLimitServiceStub,
    envoy_server: PatternsServer,
    backend_redis: redis.Redis,
) -> None:
    user = fresh()
    ask(rls, descriptor(("user", user)))
    keys = [k.decode() for k in backend_redis.scan_iter(match=f"*{user}*", count=1_000)]
    assert len(keys) == 1
    assert keys[0].startswith('patterns:default:envoy:{["test",["user","' + user + '"]]}:')
    # RateLimiter's key of the same name is another key: the two never share a count.
    with grpc.insecure_channel(envoy_server.address) as channel:
        limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
        policy = ratelimit_pb2.Policy(
            algorithm=ratelimit_pb2.ALGORITHM_FIXED_WINDOW, limit=1, period={"seconds": 3600}
        )
        name = json.dumps(["test", ["user", user]], separators=(",", ":"))
        assert limiter.Check(ratelimit_pb2.CheckRequest(key=name, policy=policy)).allowed
    assert codes(ask(rls, descriptor(("user", user)))) == [(OK, 1)]


@pytest.mark.parametrize("backend_url", ["redis7", "cluster"], indirect=True)
def test_each_tenant_counts_in_its_own_namespace(
    backend_url: str, tmp_path: Path, backend_redis: redis.Redis
) -> None:
    """Envoy sends a tenant's key in its grpc_service's initial_metadata."""
    alpha = Tenant("alpha", "envoy-alpha", *new_token())
    beta = Tenant("beta", "envoy-beta", *new_token())
    auth = write_auth_file(tmp_path / "tenants.toml", [alpha, beta])
    config = write_config(tmp_path / "envoy", backend_url)
    server = PatternsServer(
        backend_url, "--auth-file", str(auth), "--envoy-config", str(config)
    ).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            rls = rls_pb2_grpc.RateLimitServiceStub(channel)
            user = fresh()
            request = pb.RateLimitRequest(
                domain="test", descriptors=[descriptor(("user", user))], hits_addend=3
            )
            for tenant in (alpha, beta):  # each its own full count
                answer = rls.ShouldRateLimit(request, metadata=bearer(tenant), timeout=10)
                assert codes(answer) == [(OK, 0)]
            error = rpc_error(lambda: rls.ShouldRateLimit(request, timeout=10))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        keys = sorted(k.decode() for k in backend_redis.scan_iter(match=f"*{user}*", count=1_000))
        assert [key.split(":")[1:3] for key in keys] == [
            ["envoy-alpha", "envoy"],
            ["envoy-beta", "envoy"],
        ]
    finally:
        server.stop()


def test_without_a_configuration_every_descriptor_is_under_no_limit(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    server = server_on_own_redis()
    with grpc.insecure_channel(server.address) as channel:
        answer = ask(rls_pb2_grpc.RateLimitServiceStub(channel), descriptor(("user", fresh())))
    assert answer.overall_code == OK and codes(answer) == [(OK, 0)]
    assert list(answer.response_headers_to_add) == []  # not asked for


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_grpcurl_finds_the_service_by_reflection(
    grpcurl_path: str, envoy_server: PatternsServer
) -> None:
    user = fresh()
    data = {"domain": "test", "descriptors": [{"entries": [{"key": "user", "value": user}]}]}
    answer = grpcurl_call(grpcurl_path, envoy_server, SHOULD_RATE_LIMIT, data)
    assert answer["overallCode"] == "OK"
    assert answer["statuses"][0]["limitRemaining"] == 2
    assert answer["statuses"][0]["currentLimit"] == {"requestsPerUnit": 3, "unit": "HOUR"}


# Reloads and failures, each on a server of its own.


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def limit_now(address: str, key: str) -> int | None:
    with grpc.insecure_channel(address) as channel:
        status = ask(rls_pb2_grpc.RateLimitServiceStub(channel), descriptor((key, fresh())))
    return status.statuses[0].current_limit.requests_per_unit or None


def test_a_changed_file_is_reloaded_and_a_bad_one_keeps_the_last_good(
    server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "domain: test\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 5}}]\n"
    )
    server = server_on_own_redis("--envoy-config", str(tmp_path))
    assert limit_now(server.address, "k") == 5
    path.write_text(
        "domain: test\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 6}}]\n"
    )
    wait_until(lambda: limit_now(server.address, "k") == 6, "the change taken")
    path.write_text(
        textwrap.dedent("""\
        domain: test
        descriptors:
          - key: k
            rate_limit: {unit: hour, requests_per_unit: 7, algorithm: leaky}
        """)
    )
    server.wait_for_log(
        f"the previous version stays in force: {path}: line 4: unknown algorithm", timeout=20
    )
    assert limit_now(server.address, "k") == 6
    # SIGHUP reads it at once (the watch would too, later).
    path.write_text(
        "domain: test\ndescriptors: [{key: j, rate_limit: {unit: hour, requests_per_unit: 8}}]\n"
    )
    server.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_until(lambda: limit_now(server.address, "j") == 8, "SIGHUP's reload")


def test_a_bad_file_at_start_stops_the_server(own_redis: RedisServer, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("domain: test\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n")
    server = PatternsServer(own_redis.url, "--envoy-config", str(path))
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()
    assert server.wait() == 1
    assert f"{path}: line 4: invalid rate limit unit 'fortnight'" in server.log


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_frozen_redis_is_answered_within_the_deadline(
    server_on_own_redis: Callable[..., PatternsServer],
    own_redis: RedisServer,
    tmp_path: Path,
    mode: str,
) -> None:
    """Envoy's filter waits 20 ms by default: the answer comes before its deadline, an
    error failing closed (Envoy applies failure_mode_deny), OK failing open."""
    path = write_config(tmp_path, own_redis.url)
    server = server_on_own_redis(
        "--envoy-config", str(path), "--ratelimit-failure-mode", mode, "--redis-timeout", "30"
    )
    with grpc.insecure_channel(server.address) as channel:
        rls = rls_pb2_grpc.RateLimitServiceStub(channel)
        request = pb.RateLimitRequest(domain="test", descriptors=[descriptor(("user", fresh()))])
        assert rls.ShouldRateLimit(request, timeout=10).overall_code == OK
        own_redis.freeze()
        try:
            started = time.monotonic()
            if mode == "closed":
                error = rpc_error(lambda: rls.ShouldRateLimit(request, timeout=2))
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                assert details(error)["ErrorInfo"].reason == "REDIS_TIMEOUT"
            else:
                answer = rls.ShouldRateLimit(request, timeout=2)
                assert answer.overall_code == OK
                assert codes(answer) == [(OK, 2)]
            assert time.monotonic() - started < 5  # not --redis-timeout's 30 s
        finally:
            own_redis.thaw()


def test_a_stopped_redis_fails_closed(
    server_on_own_redis: Callable[..., PatternsServer], own_redis: RedisServer, tmp_path: Path
) -> None:
    path = write_config(tmp_path, own_redis.url)
    server = server_on_own_redis("--envoy-config", str(path))
    own_redis.stop()
    with grpc.insecure_channel(server.address) as channel:
        rls = rls_pb2_grpc.RateLimitServiceStub(channel)
        request = pb.RateLimitRequest(domain="test", descriptors=[descriptor(("user", fresh()))])
        assert_unavailable(lambda: rls.ShouldRateLimit(request, timeout=10))
