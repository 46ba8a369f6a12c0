"""The storage package against real Redis: the command packer, the Pub/Sub hub, the health
probe. No gRPC here: what streams and health are built on, tested on its own."""

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from redis.asyncio.connection import AbstractConnection, Connection

from devtools.processes import RedisCluster, RedisServer
from patterns_server.core.errors import ResourceExhausted, Unavailable
from patterns_server.counter.counter import UniqueCounter
from patterns_server.ratelimit.ratelimit import Algorithm, Check, Policy, RateLimiter
from patterns_server.storage import Command, RedisBackend, Subscription, redispy
from patterns_server.storage.leases import Lease, granted_or_given_back
from patterns_server.storage.wakeups import until_woken
from tests.conftest import node_client
from tests.waiting import eventually_async


@asynccontextmanager
async def backend_for(url: str, **options: Any) -> AsyncIterator[RedisBackend]:
    """A backend of its own on `url` (Redis timeout 2 s unless `options` say otherwise)."""
    options = {"timeout": 2.0, **options}
    backend = RedisBackend.from_url(url, prefix="storage-test", batch_wait=0, **options)
    try:
        yield backend
    finally:
        await backend.close()


# The command packer


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 2, "k1", "k2", "0", "gcra", 10, 1_000_000, 10, 1, 0),
        ("EVAL", "return 1\r\n-- é", 0),
        ("SET", "patterns:default:health:{probe}", "1", "PX", 60_000),
        ("GET", "é:ü 🙂"),
        ("DEL", "k", ""),
        ("SET", "k", b"\x00\r\n\xff" * 100, "PX", -1),
        ("SET", "k", 2**63 - 1),
        ("SET", "k", 1.5),
        ("SET", "k", memoryview(b"view")),
        ("SUBSCRIBE", b"patterns:default:events:{a}", b"b"),
        ("CONFIG GET", "maxmemory"),
        ("PING",),
    ],
)
def test_the_hiredis_packer_writes_what_redis_py_writes(args: tuple[Any, ...]) -> None:
    connection = Connection()
    ours = b"".join(redispy.pack_command(connection, *args))
    theirs = b"".join(bytes(part) for part in redispy.original_pack_command(connection, *args))
    assert ours == theirs


def test_every_command_the_patterns_send_packs_alike(redis7: RedisServer) -> None:
    """Every command a rate-limit check, a counter call, a subscription and a health probe
    send, packed by both packers: the bytes are the same."""
    seen: list[tuple[Any, ...]] = []
    differ: list[tuple[Any, ...]] = []

    def spy(self: AbstractConnection, *args: Any) -> list[bytes]:
        ours = b"".join(redispy.pack_command(self, *args))
        theirs = b"".join(bytes(p) for p in redispy.original_pack_command(self, *args))
        seen.append(args)
        if ours != theirs:
            differ.append(args)
        return [theirs]

    async def scenario() -> None:
        async with backend_for(redis7.url) as backend:
            limiter = RateLimiter(backend)
            for algorithm in Algorithm:
                policy = Policy(algorithm, 5, timedelta(seconds=10))
                await limiter.check(Check("user:é", policy, cost=2))
                await limiter.check_many([Check("a", policy), Check("b", policy)], False)
                await limiter.reset("user:é", policy)
            counter = UniqueCounter(backend)
            await counter.add("visitors", ["alice", "bob"], timedelta(hours=1))
            await counter.count(["visitors", "other"])
            await counter.merge("all", ["visitors"], timedelta(hours=1))
            await backend.check()
            async with await backend.subscribe([b"chan"], [b"pat*"], 10, 1 << 20):
                pass

    original = AbstractConnection.pack_command
    AbstractConnection.pack_command = spy  # type: ignore[method-assign]
    try:
        asyncio.run(scenario())
    finally:
        AbstractConnection.pack_command = original  # type: ignore[method-assign]
    assert {args[0] for args in seen} >= {"EVALSHA", "DEL", "PFCOUNT", "SET", "SUBSCRIBE"}
    assert differ == []


