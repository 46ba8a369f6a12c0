"""Authentication: API keys in, tenants out. Who may call what, each tenant's share of the
limits, the auth file read again while the server runs (and kept when a new version is
bad), reflection's modes, and the key maker."""

import asyncio
import functools
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc
from patterns.events.v1 import events_pb2, events_pb2_grpc
from patterns.lock.v1 import lock_pb2, lock_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from patterns_server.runtime.auth import digest_of, new_token
from tests.rpc import bearer, details, retry_delay, rpc_error
from tests.tenants import Tenant, write_auth_file
from tests.waiting import eventually

COUNTER = "patterns.counter.v1.UniqueCounter"
ALPHA = Tenant("alpha", "alpha", *new_token())
BETA = Tenant("beta", "beta", *new_token())
COUNTING_ONLY = Tenant("counting", "counting", *new_token(), extra=[f'services = ["{COUNTER}"]'])


def count(channel: grpc.Channel, *metadata: tuple[str, str]) -> int:
    request = counter_pb2.CountRequest(keys=["anything"])
    return int(counter_pb2_grpc.UniqueCounterStub(channel).Count(request, metadata=metadata).count)


def serving(health: health_pb2_grpc.HealthStub) -> bool:
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    error = rpc_error(call)
    return error.code(), details(error)["ErrorInfo"].reason


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    return write_auth_file(tmp_path / "tenants.toml", [ALPHA, BETA, COUNTING_ONLY])


@pytest.fixture
def guarded(server_on_own_redis: Callable[..., PatternsServer], auth_file: Path) -> PatternsServer:
    return server_on_own_redis("--auth-file", str(auth_file))


# Who may call


def test_a_call_needs_a_key_the_auth_file_knows(guarded: PatternsServer) -> None:
    with grpc.insecure_channel(guarded.address) as channel:
        assert count(channel, *bearer(ALPHA)) == 0
        assert refusal(lambda: count(channel)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "MISSING_CREDENTIALS",
        )
        unknown = ("authorization", f"Bearer {new_token()[0]}")
        assert refusal(lambda: count(channel, unknown)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_API_KEY",
        )
        not_bearer = ("authorization", f"Basic {ALPHA.token}")
        assert refusal(lambda: count(channel, not_bearer)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_API_KEY",
        )
        lowercase = ("authorization", f"bearer {ALPHA.token}")  # the scheme is case-blind
        assert count(channel, lowercase) == 0


def test_a_tenant_calls_only_the_services_it_has(guarded: PatternsServer) -> None:
    with grpc.insecure_channel(guarded.address) as channel:
        assert count(channel, *bearer(COUNTING_ONLY)) == 0
        acquire = lock_pb2.AcquireRequest(name="job", ttl=Duration(seconds=5))
        locker = lock_pb2_grpc.LockerStub(channel)
        code, reason = refusal(lambda: locker.Acquire(acquire, metadata=bearer(COUNTING_ONLY)))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_NOT_ALLOWED")
        assert locker.Acquire(acquire, metadata=bearer(ALPHA)).acquired


def test_health_stays_open_and_reflection_follows_its_setting(
    server_on_own_redis: Callable[..., PatternsServer], auth_file: Path, grpcurl_path: str
) -> None:
    def grpcurl(server: PatternsServer, *args: str) -> subprocess.CompletedProcess[str]:
        command = [grpcurl_path, "-plaintext", *args, server.address, "list"]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    on = server_on_own_redis("--auth-file", str(auth_file))
    off = server_on_own_redis("--auth-file", str(auth_file), "--reflection", "off")
    gated = server_on_own_redis("--auth-file", str(auth_file), "--reflection", "authenticated")
    for server in (on, off, gated):  # no key needed
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            eventually(functools.partial(serving, health))
    assert COUNTER in grpcurl(on).stdout
    assert "does not support the reflection API" in grpcurl(off).stderr
    assert "Unauthenticated" in grpcurl(gated).stderr
    assert COUNTER in grpcurl(gated, "-H", f"authorization: Bearer {ALPHA.token}").stdout


