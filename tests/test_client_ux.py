"""The Python client as a web app uses it, against a live server on Redis 7: an aio client
made at import time and its decorators declared at module level, used from one event loop
after another; a rate limit's answer as HTTP headers; a subscription's readiness awaited
without consuming events."""

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.processes import PatternsServer, RedisServer, free_port
from patterns_client import (
    Client,
    DeadlineExceeded,
    Decision,
    Event,
    PatternsError,
    Policy,
    RateLimited,
    Unavailable,
    aio,
)

redis7 = pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
MINUTE = timedelta(minutes=1)

# As a web app's module would: a client made at import time, before any event loop runs,
# and decorators declared with it, at module level. The test starts a server on its port.
PORT = free_port()
MODULE_CLIENT = aio.Client(f"127.0.0.1:{PORT}", timeout=10)
PREFIX = f"ux:{uuid.uuid4().hex}"
COMPUTED: list[str] = []


@MODULE_CLIENT.ratelimit.limited(key=lambda user: f"{PREFIX}:{user}", policy=Policy.gcra(3, MINUTE))
async def greet(user: str) -> str:
    return f"hello {user}"


@MODULE_CLIENT.cache.cached(key=lambda user: f"{PREFIX}:profile:{user}", ttl=MINUTE)
async def profile(user: str) -> bytes:
    COMPUTED.append(user)
    return f"profile of {user}".encode()


# 3. A client made where no event loop runs, decorators declared at module level


def test_a_client_made_at_import_time_serves_one_event_loop_after_another(
    redis7: RedisServer,
) -> None:
    """Made at import, with its decorators, it is used from asyncio.run twice: each loop
    gets a channel of its own, and both runs work. (Before: the client could not be made
    outside a loop, and one made in a loop failed in the next with a bare RuntimeError,
    a Future 'attached to a different loop'.)"""
    server = PatternsServer(redis7.url, "--listen", f"127.0.0.1:{PORT}").start()
    try:

        async def one_run() -> tuple[str, bytes, int]:
            greeting = await greet("ann")
            cached = await profile("ann")
            await MODULE_CLIENT.counter.add(PREFIX, ["a"])
            return greeting, cached, await MODULE_CLIENT.counter.count([PREFIX])

        first = asyncio.run(one_run())
        second = asyncio.run(one_run())  # a new loop: the first one's channel went with it
        assert first == ("hello ann", b"profile of ann", 1)
        assert second == ("hello ann", b"profile of ann", 1)
        assert COMPUTED == ["ann"]  # the second run read the cache

        async def fourth_in_the_minute() -> None:
            await greet("ann")
            await greet("ann")

        with pytest.raises(RateLimited):
            asyncio.run(fourth_in_the_minute())

        async def close_then_call_again() -> int:
            await MODULE_CLIENT.close()
            return await MODULE_CLIENT.counter.count([PREFIX])  # a new channel

        assert asyncio.run(close_then_call_again()) == 1
        asyncio.run(MODULE_CLIENT.close())
    finally:
        server.stop()


def test_a_client_used_from_two_running_loops_at_once_says_why() -> None:
    """Two threads' loops running at once cannot share one channel: a PatternsError that
    says so, not a bare RuntimeError. (No server needed: it fails before any call.)"""
    client = aio.Client("127.0.0.1:1", timeout=1)
    first_started = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    async def hold_first_loop() -> None:
        with pytest.raises(PatternsError):  # refused connection: Unavailable
            await client.counter.count(["k"])
        first_started.set()
        await asyncio.to_thread(release.wait, 10)

    thread = threading.Thread(target=lambda: asyncio.run(hold_first_loop()))
    thread.start()
    try:
        assert first_started.wait(10)

        async def second() -> None:
            try:
                await client.counter.count(["k"])
            except BaseException as error:
                errors.append(error)

        asyncio.run(second())
    finally:
        release.set()
        thread.join(10)
    assert len(errors) == 1 and type(errors[0]) is PatternsError, errors
    assert "another event loop that is still running" in str(errors[0])


def test_a_client_over_a_channel_of_another_loop_says_why() -> None:
    async def make() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel("127.0.0.1:1")

    channel = asyncio.run(make())
    client = aio.Client.over(channel, timeout=1)

    async def call() -> None:
        await client.counter.count(["k"])

    with pytest.raises(PatternsError, match="belongs to another event loop"):
        asyncio.run(call())


@redis7
def test_a_client_over_a_channel_of_this_loop_works(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    key = new_key()

    async def scenario() -> int:
        async with aio.Client.over(grpc.aio.insecure_channel(server.address)) as client:
            await client.counter.add(key, ["a", "b"])
            return await client.counter.count([key])

    assert asyncio.run(scenario()) == 2


# 4. A rate limit's answer as HTTP headers


def test_headers_round_up_and_never_say_zero_when_refused() -> None:
    policy = Policy.gcra(10, timedelta(seconds=90), burst=20)
    refused = Decision(
        False,
        20,
        0,
        reset_after=timedelta(seconds=12, microseconds=1),
        retry_after=timedelta(milliseconds=1),
        policy=policy,
    )
    assert refused.headers() == {
        "RateLimit-Limit": "20",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "13",
        "RateLimit-Policy": "10;w=90;burst=20",
        "Retry-After": "1",  # 1 ms is 1 s: never 0, which would say "retry now"
    }
    allowed = Decision(
        True, 5, 4, timedelta(seconds=2), timedelta(0), policy=Policy.fixed_window(5, MINUTE)
    )
    assert allowed.headers() == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "4",
        "RateLimit-Reset": "2",
        "RateLimit-Policy": "5;w=60",
    }
    exact = Decision(False, 1, 0, timedelta(seconds=3), timedelta(seconds=3))
    assert exact.retry_after_seconds == 3 and exact.headers()["RateLimit-Reset"] == "3"
    assert "RateLimit-Policy" not in exact.headers()  # no policy known