def test_the_packer_is_installed_only_for_the_redis_py_it_was_checked_against(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redispy.uninstall_packer()  # whatever an in-process server of another test installed
    try:
        monkeypatch.setattr(redis, "__version__", "99.0.0")
        assert redispy.install_packer() is False
        assert AbstractConnection.pack_command is redispy._original_pack_command
        monkeypatch.setattr(redis, "__version__", "8.1.0")
        assert redispy.install_packer() is True
        assert AbstractConnection.pack_command is redispy.pack_command
    finally:
        redispy.uninstall_packer()


# The Pub/Sub hub


def publish(url: str, channel: bytes, payload: bytes) -> int:
    return int(node_client(url).publish(channel, payload))


def pubsub_connections(server: RedisServer) -> int:
    return len(server.client().client_list(_type="pubsub"))


async def next_message(subscription: Subscription, within: float = 5.0) -> Any:
    async with asyncio.timeout(within):
        return await anext(subscription)


def test_a_subscription_is_live_when_it_returns(redis7: RedisServer) -> None:
    async def scenario() -> None:
        async with (
            backend_for(redis7.url) as backend,
            await backend.subscribe([b"news"], [b"sport.*"], 10, 1 << 20) as subscription,
        ):
            # Published right after subscribe() returned: nothing may be missed.
            assert publish(redis7.url, b"news", b"first") == 1
            assert publish(redis7.url, b"sport.tennis", b"second") == 1
            first = await next_message(subscription)
            second = await next_message(subscription)
            assert (first.channel, first.pattern, first.payload) == (b"news", None, b"first")
            assert (second.channel, second.pattern, second.payload) == (
                b"sport.tennis",
                b"sport.*",
                b"second",
            )
            assert abs(second.received_at - time.time()) < 5

    asyncio.run(scenario())


def test_channels_are_shared_and_counted(redis7: RedisServer) -> None:
    """1,000 subscriptions over 10 channels: one Redis connection; a channel is
    unsubscribed in Redis after its last subscriber leaves, not before."""

    async def scenario() -> None:
        client = redis7.client()
        async with backend_for(redis7.url) as backend:
            subscriptions = await asyncio.gather(
                *(
                    backend.subscribe([f"ch{i % 10}".encode()], [], 10, 1 << 20)
                    for i in range(1_000)
                )
            )
            assert pubsub_connections(redis7) == 1
            assert backend.subscribed == (10, 0)
            assert client.pubsub_numsub("ch3") == [(b"ch3", 1)]
            assert publish(redis7.url, b"ch3", b"x") == 1
            receivers = [s for i, s in enumerate(subscriptions) if i % 10 == 3]
            for subscription in receivers:
                assert (await next_message(subscription)).payload == b"x"
            for subscription in receivers[:-1]:
                await subscription.close()
            assert client.pubsub_numsub("ch3") == [(b"ch3", 1)]
            await receivers[-1].close()
            await eventually_async(lambda: client.pubsub_numsub("ch3") == [(b"ch3", 0)])
            assert backend.subscribed == (9, 0)
            for subscription in subscriptions:
                await subscription.close()
            assert backend.subscribed == (0, 0)

    asyncio.run(scenario())


def test_a_slow_subscriber_is_ended_and_the_others_are_not(redis7: RedisServer) -> None:
    async def scenario() -> None:
        async with backend_for(redis7.url) as backend:
            slow = await backend.subscribe([b"busy"], [], 5, 1 << 20)
            reader = await backend.subscribe([b"busy"], [], 5, 1 << 20)
            for n in range(8):
                publish(redis7.url, b"busy", str(n).encode())
                assert (await next_message(reader)).payload == str(n).encode()
            with pytest.raises(ResourceExhausted) as ended:
                await next_message(slow)
            assert ended.value.reason == "SLOW_CONSUMER"
            publish(redis7.url, b"busy", b"after")
            assert (await next_message(reader)).payload == b"after"
            await slow.close()
            await reader.close()

    asyncio.run(scenario())


def test_a_lost_connection_ends_every_subscription_then_recovers(own_redis: RedisServer) -> None:
    async def scenario() -> None:
        async with backend_for(own_redis.url) as backend:
            first = await backend.subscribe([b"a"], [], 10, 1 << 20)
            second = await backend.subscribe([], [b"b*"], 10, 1 << 20)
            own_redis.stop()
            for subscription in (first, second):
                with pytest.raises(Unavailable):
                    await next_message(subscription, within=3)
            with pytest.raises(Unavailable):
                await backend.subscribe([b"a"], [], 10, 1 << 20)
            own_redis.start()
            again = await backend.subscribe([b"a"], [], 10, 1 << 20)
            publish(own_redis.url, b"a", b"back")
            assert (await next_message(again)).payload == b"back"
            await again.close()

    asyncio.run(scenario())


def test_a_hung_redis_ends_subscriptions_after_an_unanswered_ping(
    own_redis: RedisServer,
) -> None:
    async def scenario() -> float:
        async with backend_for(own_redis.url, timeout=0.3, ping_interval=0.2) as backend:
            subscription = await backend.subscribe([b"a"], [], 10, 1 << 20)
            assert own_redis.process is not None
            own_redis.process.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            try:
                with pytest.raises(Unavailable) as ended:
                    await next_message(subscription, within=5)
            finally:
                own_redis.process.send_signal(signal.SIGCONT)
            assert ended.value.reason == "REDIS_TIMEOUT"
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 2


def test_cluster_messages_reach_a_subscriber_on_another_node(redis_cluster: RedisCluster) -> None:
    async def scenario() -> None:
        async with (
            backend_for(redis_cluster.url) as backend,
            await backend.subscribe([b"fleet"], [], 10, 1 << 20) as subscription,
        ):
            for node in redis_cluster.nodes:  # one of them holds the subscriber's connection
                node.client().publish("fleet", f"via {node.port}")
            payloads = {(await next_message(subscription)).payload for _ in redis_cluster.nodes}
            assert payloads == {f"via {node.port}".encode() for node in redis_cluster.nodes}

    asyncio.run(scenario())


# The health probe


def test_the_health_probe_needs_writes_to_succeed(own_redis: RedisServer) -> None:
    async def scenario() -> None:
        async with backend_for(own_redis.url) as backend:
            await backend.check()
            own_redis.client().config_set("maxmemory", 1)  # noeviction: every write refused
            with pytest.raises(Unavailable):
                await backend.check()
            own_redis.client().config_set("maxmemory", 0)
            await backend.check()

    asyncio.run(scenario())


def test_the_health_probe_writes_to_every_cluster_primary(redis_cluster: RedisCluster) -> None:
    async def scenario() -> None:
        async with backend_for(redis_cluster.url) as backend:
            await backend.check()
        for node in redis_cluster.nodes:
            probes = list(node.client().scan_iter(match="storage-test:@server:health:*"))
            assert len(probes) == 1, node.port
            assert 0 < node.client().pttl(probes[0]) <= 60_000

    asyncio.run(scenario())


# The batcher


def test_a_batch_is_capped_by_bytes_as_well_as_by_commands(redis7: RedisServer) -> None:
    """40 concurrent writes of 300 KB share round trips of about 1 MiB at most (a single
    pipeline of them all, 12 MB under one socket timeout, once timed out calls that Redis
    itself answered in time)."""
    sent: list[int] = []

    async def scenario() -> list[Any]:
        async with backend_for(redis7.url) as backend:
            connection = backend._batcher._connection  # the batcher's own, on standalone Redis
            assert connection is not None
            real_pack = connection.pack_commands

            def recording_pack(commands: Any) -> Any:
                commands = list(commands)
                sent.append(sum(len(args[2]) for args in commands))
                return real_pack(commands)

            connection.pack_commands = recording_pack  # type: ignore[method-assign]
            value = b"v" * 300_000
            return await asyncio.gather(
                *(backend.call("SET", f"big:{n}", value, "PX", 60_000) for n in range(40))
            )

    assert all(reply is True for reply in asyncio.run(scenario()))
    assert sent and max(sent) <= (1 << 20) + 300_000


# Leases whose caller goes away, waits ended at shutdown


def _writes_held(admin: redis.Redis) -> bool:
    return any("b" in client["flags"] for client in admin.client_list())


def test_a_grant_whose_caller_is_cancelled_is_given_back_once_it_lands(
    own_redis: RedisServer,
) -> None:
    """The grant's write is held in Redis (writes paused) while its caller is cancelled,
    twice: the caller waits for the reply all the same, gives the lease back, and only
    then is cancelled."""
    admin = own_redis.client()
    lease = Lease("token", 7, datetime.now(UTC))
    given_back: list[Lease] = []

    async def scenario() -> None:
        async with backend_for(own_redis.url, timeout=30.0) as backend:

            async def grant() -> Lease:
                await backend.run(Command(("SET", "granted", "1")))
                return lease

            async def give_back(granted: Lease) -> None:
                await backend.run(Command(("DEL", "granted")))
                given_back.append(granted)

            admin.client_pause(60_000, all=False)
            try:
                caller = asyncio.create_task(granted_or_given_back(grant(), lambda x: x, give_back))
                await eventually_async(lambda: _writes_held(admin))
                caller.cancel()
                await asyncio.sleep(0.1)
                caller.cancel()  # cancelled again: it still waits for the reply
                await asyncio.sleep(0.1)
                assert not caller.done()
            finally:
                admin.client_unpause()
            with pytest.raises(asyncio.CancelledError):
                await caller
            assert given_back == [lease] and admin.get("granted") is None

    asyncio.run(scenario())


def test_ended_waits_finish_their_attempt_then_raise(own_redis: RedisServer) -> None:
    """At shutdown (`Waits.end`), a wait whose attempt is in flight finishes it first (a
    grant is returned, not lost); a parked wait raises at once; a new wait never parks."""
    admin = own_redis.client()
    shutting_down = Unavailable("the server is shutting down", "SHUTTING_DOWN")

    async def scenario() -> None:
        async with backend_for(own_redis.url, timeout=30.0) as backend:
            loop = asyncio.get_running_loop()
            attempts = 0

            async def never() -> tuple[str, int | None]:
                nonlocal attempts
                attempts += 1
                return "pending", 60_000

            async def granted_in_redis() -> tuple[str, int | None]:
                await backend.run(Command(("SET", "granted", "1")))  # held by the pause
                return "granted", None

            deadline = loop.time() + 60
            parked = asyncio.create_task(until_woken(backend, b"parked", never, deadline))
            await eventually_async(lambda: attempts == 1)
            admin.client_pause(60_000, all=False)
            try:
                in_flight = asyncio.create_task(
                    until_woken(backend, b"in-flight", granted_in_redis, deadline)
                )
                await eventually_async(lambda: _writes_held(admin))
                backend.waits.end(shutting_down)
                with pytest.raises(Unavailable) as ended:
                    await asyncio.wait_for(parked, 2)
                assert ended.value.reason == "SHUTTING_DOWN" and ended.value is not shutting_down
                assert not in_flight.done()
            finally:
                admin.client_unpause()
            assert await in_flight == "granted"
            with pytest.raises(Unavailable):
                await until_woken(backend, b"late", never, deadline)
            assert attempts == 1

    asyncio.run(scenario())
