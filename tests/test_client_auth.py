"""patterns_client against servers that have tenants and TLS: the API key on every call
(unary calls and streams, blocking and asyncio), the server's refusals as typed exceptions
with their reasons, a tenant's share of streams treated as an overloaded server's, TLS with
a private CA, mutual TLS and a tenant known by its certificate, and the key nowhere in what
the client prints or raises."""

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.processes import PatternsServer, RedisServer
from patterns_client import (
    TLS,
    Client,
    Event,
    Gap,
    PermissionDenied,
    Policy,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    aio,
)
from patterns_server.runtime.auth import new_token
from tests.certificates import CertificateAuthority, Issued
from tests.conftest import require_tool
from tests.tenants import Tenant, write_auth_file
from tests.waiting import eventually, eventually_async

COUNTER = "patterns.counter.v1.UniqueCounter"
ALPHA = Tenant("alpha", "alpha", *new_token())
BETA = Tenant("beta", "beta", *new_token())
COUNTING_ONLY = Tenant("counting", "counting", *new_token(), extra=[f'services = ["{COUNTER}"]'])
WRONG_KEY = new_token()[0]  # a well-formed key that no auth file holds
ALPHA_SAN = "spiffe://example.org/alpha"
SECONDS = timedelta(seconds=5)


@pytest.fixture(scope="module")
def guarded(
    redis7: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PatternsServer]:
    """A server with an auth file, on the session's Redis 7 (each tenant in a namespace of
    its own, so other suites' keys are out of reach)."""
    auth = tmp_path_factory.mktemp("auth") / "tenants.toml"
    server = PatternsServer(
        redis7.url, "--auth-file", str(write_auth_file(auth, [ALPHA, COUNTING_ONLY]))
    ).start()
    yield server
    server.stop()


def in_a_thread(subscription: Any) -> tuple[list[Any], list[BaseException], threading.Thread]:
    """Reads `subscription` in a thread of its own: what it yields, what it raised."""
    items: list[Any] = []
    raised: list[BaseException] = []

    def read() -> None:
        try:
            items.extend(subscription)
        except Exception as error:
            raised.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return items, raised, reader


def refusal_of(subscription: Any) -> BaseException:
    """What reading `subscription` raised: it must end so, at once, having yielded nothing
    (a refusal that retrying cannot cure is not retried)."""
    items, raised, reader = in_a_thread(subscription)
    reader.join(10)
    assert not reader.is_alive() and not items and len(raised) == 1, (items, raised)
    return raised[0]


def wait_subscribed(subscription: Any, raised: list[BaseException]) -> None:
    """Wait until the server confirms `subscription`; fail at once if it raised instead."""
    eventually(lambda: subscription.subscribed.is_set() or bool(raised))
    assert not raised, raised


def assert_hidden(key: str, *texts: str) -> None:
    """Neither `key` nor a piece of it (past the common "pat_" prefix) is in `texts`."""
    for text in texts:
        assert key not in text and key[4:16] not in text, text


def printed(error: BaseException) -> list[str]:
    """Everything a program might print or log of `error`: its str, repr, traceback (with
    its chain), and the gRPC error it replaced."""
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if error.__context__ is not None:
        texts += [str(error.__context__), repr(error.__context__)]
    return texts


# The blocking client


def test_the_key_goes_with_every_call_and_every_stream(
    guarded: PatternsServer, new_key: Callable[[], str]
) -> None:
    # A key read from a file ends with a newline: the client sends it without.
    with Client(guarded.address, api_key=ALPHA.token + "\n", timeout=10) as client:
        key = new_key()
        assert client.counter.add(key, ["ann", "bob"])
        assert client.counter.count(key) == 2
        with client.locks.hold(key, ttl=SECONDS) as held:  # the Hold stream
            assert held.fencing_token >= 1
        with client.events.subscribe(channels=[key]) as subscription:
            items, raised, reader = in_a_thread(subscription)
            wait_subscribed(subscription, raised)
            assert client.events.publish(key, b"hello") == 1
            eventually(lambda: len(items) == 1)
        reader.join(10)
    (event,) = items
    assert isinstance(event, Event) and event.payload == b"hello"