@redis7
def test_rate_limited_carries_the_decision_and_its_headers(
    client: Client, new_key: Callable[[], str]
) -> None:
    key = new_key()
    policy = Policy.fixed_window(2, MINUTE)

    @client.ratelimit.limited(key=lambda: key, policy=policy)
    def call() -> str:
        return "ok"

    assert call() == call() == "ok"
    with pytest.raises(RateLimited) as refused:
        call()
    decision = refused.value.decision
    assert not decision.allowed and decision.limit == 2 and decision.policy == policy
    # Typed timedelta (not Optional) on RateLimited: mypy takes this as it is.
    wait: timedelta = refused.value.retry_after
    assert wait == decision.retry_after > timedelta(0)
    headers = decision.headers()
    assert headers["RateLimit-Limit"] == "2" and headers["RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Policy"] == "2;w=60"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert int(headers["Retry-After"]) == refused.value.retry_after_seconds
    assert int(headers["RateLimit-Reset"]) >= 1


@pytest.fixture
def client(server: PatternsServer) -> Iterator[Client]:
    with Client(server.address, timeout=10) as made:
        yield made


def test_a_fallback_decision_reports_the_capacity_less_the_cost() -> None:
    """As the server's own open mode does; not 0, which would read as 'exhausted'."""
    with Client("127.0.0.1:1", timeout=1) as down:
        policy = Policy.token_bucket(10, MINUTE, burst=30)
        decision = down.ratelimit.check("k", policy, cost=4, on_unavailable="allow")
        assert decision.fallback and decision.allowed
        assert (decision.limit, decision.remaining) == (30, 26)
        assert decision.headers()["RateLimit-Remaining"] == "26"
        with pytest.raises(Unavailable):
            down.ratelimit.check("k", policy)


# 5. A subscription's readiness, awaited without consuming events


@redis7
def test_wait_subscribed_then_an_event_published_at_once_is_received(
    client: Client, new_key: Callable[[], str]
) -> None:
    channel = new_key()
    with client.events.subscribe(channels=[channel]) as subscription:
        subscription.wait_subscribed(timeout=10)
        assert subscription.subscribed.is_set()
        subscription.wait_subscribed(timeout=0.001)  # confirmed already: returns at once
        assert client.events.publish(channel, b"right after") == 1
        item = next(iter(subscription))
        assert isinstance(item, Event) and item.payload == b"right after"


@redis7
def test_wait_subscribed_of_the_aio_client(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    channel = new_key()

    async def scenario() -> list[bytes]:
        async with (
            aio.Client(server.address, timeout=10) as client,
            client.events.subscribe(channels=[channel]) as subscription,
        ):
            await subscription.wait_subscribed(timeout=timedelta(seconds=10))
            assert await client.events.publish(channel, b"one") == 1
            assert await client.events.publish(channel, b"two") == 1
            got: list[bytes] = []
            async for item in subscription:
                assert isinstance(item, Event)
                got.append(item.payload)
                if len(got) == 2:
                    return got
        return []

    assert asyncio.run(scenario()) == [b"one", b"two"]


def test_wait_subscribed_gives_up_after_its_timeout() -> None:
    """Nothing answers: DeadlineExceeded after the timeout, sync and aio."""
    with Client("127.0.0.1:1", timeout=1) as down:
        subscription = down.events.subscribe(channels=["c"])
        with pytest.raises(DeadlineExceeded, match=r"within 0\.3s"):
            subscription.wait_subscribed(timeout=0.3)
        subscription.close()

    async def scenario() -> None:
        async with aio.Client("127.0.0.1:1", timeout=1) as client:
            subscription = client.events.subscribe(channels=["c"])
            with pytest.raises(DeadlineExceeded):
                await subscription.wait_subscribed(timeout=0.3)
            await subscription.close()

    asyncio.run(scenario())


# 6. The README's Python section, as a daily-board user reads it


DAILY_BOARD_NAMES = ["Board", "Period", "Mode", "Order", "Submitted", "Standing", "Page"]


@redis7
def test_the_readmes_python_example_runs_and_names_what_a_daily_board_needs(
    server: PatternsServer,
) -> None:
    """The README's Python snippet runs as printed (against this test's server), and the
    names a daily board needs are all in the README and exported by patterns_client."""
    import patterns_client

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Use it from your language", 1)[1].split("\n## ", 1)[0]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "localhost:50051" in snippet
    namespace: dict[str, Any] = {}
    exec(snippet.replace("localhost:50051", server.address), namespace)
    page = namespace["page"]
    assert page.total >= 1 and page.standings[0].member == "ann"
    for name in DAILY_BOARD_NAMES:
        assert f"`{name}" in section or f" {name}," in section, f"README lacks {name}"
        assert name in patterns_client.__all__
    assert "aio.Client" in section and "headers()" in section
    assert "web app" in (aio.Client.__doc__ or "") and "web app" in (Client.__doc__ or "")