# Each tenant's share of the limits


def test_a_tenant_beyond_its_share_of_calls_is_refused_and_the_others_are_not(
    server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path
) -> None:
    """Two calls of the tenant wait for a lock (each holds a place); its third call is
    refused at once, TENANT_OVERLOADED with a RetryInfo; another tenant's is served."""
    small = replace(ALPHA, extra=["max_concurrent_rpcs = 2"])
    server = server_on_own_redis(
        "--auth-file", str(write_auth_file(tmp_path / "a.toml", [small, BETA]))
    )

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            locker = lock_pb2_grpc.LockerStub(channel)
            hold = lock_pb2.AcquireRequest(name="busy", ttl=Duration(seconds=30))
            assert (await locker.Acquire(hold, metadata=bearer(small))).acquired
            wait = lock_pb2.AcquireRequest(
                name="busy", ttl=Duration(seconds=30), wait_timeout=Duration(seconds=20)
            )
            waiting = [
                asyncio.ensure_future(locker.Acquire(wait, metadata=bearer(small), timeout=30))
                for _ in range(2)
            ]
            await asyncio.sleep(0.5)  # both are in the server, waiting
            counter = counter_pb2_grpc.UniqueCounterStub(channel)
            request = counter_pb2.CountRequest(keys=["k"])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await counter.Count(request, metadata=bearer(small), timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details(refused.value)["ErrorInfo"].reason == "TENANT_OVERLOADED"
            assert retry_delay(refused.value) == 0.25
            assert (await counter.Count(request, metadata=bearer(BETA), timeout=10)).count == 0
            for call in waiting:
                call.cancel()

    asyncio.run(scenario())


def test_a_tenant_beyond_its_share_of_streams_is_refused(
    server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path
) -> None:
    small = replace(ALPHA, extra=["max_streams = 1"])
    server = server_on_own_redis(
        "--auth-file", str(write_auth_file(tmp_path / "a.toml", [small, BETA]))
    )

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            events = events_pb2_grpc.EventsStub(channel)
            request = events_pb2.SubscribeRequest(channels=["news"])
            first = events.Subscribe(request, metadata=bearer(small), timeout=30)
            assert (await first.read()).WhichOneof("kind") == "subscribed"
            second = events.Subscribe(request, metadata=bearer(small), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await second.read()
            assert details(refused.value)["ErrorInfo"].reason == "TENANT_OVERLOADED"
            other = events.Subscribe(request, metadata=bearer(BETA), timeout=30)
            assert (await other.read()).WhichOneof("kind") == "subscribed"
            first.cancel()
            other.cancel()

    asyncio.run(scenario())


# The auth file, read again while the server runs


def test_a_new_auth_file_is_in_force_on_sighup_and_revokes_what_it_removed(
    guarded: PatternsServer, auth_file: Path
) -> None:
    """Key rotation: Alpha gets a second key beside its first, Beta is removed. On SIGHUP
    the new key works at once, Beta's calls are refused, and Beta's open stream ends
    UNAUTHENTICATED (CREDENTIALS_REVOKED); the connection stays up for the others."""
    rotated_token, rotated_digest = new_token()
    rotated = replace(ALPHA, more_keys=[rotated_digest])

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(guarded.address) as channel:
            events = events_pb2_grpc.EventsStub(channel)
            stream = events.Subscribe(
                events_pb2.SubscribeRequest(channels=["news"]), metadata=bearer(BETA), timeout=30
            )
            assert (await stream.read()).WhichOneof("kind") == "subscribed"
            write_auth_file(auth_file, [rotated, COUNTING_ONLY])
            assert guarded.process is not None
            guarded.process.send_signal(signal.SIGHUP)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await stream.read()
            assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert details(ended.value)["ErrorInfo"].reason == "CREDENTIALS_REVOKED"
            counter = counter_pb2_grpc.UniqueCounterStub(channel)
            request = counter_pb2.CountRequest(keys=["k"])
            new_key = (("authorization", f"Bearer {rotated_token}"),)
            assert (await counter.Count(request, metadata=new_key, timeout=10)).count == 0
            assert (await counter.Count(request, metadata=bearer(ALPHA), timeout=10)).count == 0
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await counter.Count(request, metadata=bearer(BETA), timeout=10)
            assert details(refused.value)["ErrorInfo"].reason == "INVALID_API_KEY"

    asyncio.run(scenario())
    assert "ended 1 streams whose credentials were revoked" in guarded.log


def test_a_changed_auth_file_is_read_without_a_signal(
    guarded: PatternsServer, auth_file: Path
) -> None:
    gamma = Tenant("gamma", "gamma", *new_token())
    write_auth_file(auth_file, [ALPHA, gamma])
    with grpc.insecure_channel(guarded.address) as channel:
        eventually(lambda: _answers(channel, gamma), within=15)
        assert refusal(lambda: count(channel, *bearer(BETA)))[1] == "INVALID_API_KEY"


def test_a_bad_auth_file_leaves_the_last_good_one_in_force_and_says_why(
    guarded: PatternsServer, auth_file: Path
) -> None:
    good = auth_file.read_text()
    auth_file.write_text(good + '\n[[tenant]]\nname = "bad"\nnamespace = "Not Valid!"\nkeys = []\n')
    assert guarded.process is not None
    guarded.process.send_signal(signal.SIGHUP)
    line = good.count("\n") + 4  # the namespace line of the table added
    guarded.wait_for_log("auth file not reloaded")
    assert re.search(rf"line {line}, tenant #4, namespace: must be 1 to 64", guarded.log)
    with grpc.insecure_channel(guarded.address) as channel:
        assert count(channel, *bearer(BETA)) == 0  # the old file is still in force


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[[tenant]]\nname = 'a'\nnamespace = 'a'\nkeys = ['abc']\n", "line 4, tenant #1, keys"),
        ("[[tenant]]\nname = 'a'\nnamespace = 'a'\nkey = 'x'\n", "line 4, tenant #1, key: unknown"),
        ("[[tenant]\n", "not valid TOML"),
        (
            f"[[tenant]]\nname='a'\nnamespace='a'\nkeys=['{'0' * 64}']\n"
            f"[[tenant]]\nname='b'\nnamespace='a'\nkeys=['{'1' * 64}']\n",
            "line 7, tenant #2, namespace: 'a' is another's",
        ),
        (
            f"[[tenant]]\nname='a'\nnamespace='a'\nkeys=['{'0' * 64}']\nservices=['nope']\n",
            "line 5, tenant #1, services: 'nope' is not one of",
        ),
    ],
)
def test_a_server_refuses_to_start_with_a_bad_auth_file(
    own_redis: RedisServer, tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "patterns_server",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            own_redis.url,
            "--auth-file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1
    assert says in started.stderr


def test_without_an_auth_file_a_public_address_is_warned_about(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    server = server_on_own_redis("--listen", "0.0.0.0:0")
    server.wait_for_log(f"anyone who reaches port {server.port} can read and change every key")


# The key maker


def test_keys_new_prints_a_key_and_the_digest_the_auth_file_holds() -> None:
    made = subprocess.run(
        [sys.executable, "-m", "patterns_server", "keys", "new"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    token = re.search(r"API key .*: (pat_[A-Za-z0-9_-]{43})$", made, re.M)
    digest = re.search(r"digest .*: +([0-9a-f]{64})$", made, re.M)
    assert token and digest and digest_of(token.group(1)) == digest.group(1)


def _answers(channel: grpc.Channel, tenant: Tenant) -> bool:
    try:
        count(channel, *bearer(tenant))
    except grpc.RpcError:
        return False
    return True
