"""patterns_client, the blocking client, against a live server on Redis 7 and the Cluster:
every method of every service, and the recipes (rate-limit decorator, held locks,
cache-aside, resilient subscriptions)."""

import ast
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import patterns_client
from devtools.processes import PatternsServer, RedisServer
from patterns_client import (
    Board,
    Client,
    Event,
    Gap,
    InvalidArgument,
    LockNotAcquired,
    Mode,
    NotFound,
    Order,
    Policy,
    RateLimited,
    ReleaseStatus,
    Unavailable,
)
from tests.waiting import eventually

# The contract tests run on every backend; the client's, on Redis 7 and the Cluster.
live = pytest.mark.parametrize("backend_url", ["redis7", "cluster"], indirect=True)
MINUTE = timedelta(minutes=1)
# The recipes' fallback budget in tests that count what the server decided: one that no
# busy machine exhausts (tests/test_client_fallbacks.py tests the budget itself).
PATIENT = timedelta(seconds=10)
CLIENT_PACKAGE = Path(__file__).parents[1] / "clients" / "python" / "patterns_client"


@pytest.fixture
def client(server: PatternsServer) -> Iterator[Client]:
    with Client(server.address, timeout=10) as client:
        yield client


# Every method of every service


@live
def test_ratelimit_check_check_many_and_reset(client: Client, new_key: Callable[[], str]) -> None:
    key, policy = new_key(), Policy.gcra(3, MINUTE)
    decisions = [client.ratelimit.check(key, policy) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[3].retry_after > timedelta(0) and decisions[3].limit == 3
    assert not client.ratelimit.check(key, policy, peek=True).allowed
    client.ratelimit.reset(key, policy)
    assert client.ratelimit.check(key, policy).remaining == 2
    other = new_key()
    day = Policy.fixed_window(1, timedelta(days=1))
    allowed, results = client.ratelimit.check_many(
        [(other, Policy.token_bucket(10, MINUTE)), (other, day)], all_or_nothing=True
    )
    assert allowed and [r.allowed for r in results] == [True, True]
    allowed, results = client.ratelimit.check_many(
        [(other, Policy.sliding_window_log(10, MINUTE)), (other, day)], all_or_nothing=True
    )
    assert not allowed and [r.allowed for r in results] == [True, False]


@live
def test_counter_add_count_and_merge(client: Client, new_key: Callable[[], str]) -> None:
    monday, tuesday, week = new_key(), new_key(), new_key()
    assert client.counter.add(monday, ["ann", "bob"], ttl=MINUTE)
    assert not client.counter.add(monday, ["ann"])
    client.counter.add(tuesday, ["bob", "cy"])
    assert client.counter.count(monday) == 2
    assert client.counter.count([monday, tuesday]) == 3
    assert client.counter.merge(week, [monday, tuesday], ttl=MINUTE) == 3


@live
def test_leaderboard_methods(client: Client, new_key: Callable[[], str]) -> None:
    name = new_key()
    for member, score in [("ann", 10), ("bob", 30), ("cy", 20)]:
        client.leaderboard.submit(name, member, score)
    best = client.leaderboard.submit(name, "ann", 5, mode=Mode.BEST)
    assert (best.score, best.rank, best.updated) == (10, 3, False)
    page = client.leaderboard.top(name, 2)
    assert [(s.member, s.score, s.rank) for s in page.standings] == [("bob", 30, 1), ("cy", 20, 2)]
    assert page.total == 3
    assert client.leaderboard.rank(name, "cy") == patterns_client.Standing("cy", 20, 2)
    assert client.leaderboard.rank(name, "nobody") is None
    assert [s.member for s in client.leaderboard.around(name, "cy", 1)] == ["bob", "cy", "ann"]
    golf = Board(new_key(), order=Order.LOW_FIRST)
    client.leaderboard.submit(golf, "tom", 68)
    client.leaderboard.submit(golf, "al", 72)
    assert client.leaderboard.top(golf).standings[0].member == "tom"
    assert client.leaderboard.remove(name, ["ann", "zed"]) == 1
    assert client.leaderboard.size(name) == 2


@live
def test_sessions_methods(client: Client, new_key: Callable[[], str]) -> None:
    user = new_key()
    made = client.sessions.create(user, ttl=MINUTE, attributes={"ip": "203.0.113.7"})
    assert made.user_id == user and made.attributes == {"ip": "203.0.113.7"}
    assert made.expires_at - made.created_at == MINUTE
    assert made.created_at.tzinfo is not None
    assert client.sessions.get(made.id) == made
    assert client.sessions.get(made.id, touch=True) is not None
    updated = client.sessions.update(made.id, set={"role": "admin"}, remove=["ip"])
    assert updated.attributes == {"role": "admin"}
    rotated = client.sessions.rotate(made.id)
    assert client.sessions.get(made.id) is None
    other = client.sessions.create(user, ttl=MINUTE)
    listed = client.sessions.list(user)
    assert [s.id for s in listed.sessions] == [other.id, rotated.id] and listed.total == 2
    first = client.sessions.list(user, limit=1)
    assert [s.id for s in first.sessions] == [other.id] and first.next_page_token
    rest = client.sessions.list(user, limit=1, page_token=first.next_page_token)
    assert [s.id for s in rest.sessions] == [rotated.id] and rest.next_page_token == ""
    assert client.sessions.destroy_all(user, except_id=rotated.id) == 1
    assert client.sessions.destroy(rotated.id)
    assert not client.sessions.destroy(rotated.id)
    with pytest.raises(NotFound) as gone:
        client.sessions.update(rotated.id, set={"a": "b"})
    assert gone.value.reason == "SESSION_NOT_FOUND"


@live
def test_cache_methods(client: Client, new_key: Callable[[], str]) -> None:
    a, b, prefix = new_key(), new_key(), new_key()
    assert client.cache.set(a, b"1", ttl=MINUTE, tags=["t:" + a])
    assert not client.cache.set(a, b"2", only_if_absent=True)
    entry = client.cache.get(a)
    assert entry is not None and entry.value == b"1" and entry.ttl_remaining <= MINUTE
    assert client.cache.get(b) is None
    until = datetime.now(UTC) + MINUTE
    client.cache.set(b, b"2", expire_at=until)
    assert [e.value if e else None for e in client.cache.get_many([a, b, prefix])] == [
        b"1",
        b"2",
        None,
    ]
    assert client.cache.invalidate_tags(["t:" + a]) == 1
    assert client.cache.delete([a, b]) == 1
    client.cache.set(prefix + ":x", b"x")
    client.cache.set(prefix + ":y", b"y")
    assert client.cache.invalidate_prefix(prefix + ":") == 2


@live
def test_lock_methods(client: Client, new_key: Callable[[], str]) -> None:
    name = new_key()
    lease = client.locks.acquire(name, ttl=MINUTE)
    assert lease is not None and lease.fencing_token >= 1
    assert client.locks.acquire(name, ttl=MINUTE, wait=timedelta(milliseconds=50)) is None
    extended = client.locks.extend(lease, ttl=timedelta(minutes=2))
    assert extended is not None and extended.expires_at > lease.expires_at
    state = client.locks.inspect(name)
    assert state.held and state.fencing_token == lease.fencing_token
    assert client.locks.release(lease) is ReleaseStatus.RELEASED
    assert client.locks.release(lease) is ReleaseStatus.NOT_HELD
    assert client.locks.extend(lease, ttl=MINUTE) is None
    again = client.locks.acquire(name, ttl=MINUTE)
    assert again is not None and again.fencing_token > lease.fencing_token
    assert client.locks.force_release(name)
    assert not client.locks.inspect(name).held


@live
def test_events_publish_and_subscribe(client: Client, new_key: Callable[[], str]) -> None:
    channel = new_key()
    with client.events.subscribe(channels=[channel], patterns=[channel + ".*"]) as subscription:
        received: list[Any] = []
        reader = threading.Thread(target=lambda: received.append(next(subscription)))
        reader.start()
        assert subscription.subscribed.wait(10)
        assert client.events.publish(channel, b"hello") >= 1
        reader.join(10)
    (event,) = received
    assert isinstance(event, Event)
    assert (event.channel, event.pattern, event.payload) == (channel, "", b"hello")


# Errors


@live
def test_errors_are_python_exceptions_with_the_rich_status(client: Client) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        client.ratelimit.check("", Policy.gcra(1, MINUTE))
    assert invalid.value.reason == "INVALID_ARGUMENT"
    assert [v.field for v in invalid.value.field_violations] == ["key"]
    assert "key" in str(invalid.value)
    with pytest.raises(InvalidArgument) as invalid:
        client.sessions.create("u", ttl=timedelta(days=400))
    assert invalid.value.field_violations[0].field == "ttl"


def test_an_unreachable_server_is_unavailable() -> None:
    from devtools.processes import free_port

    with Client(f"127.0.0.1:{free_port()}", timeout=2) as client, pytest.raises(Unavailable):
        client.counter.count("k")


# Recipes: rate limiting


@live
def test_the_limited_decorator_raises_with_retry_after(
    client: Client, new_key: Callable[[], str]
) -> None:
    prefix = new_key()

    @client.ratelimit.limited(
        key=lambda user: f"{prefix}:{user}", policy=Policy.gcra(3, MINUTE), fallback_after=PATIENT
    )
    def handle(user: str) -> str:
        return f"hello {user}"

    assert [handle("ann") for _ in range(3)] == ["hello ann"] * 3
    with pytest.raises(RateLimited) as limited:
        handle("ann")
    assert (limited.value.retry_after or timedelta(0)) > timedelta(seconds=1)
    assert handle("bob") == "hello bob"  # another key
    assert handle.__name__ == "handle"


# Recipes: locks


@live
def test_hold_keeps_the_lock_for_the_block_and_releases_it(
    client: Client, new_key: Callable[[], str]
) -> None:
    name = new_key()
    with client.locks.hold(name, ttl=timedelta(milliseconds=300)) as held:
        time.sleep(0.8)  # past the ttl: the server renews it
        state = client.locks.inspect(name)
        assert state.held and state.fencing_token == held.fencing_token
        assert not held.lost.is_set()
    eventually(lambda: not client.locks.inspect(name).held)


@live
def test_hold_releases_when_the_block_raises(client: Client, new_key: Callable[[], str]) -> None:
    name = new_key()
    with pytest.raises(ZeroDivisionError), client.locks.hold(name, ttl=MINUTE):
        assert client.locks.inspect(name).held
        _ = 1 / 0
    eventually(lambda: not client.locks.inspect(name).held)


@live
def test_hold_that_cannot_get_the_lock_raises(client: Client, new_key: Callable[[], str]) -> None:
    name = new_key()
    assert client.locks.acquire(name, ttl=MINUTE) is not None
    with (
        pytest.raises(LockNotAcquired),
        client.locks.hold(name, ttl=MINUTE, wait=timedelta(milliseconds=100)),
    ):
        pytest.fail("the block ran without the lock")


@live
def test_hold_says_when_the_lease_is_lost(client: Client, new_key: Callable[[], str]) -> None:
    name = new_key()
    with client.locks.hold(name, ttl=timedelta(milliseconds=300)) as held:
        client.locks.force_release(name)
        assert held.lost.wait(10)
        assert held.error is not None and held.error.reason == "LEASE_LOST"


HOLDER = """
import sys, time
from datetime import timedelta
from patterns_client import Client
with Client(sys.argv[1]) as client, client.locks.hold(sys.argv[2], ttl=timedelta(minutes=5)):
    print("held", flush=True)
    time.sleep(600)
"""


@live
def test_a_killed_holders_lock_is_released(
    server: PatternsServer, client: Client, new_key: Callable[[], str]
) -> None:
    name = new_key()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, server.address, name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert client.locks.inspect(name).held
        holder.kill()  # SIGKILL: no cleanup in the holder; its connection drops
        holder.wait(10)
        eventually(lambda: not client.locks.inspect(name).held)  # long before the 5 min ttl
    finally:
        holder.kill()
        holder.wait(10)


# Recipes: cache-aside


@live
def test_fifty_concurrent_get_or_compute_compute_once(
    client: Client, new_key: Callable[[], str]
) -> None:
    key, computed = new_key(), []

    def compute() -> bytes:
        computed.append(1)
        time.sleep(0.3)  # the others arrive meanwhile
        return b"expensive"

    def read() -> bytes:
        return client.cache.get_or_compute(
            key, compute, ttl=MINUTE, tags=["t"], wait=timedelta(seconds=30), fallback_after=PATIENT
        )

    with ThreadPoolExecutor(50) as pool:
        values = list(pool.map(lambda _: read(), range(50)))
    assert values == [b"expensive"] * 50
    assert len(computed) == 1
    entry = client.cache.get(key)
    assert entry is not None and entry.value == b"expensive"


@live
def test_cached_decorator(client: Client, new_key: Callable[[], str]) -> None:
    prefix, calls = new_key(), []

    @client.cache.cached(key=lambda n: f"{prefix}:{n}", ttl=MINUTE, fallback_after=PATIENT)
    def square(n: int) -> bytes:
        calls.append(n)
        return str(n * n).encode()

    assert [square(3), square(3), square(4)] == [b"9", b"9", b"16"]
    assert calls == [3, 4]


# Recipes that need an outage: a Redis of the test's own.


@pytest.fixture
def outage(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> Iterator[tuple[RedisServer, Client]]:
    with Client(server_on_own_redis().address, timeout=5) as client:
        yield own_redis, client


def test_graceful_failure_while_redis_is_down(outage: tuple[RedisServer, Client]) -> None:
    redis, client = outage
    policy = Policy.gcra(1, MINUTE)
    redis.stop()
    with pytest.raises(Unavailable) as down:
        client.ratelimit.check("k", policy)
    assert down.value.retry_after is not None and down.value.reason.startswith("REDIS_")
    assert client.ratelimit.check("k", policy, on_unavailable="allow").fallback
    refused = client.ratelimit.check("k", policy, on_unavailable="deny")
    assert not refused.allowed and refused.retry_after > timedelta(0)

    @client.ratelimit.limited(key=lambda: "k", policy=policy)  # allows by default
    def open_door() -> str:
        return "in"

    @client.ratelimit.limited(key=lambda: "k", policy=policy, on_unavailable="deny")
    def closed_door() -> str:
        return "in"

    assert open_door() == "in"
    with pytest.raises(RateLimited):
        closed_door()
    assert client.cache.get_or_compute("k", lambda: b"from the source") == b"from the source"


def test_a_subscription_survives_a_redis_restart_and_reports_the_gap(
    outage: tuple[RedisServer, Client],
) -> None:
    redis, client = outage
    items: list[Any] = []
    with client.events.subscribe(channels=["news"]) as subscription:
        reader = threading.Thread(target=lambda: items.extend(subscription), daemon=True)
        reader.start()
        assert subscription.subscribed.wait(10)
        client.events.publish("news", b"before")
        eventually(lambda: len(items) == 1)
        redis.stop()
        eventually(lambda: not subscription.subscribed.is_set())
        redis.start()
        assert subscription.subscribed.wait(30)
        client.events.publish("news", b"after")
        eventually(lambda: len(items) == 3)
    reader.join(10)
    assert not reader.is_alive()  # closing ended the iteration
    before, gap, after = items
    assert isinstance(gap, Gap) and isinstance(gap.error, Unavailable)
    assert (before.payload, after.payload) == (b"before", b"after")


# The package itself


def test_every_exported_name_exists_and_is_documented() -> None:
    for module in (patterns_client, patterns_client.aio):
        for name in module.__all__:
            value = getattr(module, name)
            assert value.__doc__, f"{module.__name__}.{name} has no docstring"
    public = {
        name
        for name in dir(patterns_client)
        if not name.startswith("_") and name[0].isupper() and name not in ("Any",)
    }
    assert public <= set(patterns_client.__all__)


def test_every_public_class_and_method_is_documented() -> None:
    """Each says what it does in its own words: "As Locks.acquire." (an aio coroutine
    pointing at its blocking twin) tells a reader of the aio half nothing."""
    for path in CLIENT_PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
        functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
        methods = [
            node
            for cls in classes
            for node in cls.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for node in [*classes, *functions, *methods]:
            if not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                assert doc, f"{path.name}: {node.name} has no docstring"
                assert not re.match(r"As [A-Za-z_][\w.]*\b", doc), (
                    f"{path.name}: {node.name} only points at another docstring: {doc[:60]!r}"
                )


def test_the_client_imports_nothing_of_the_server() -> None:
    check = (
        "import sys, patterns_client, patterns_client.aio; "
        "leaked = [m for m in sys.modules if m.startswith(('patterns_server', 'redis'))]; "
        "assert not leaked, leaked"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)