def test_no_key_or_a_wrong_one_raises_unauthenticated_with_the_reason(
    guarded: PatternsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with Client(guarded.address, timeout=10) as anonymous:
        with pytest.raises(Unauthenticated) as missing:
            anonymous.counter.count("k")
        assert missing.value.reason == "MISSING_CREDENTIALS"
        # A stream is refused the same way, and not tried again: no key will come.
        refused = refusal_of(anonymous.events.subscribe(channels=["news"]))
        assert isinstance(refused, Unauthenticated) and refused.reason == "MISSING_CREDENTIALS"

    with Client(guarded.address, api_key=WRONG_KEY, timeout=10) as client:
        with pytest.raises(Unauthenticated) as invalid:
            client.counter.count("k")
        assert invalid.value.reason == "INVALID_API_KEY"
        with pytest.raises(Unauthenticated) as holding, client.locks.hold("job", ttl=SECONDS):
            pass
        # A wrong key is not an outage: the recipes that fall back while the server is
        # unavailable (fail open, compute directly) raise instead of hiding it.
        policy = Policy.gcra(1, timedelta(minutes=1))

        @client.ratelimit.limited(key=lambda: "k", policy=policy, on_unavailable="allow")
        def guarded_call() -> str:
            return "in"

        with pytest.raises(Unauthenticated):
            guarded_call()
        with pytest.raises(Unauthenticated):
            client.cache.get_or_compute("k", lambda: b"computed")
        assert_hidden(WRONG_KEY, repr(client), *printed(invalid.value), *printed(holding.value))
    assert_hidden(WRONG_KEY, caplog.text)
    assert repr(client) == f"Client({guarded.address!r}, tls=False, api_key=<hidden>)"


def test_a_service_the_tenant_lacks_raises_permission_denied(guarded: PatternsServer) -> None:
    with Client(guarded.address, api_key=COUNTING_ONLY.token, timeout=10) as client:
        assert client.counter.count("k") == 0
        with pytest.raises(PermissionDenied) as denied:
            client.locks.acquire("job", ttl=SECONDS)
        assert denied.value.reason == "SERVICE_NOT_ALLOWED"
        refused = refusal_of(client.events.subscribe(channels=["news"]))
        assert isinstance(refused, PermissionDenied) and refused.reason == "SERVICE_NOT_ALLOWED"


def test_the_key_and_tls_are_checked_before_any_call_and_never_printed() -> None:
    for empty in ("", " \n"):
        with pytest.raises(ValueError, match="empty"):
            Client("localhost:1", api_key=empty)
    with pytest.raises(ValueError, match="printable ASCII") as unprintable:
        Client("localhost:1", api_key=ALPHA.token + "\x00x")
    assert_hidden(ALPHA.token, *printed(unprintable.value))
    with pytest.raises(ValueError, match="not both"):
        Client("localhost:1", api_key=ALPHA.token, metadata=[("authorization", "Bearer x")])
    with pytest.raises(ValueError, match="cert and key go together"):
        TLS(cert="client.pem")
    with pytest.raises(TypeError, match="tls must be"):
        Client("localhost:1", tls="ca.pem")
    with pytest.raises(FileNotFoundError):
        Client("localhost:1", tls=TLS(ca="no-such-ca.pem"))
    with Client("localhost:1") as client:
        assert repr(client) == "Client('localhost:1', tls=False, api_key=None)"
    with Client.over(grpc.insecure_channel("localhost:1"), api_key=ALPHA.token) as client:
        assert repr(client) == "Client.over(<channel>, api_key=<hidden>)"


# The asyncio client


def test_the_asyncio_client_sends_the_key_with_calls_and_streams(
    guarded: PatternsServer, new_key: Callable[[], str]
) -> None:
    async def scenario() -> None:
        key = new_key()
        async with aio.Client(guarded.address, api_key=ALPHA.token, timeout=10) as client:
            assert repr(client) == f"aio.Client({guarded.address!r}, tls=False, api_key=<hidden>)"
            assert await client.counter.add(key, ["ann"])
            assert await client.counter.count(key) == 1
            async with client.events.subscribe(channels=[key]) as subscription:
                reading = asyncio.ensure_future(subscription.__anext__())
                await eventually_async(lambda: subscription.subscribed.is_set() or reading.done())
                assert not reading.done(), reading.exception()
                assert await client.events.publish(key, b"hello") == 1
                event = await asyncio.wait_for(reading, 10)
            assert isinstance(event, Event) and event.payload == b"hello"

        async with aio.Client(guarded.address, timeout=10) as anonymous:
            with pytest.raises(Unauthenticated) as missing:
                await anonymous.counter.count(key)
            assert missing.value.reason == "MISSING_CREDENTIALS"
            subscription = anonymous.events.subscribe(channels=[key])
            with pytest.raises(Unauthenticated) as refused:
                await asyncio.wait_for(subscription.__anext__(), 10)
            assert refused.value.reason == "MISSING_CREDENTIALS"

        async with aio.Client(guarded.address, api_key=WRONG_KEY, timeout=10) as client:
            with pytest.raises(Unauthenticated) as invalid:
                await client.counter.count(key)
            assert invalid.value.reason == "INVALID_API_KEY"
            assert_hidden(WRONG_KEY, repr(client), *printed(invalid.value))

        async with aio.Client(guarded.address, api_key=COUNTING_ONLY.token, timeout=10) as client:
            with pytest.raises(PermissionDenied) as denied:
                await client.locks.acquire("job", ttl=SECONDS)
            assert denied.value.reason == "SERVICE_NOT_ALLOWED"

    asyncio.run(scenario())


# What the client does with the tenant's refusals of streams


def test_a_tenant_at_its_share_of_streams_is_waited_out_as_an_overloaded_server_is(
    server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path
) -> None:
    """With one stream for the tenant, a second subscription is refused TENANT_OVERLOADED:
    like OVERLOADED, it subscribes again after the RetryInfo's wait, until the first
    subscription ends, and then says what it missed with a Gap."""
    one_stream = replace(ALPHA, extra=["max_streams = 1"])
    auth = write_auth_file(tmp_path / "tenants.toml", [one_stream])
    server = server_on_own_redis("--auth-file", str(auth), "--log-level", "debug")
    with Client(server.address, api_key=ALPHA.token, timeout=10) as client:
        first = client.events.subscribe(channels=["news"])
        wait_subscribed(first, in_a_thread(first)[1])
        with client.events.subscribe(channels=["news"]) as second:
            items, raised, _ = in_a_thread(second)
            server.wait_for_log("Subscribe RESOURCE_EXHAUSTED")
            assert not second.subscribed.is_set() and not raised
            first.close()
            assert second.subscribed.wait(10), raised
            client.events.publish("news", b"after")
            eventually(lambda: len(items) == 2)
    gap, event = items
    assert isinstance(gap, Gap) and isinstance(gap.error, ResourceExhausted)
    assert gap.error.reason == "TENANT_OVERLOADED"
    assert gap.error.retry_after == timedelta(milliseconds=250)
    assert isinstance(event, Event) and event.payload == b"after"


def test_a_subscription_whose_key_is_revoked_ends_unauthenticated(
    server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path
) -> None:
    """Not subscribed again with the same key, which would be refused for ever: the
    program learns it must get a new one."""
    auth = write_auth_file(tmp_path / "tenants.toml", [ALPHA, BETA])
    server = server_on_own_redis("--auth-file", str(auth))
    with Client(server.address, api_key=BETA.token, timeout=10) as client:
        subscription = client.events.subscribe(channels=["news"])
        items, raised, reader = in_a_thread(subscription)
        wait_subscribed(subscription, raised)
        write_auth_file(auth, [ALPHA])
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        reader.join(10)
    (revoked,) = raised
    assert isinstance(revoked, Unauthenticated) and revoked.reason == "CREDENTIALS_REVOKED"
    assert not items
    assert_hidden(BETA.token, *printed(revoked))


# TLS


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(require_tool("openssl"), tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_cert(ca: CertificateAuthority) -> Issued:
    return ca.issue("server", "/CN=localhost", ["DNS:localhost", "IP:127.0.0.1"])


@pytest.fixture(scope="module")
def alpha_cert(ca: CertificateAuthority) -> Issued:
    return ca.issue("alpha", "/O=Example/CN=alpha", [f"URI:{ALPHA_SAN}"])


# A call with tls=True, in a process of its own: `python -c DEFAULT_ROOTS_CHECK target`,
# the key in API_KEY (not on a command line, which `ps` shows).
DEFAULT_ROOTS_CHECK = """
import os, sys
from patterns_client import Client

with Client(sys.argv[1], api_key=os.environ["API_KEY"], tls=True, timeout=10) as client:
    print(client.counter.count("visitors"))
"""


def tls_flags(cert: Issued, client_ca: Path | None = None) -> list[str]:
    flags = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
    return flags + (["--tls-client-ca", str(client_ca)] if client_ca else [])


def test_tls_with_a_private_ca_and_a_key(
    server_on_own_redis: Callable[..., PatternsServer],
    ca: CertificateAuthority,
    server_cert: Issued,
    tmp_path: Path,
) -> None:
    auth = write_auth_file(tmp_path / "tenants.toml", [ALPHA])
    server = server_on_own_redis("--auth-file", str(auth), *tls_flags(server_cert))
    target = f"localhost:{server.port}"  # the name the server's certificate carries
    with Client(target, api_key=ALPHA.token, tls=TLS(ca=ca.cert), timeout=10) as client:
        assert client.counter.add("visitors", ["ann"])
        assert repr(client) == f"Client({target!r}, tls=True, api_key=<hidden>)"
    credentials = grpc.ssl_channel_credentials(ca.cert.read_bytes())
    with Client(target, api_key=ALPHA.token, tls=credentials, timeout=10) as client:
        assert client.counter.count("visitors") == 1
    with pytest.warns(DeprecationWarning, match="tls="):
        older = Client(target, api_key=ALPHA.token, credentials=credentials, timeout=10)
    with older:
        assert older.counter.count("visitors") == 1

    async def on_asyncio() -> int:
        async with aio.Client(target, api_key=ALPHA.token, tls=TLS(ca=str(ca.cert))) as client:
            return await client.counter.count("visitors")

    assert asyncio.run(on_asyncio()) == 1
    # tls=True trusts the roots gRPC trusts by default: ones that name the test's CA, in a
    # process of its own (gRPC reads them once a process) ...
    roots = {"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(ca.cert), "API_KEY": ALPHA.token}
    counted = subprocess.run(
        [sys.executable, "-c", DEFAULT_ROOTS_CHECK, target],
        env={**os.environ, **roots},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert counted.stdout == "1\n", counted.stderr
    # ... and here the system's, which never signed this server's certificate. A plaintext
    # client cannot speak to a TLS port.
    for refused in (True, False):
        client = Client(target, api_key=ALPHA.token, tls=refused, timeout=10)
        with client, pytest.raises(Unavailable):
            client.counter.count("visitors")


def test_mutual_tls_and_a_tenant_known_by_its_certificate(
    server_on_own_redis: Callable[..., PatternsServer],
    ca: CertificateAuthority,
    server_cert: Issued,
    alpha_cert: Issued,
    tmp_path: Path,
) -> None:
    """Alpha has a key and a certificate: what a call made with the certificate alone
    writes, a call with Alpha's key reads, and Beta's key (with the same certificate)
    does not."""
    alpha = replace(ALPHA, extra=[f'client_cert_san = "{ALPHA_SAN}"'])
    auth = write_auth_file(tmp_path / "tenants.toml", [alpha, BETA])
    server = server_on_own_redis("--auth-file", str(auth), *tls_flags(server_cert, ca.cert))
    target = f"localhost:{server.port}"
    mutual = TLS(ca=ca.cert, cert=alpha_cert.cert, key=alpha_cert.key)
    with Client(target, tls=mutual, timeout=10) as by_certificate:
        assert by_certificate.counter.add("visitors", ["ann"])
    with Client(target, api_key=ALPHA.token, tls=mutual, timeout=10) as by_key:
        assert by_key.counter.count("visitors") == 1
    with Client(target, api_key=BETA.token, tls=mutual, timeout=10) as other:
        assert other.counter.count("visitors") == 0

    async def on_asyncio() -> int:
        async with aio.Client(target, tls=mutual, timeout=10) as client:
            return await client.counter.count("visitors")

    assert asyncio.run(on_asyncio()) == 1
    # Without a client certificate the handshake fails: no call reaches the server.
    refused = Client(target, api_key=ALPHA.token, tls=TLS(ca=ca.cert), timeout=10)
    with refused, pytest.raises(Unavailable):
        refused.counter.count("visitors")
