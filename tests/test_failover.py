"""Failover: a Cluster master killed or frozen under load (its replica takes over), and a
Sentinel-managed Redis whose master dies. What callers see meanwhile, how long until they
are served again, and what a failover loses.

Every call made during the failover answers OK or UNAVAILABLE with RetryInfo (never
INTERNAL or UNKNOWN); calls on the lost master's keys are served again once a replica is
promoted; open streams end UNAVAILABLE and a new subscription receives events.
"""

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.events.v1 import events_pb2, events_pb2_grpc
from patterns.lock.v1 import lock_pb2, lock_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from devtools.processes import PatternsServer, RedisCluster, RedisSentinels, RedisServer
from patterns_server.core.errors import Unavailable
from patterns_server.storage import Command, RedisBackend
from patterns_server.storage.backend import SERVER_NAMESPACE, RedisURLError
from patterns_server.storage.keys import KeySpace
from tests.conftest import redis_server_binary, require_tool, windows_of
from tests.rpc import details, once_answered
from tests.waiting import eventually

# The test Cluster's node timeout: a master unanswered this long is deemed failed, and its
# replica is promoted shortly after (Redis's default is 15 s).
NODE_TIMEOUT_MS = 1_000
# How long callers may go unserved after a master dies or freezes: the node timeout, the
# election, the server's topology refresh, with room for a busy machine.
RECOVERY_BOUND = 15.0


@dataclass
class Answers:
    """Every answer of the calls made during a failover: (time since the fault, what)."""

    fault_at: float = 0.0
    seen: list[tuple[float, str, str]] = field(default_factory=list)  # (t, call, outcome)

    def record(self, call: str, outcome: "grpc.RpcError | None") -> None:
        now = time.monotonic() - self.fault_at if self.fault_at else -1.0
        self.seen.append((now, call, "OK" if outcome is None else describe(outcome)))

    def outcomes(self) -> set[str]:
        return {outcome for _, _, outcome in self.seen}

    def served_again(self, call: str) -> float:
        """Seconds from the fault to the first answer of `call` after its last failure."""
        failed = [t for t, name, outcome in self.seen if name == call and outcome != "OK"]
        last = max(failed, default=0.0)
        after = [t for t, name, _ in self.seen if name == call and t > last]
        return min(after, default=float("inf"))


def describe(error: grpc.RpcError) -> str:
    """`CODE REASON +RetryInfo`: what a client can act on."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return f"{error.code().name} {error.details()}"
    found = details(error)
    reason = found["ErrorInfo"].reason if "ErrorInfo" in found else "no ErrorInfo"
    retry = " +RetryInfo" if "RetryInfo" in found else " no RetryInfo"
    return f"UNAVAILABLE {reason}{retry}"


ACCEPTED = {
    "OK",
    "UNAVAILABLE REDIS_UNAVAILABLE +RetryInfo",
    "UNAVAILABLE REDIS_TIMEOUT +RetryInfo",
}


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(
        tmp_path / "cluster",
        binary=redis_server_binary(),
        replicas=1,
        node_timeout_ms=NODE_TIMEOUT_MS,
    )
    cluster.start()
    yield cluster
    cluster.stop()


def names_on(cluster: RedisCluster, node: RedisServer, prefix: str, count: int) -> list[str]:
    """`count` names whose keys (hash-tagged by the name) the master `node` serves."""
    found: list[str] = []
    for number in range(100_000):
        name = f"{prefix}-{number}"
        if cluster.master_of(name, node) is node:
            found.append(name)
            if len(found) == count:
                return found
    raise LookupError("no such names")


def hub_master(cluster: RedisCluster) -> RedisServer:
    """The master of the server's Pub/Sub hub (the slot of its route key)."""
    return cluster.master_of(KeySpace("patterns", "pubsub", SERVER_NAMESPACE)("hub"))


def wait_replicated(master: RedisServer) -> None:
    """Until every replica of `master` has all it wrote."""
    client = master.client()
    assert client.wait(1, 5_000) >= 1


def promotion(replica: RedisServer, since: float) -> float:
    """Seconds from `since` until `replica` is a master."""
    client = replica.client()
    while client.info("replication")["role"] != "master":
        assert time.monotonic() - since < RECOVERY_BOUND, "the replica was never promoted"
        time.sleep(0.01)
    return time.monotonic() - since


async def failover_scenario(
    cluster: RedisCluster, server: PatternsServer, fault: Callable[[], None]
) -> dict[str, Any]:
    victim = hub_master(cluster)
    rule_keys = [f"user:{uuid.uuid4()}" for _ in range(30)]
    victim_keys = names_on(cluster, victim, f"check-{uuid.uuid4().hex[:6]}", 10)
    period = windows_of(cluster.url).calm(timedelta(hours=1))
    rule = pb.Policy(algorithm=pb.ALGORITHM_FIXED_WINDOW, limit=1_000_000, period=period)
    held_name, waited_name = names_on(cluster, victim, f"lock-{uuid.uuid4().hex[:6]}", 2)
    answers = Answers()
    results: dict[str, Any] = {"answers": answers}
    async with grpc.aio.insecure_channel(server.address) as channel:
        limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
        locker = lock_pb2_grpc.LockerStub(channel)
        events = events_pb2_grpc.EventsStub(channel)
        ttl = Duration(seconds=60)
        held = await locker.Acquire(lock_pb2.AcquireRequest(name=held_name, ttl=ttl), timeout=10)
        blocker = await locker.Acquire(
            lock_pb2.AcquireRequest(name=waited_name, ttl=ttl), timeout=10
        )
        assert held.acquired and blocker.acquired
        stream = events.Subscribe(events_pb2.SubscribeRequest(channels=["news"]), timeout=60)
        first = await stream.read()
        assert first.HasField("subscribed")
        await asyncio.to_thread(wait_replicated, victim)
        stop = asyncio.Event()

        async def check_loop(keys: list[str], name: str) -> None:
            while not stop.is_set():
                calls = [
                    limiter.Check(pb.CheckRequest(key=key, policy=rule), timeout=5) for key in keys
                ]
                for outcome in await asyncio.gather(*calls, return_exceptions=True):
                    if isinstance(outcome, grpc.RpcError):
                        answers.record(name, outcome)
                    elif isinstance(outcome, BaseException):
                        raise outcome
                    else:
                        answers.record(name, None)
                await asyncio.sleep(0.01)

        loops = [
            asyncio.create_task(check_loop(rule_keys, "check")),
            asyncio.create_task(check_loop(victim_keys, "check-victim")),
        ]
        waiting = asyncio.ensure_future(
            locker.Acquire(
                lock_pb2.AcquireRequest(
                    name=waited_name, ttl=ttl, wait_timeout=Duration(seconds=40)
                ),
                timeout=60,
            )
        )
        await asyncio.sleep(0.5)
        replica = cluster.replica_of(victim)
        answers.fault_at = time.monotonic()
        await asyncio.to_thread(fault)
        promoted = asyncio.create_task(asyncio.to_thread(promotion, replica, answers.fault_at))
        # The stream ends.
        try:
            while True:
                await stream.read()
        except grpc.RpcError as ended:
            results["stream_end"] = (time.monotonic() - answers.fault_at, describe(ended))
        try:
            waited = await waiting
            results["waiting_acquire"] = (
                time.monotonic() - answers.fault_at,
                f"OK acquired={waited.acquired}",
            )
        except grpc.RpcError as error:
            results["waiting_acquire"] = (time.monotonic() - answers.fault_at, describe(error))
        # Served again: Checks on the lost master's keys.
        deadline = time.monotonic() + RECOVERY_BOUND + 5
        while time.monotonic() < deadline:
            after = [o for t, n, o in answers.seen if n == "check-victim" and t > 0]
            if len(after) > 30 and all(o == "OK" for o in after[-30:]):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*loops)
        results["recovered_after"] = answers.served_again("check-victim")
        results["promoted_after"] = await promoted
        # A new subscription receives events.
        resubscribed_at = time.monotonic()
        while True:
            again = events.Subscribe(events_pb2.SubscribeRequest(channels=["news"]), timeout=30)
            try:
                assert (await again.read()).HasField("subscribed")
                break
            except grpc.RpcError as error:
                answers.record("resubscribe", error)
                assert time.monotonic() - resubscribed_at < RECOVERY_BOUND, "never resubscribed"
                await asyncio.sleep(0.1)
        results["resubscribed_after"] = time.monotonic() - resubscribed_at
        published = await events.Publish(
            events_pb2.PublishRequest(channel="news", payload=b"after"), timeout=10
        )
        event = await again.read()
        results["event"] = (published.receivers, event.event.payload)
        again.cancel()
        inspected = await locker.Inspect(lock_pb2.InspectRequest(name=held_name), timeout=10)
        released = await locker.Release(
            lock_pb2.ReleaseRequest(name=held_name, token=held.token), timeout=10
        )
        results["held_lock"] = (
            inspected.held,
            inspected.fencing_token,
            held.fencing_token,
            released.status,
        )
    return results


@pytest.mark.slow
@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_master_lost_under_load(replicated_cluster: RedisCluster, how: str) -> None:
    """The master of the Pub/Sub hub, of a held lock and of a lock waited for is killed
    (SIGKILL) or frozen (SIGSTOP) while Checks run on every master."""
    server = PatternsServer(replicated_cluster.url).start()
    victim = hub_master(replicated_cluster)
    fault = victim.stop if how == "killed" else victim.freeze
    try:
        results = asyncio.run(failover_scenario(replicated_cluster, server, fault))
    finally:
        server.stop()
    answers = results.pop("answers")
    assert isinstance(answers, Answers)
    print(f"master {how}:", results)
    print(Counter(outcome for _, _, outcome in answers.seen))
    # Nothing but OK or UNAVAILABLE with RetryInfo, whatever the call.
    assert answers.outcomes() <= ACCEPTED
    # The open stream and the waiting Acquire are answered, UNAVAILABLE with RetryInfo.
    ended_after, ended = results["stream_end"]
    assert ended in ACCEPTED - {"OK"} and ended_after < RECOVERY_BOUND
    waited_after, waited = results["waiting_acquire"]
    assert waited in ACCEPTED | {"OK acquired=False"} and waited_after < RECOVERY_BOUND
    # Served again once the replica is promoted, soon after (within a Redis timeout and
    # the batch then in flight), and within the bound.
    recovered, promoted = results["recovered_after"], results["promoted_after"]
    assert recovered < RECOVERY_BOUND
    assert recovered - promoted < 2.5, "the server kept sending to the lost master"
    # A new subscription receives what is published after it.
    assert results["event"] == (1, b"after")
    # The held lock was replicated before the fault: it survives, same fencing token,
    # and its token still releases it.
    held, fencing_token, granted_token, released = results["held_lock"]
    assert held and fencing_token == granted_token
    assert released == lock_pb2.RELEASE_STATUS_RELEASED


@pytest.mark.slow
def test_a_grant_not_yet_replicated_is_lost(replicated_cluster: RedisCluster) -> None:
    """What the server promises a holder when a master fails over: nothing more than
    Redis's replication does. A lock granted by the master, whose replica had not yet
    received the grant, is free after the failover (and can be granted to another)."""
    server = PatternsServer(replicated_cluster.url).start()
    name = f"lost-{uuid.uuid4().hex[:8]}"
    master = replicated_cluster.master_of(name)
    replica = replicated_cluster.replica_of(master)
    try:
        with grpc.insecure_channel(server.address) as channel:
            locker = lock_pb2_grpc.LockerStub(channel)
            ttl = Duration(seconds=60)
            # The grant reaches the master only: its link to the replica is cut, and the
            # replica, frozen, cannot connect again before the master dies.
            replica.freeze()
            master.client().client_kill_filter(_type="slave")  # "replica" from redis-py 8.1
            granted = locker.Acquire(lock_pb2.AcquireRequest(name=name, ttl=ttl), timeout=10)
            assert granted.acquired
            master.stop()
            replica.thaw()
            promotion(replica, time.monotonic() - RECOVERY_BOUND / 2)
            inspected = once_answered(
                lambda: locker.Inspect(lock_pb2.InspectRequest(name=name), timeout=10),
                within=RECOVERY_BOUND,
            )
            assert not inspected.held
            released = locker.Release(
                lock_pb2.ReleaseRequest(name=name, token=granted.token), timeout=10
            )
            assert released.status == lock_pb2.RELEASE_STATUS_NOT_HELD
            other = locker.Acquire(lock_pb2.AcquireRequest(name=name, ttl=ttl), timeout=10)
            assert other.acquired
            # The fence counter's increment was lost with the grant; the next token is
            # still greater, since tokens start from the Redis clock (the new master's
            # here: on one machine, never behind the old one's).
            assert other.fencing_token > granted.fencing_token
            print(
                "fencing tokens: the lost grant's",
                granted.fencing_token,
                "the next's",
                other.fencing_token,
            )
    finally:
        server.stop()


@pytest.mark.slow
def test_pipelines_find_the_promoted_replica(replicated_cluster: RedisCluster) -> None:
    """Batches of several commands only (no lone command, no health probe to refresh the
    topology): once the replica of a killed master is promoted, they are served again."""
    tag = names_on(replicated_cluster, replicated_cluster.masters()[0], "tag", 1)[0]
    victim = replicated_cluster.master_of(tag)
    replica = replicated_cluster.replica_of(victim)
    keys = [f"{{{tag}}}:{part}" for part in ("a", "b")]

    async def scenario() -> tuple[float, float]:
        redis = RedisBackend.from_url(replicated_cluster.url, prefix="p", timeout=1, batch_wait=0)
        try:
            set_both = [Command(("SET", key, "1", "PX", 60_000)) for key in keys]
            await redis.run(*set_both)
            killed_at = time.monotonic()
            await asyncio.to_thread(victim.stop)
            promoted = asyncio.create_task(asyncio.to_thread(promotion, replica, killed_at))
            while True:
                try:
                    await redis.run(*set_both)
                    return time.monotonic() - killed_at, await promoted
                except Unavailable:
                    assert time.monotonic() - killed_at < RECOVERY_BOUND, "never served again"
                    await asyncio.sleep(0.05)
        finally:
            await redis.close()

    served_after, promoted_after = asyncio.run(scenario())
    print(f"promoted after {promoted_after:.2f} s, served after {served_after:.2f} s")
    assert served_after - promoted_after < 2.5


@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    binary = redis_server_binary()
    master = RedisServer(tmp_path / "master", binary)
    master.start()
    replica = RedisServer(
        tmp_path / "replica", binary, extra_args=["--replicaof", "127.0.0.1", str(master.port)]
    )
    try:
        replica.start()
        look = replica.client()
        eventually(
            lambda: look.info("replication").get("master_link_status") == "up",
            what="the replica in sync",
        )
        yield master, replica
    finally:
        replica.stop()
        master.stop()


def test_with_wait_replicas_an_answer_follows_the_replicas_copy(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    """--redis-wait-replicas 1: when a grant is answered, the replica has it already."""
    master, replica = master_and_replica
    server = PatternsServer(master.url, "--redis-wait-replicas", "1").start()
    look = replica.client()
    try:
        with grpc.insecure_channel(server.address) as channel:
            locker = lock_pb2_grpc.LockerStub(channel)
            for number in range(50):
                name = f"waited-{uuid.uuid4().hex[:8]}-{number}"
                request = lock_pb2.AcquireRequest(name=name, ttl=Duration(seconds=60))
                assert locker.Acquire(request, timeout=10).acquired
                assert list(look.scan_iter(match=f"*{{{name}}}*")), "the replica lacks the grant"
            # A replica that does not confirm delays answers by half of --redis-timeout
            # (1 s), and they stand: the master made the writes.
            replica.freeze()
            try:
                started = time.monotonic()
                name = f"unconfirmed-{uuid.uuid4().hex[:8]}"
                request = lock_pb2.AcquireRequest(name=name, ttl=Duration(seconds=60))
                assert locker.Acquire(request, timeout=10).acquired
                assert 0.4 < time.monotonic() - started < 5
            finally:
                replica.thaw()
        server.wait_for_log("0 of 1 replicas confirmed writes within 500 ms")
    finally:
        server.stop()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[RedisSentinels]:
    require_tool("redis-server")
    require_tool("redis-sentinel")
    watched = RedisSentinels(tmp_path / "sentinel", down_after_ms=1_000)
    watched.start()
    yield watched
    watched.stop()


@pytest.mark.slow
def test_a_sentinel_failover_under_load(sentinels: RedisSentinels) -> None:
    """redis+sentinel://: the server finds the master through the Sentinels, and the new
    master after the old one dies; meanwhile calls answer OK or UNAVAILABLE with RetryInfo,
    a stream ends UNAVAILABLE, and a new subscription receives events."""
    server = PatternsServer(sentinels.url).start()
    period = windows_of(sentinels.master.url).calm(timedelta(hours=1))
    rule = pb.Policy(algorithm=pb.ALGORITHM_FIXED_WINDOW, limit=1_000_000, period=period)
    keys = [f"user:{uuid.uuid4()}" for _ in range(10)]
    old_master = sentinels.master.port

    async def scenario() -> tuple[Answers, float, float, str, tuple[int, bytes]]:
        answers = Answers()
        async with grpc.aio.insecure_channel(server.address) as channel:
            limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
            events = events_pb2_grpc.EventsStub(channel)
            stream = events.Subscribe(events_pb2.SubscribeRequest(channels=["news"]), timeout=60)
            assert (await stream.read()).HasField("subscribed")
            stop = asyncio.Event()

            async def check_loop() -> None:
                while not stop.is_set():
                    calls = [
                        limiter.Check(pb.CheckRequest(key=key, policy=rule), timeout=5)
                        for key in keys
                    ]
                    for outcome in await asyncio.gather(*calls, return_exceptions=True):
                        if isinstance(outcome, grpc.RpcError):
                            answers.record("check", outcome)
                        elif isinstance(outcome, BaseException):
                            raise outcome
                        else:
                            answers.record("check", None)
                    await asyncio.sleep(0.01)

            loop = asyncio.create_task(check_loop())
            await asyncio.sleep(0.5)
            answers.fault_at = time.monotonic()
            await asyncio.to_thread(sentinels.master.stop)
            try:
                while True:
                    await stream.read()
            except grpc.RpcError as ended:
                stream_end = describe(ended)
            promoted = await asyncio.to_thread(
                sentinel_promotion, sentinels, old_master, answers.fault_at
            )
            deadline = time.monotonic() + RECOVERY_BOUND
            while time.monotonic() < deadline:
                after = [o for t, _, o in answers.seen if t > promoted]
                if len(after) > 30 and all(o == "OK" for o in after[-30:]):
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await loop
            while True:
                again = events.Subscribe(events_pb2.SubscribeRequest(channels=["news"]), timeout=30)
                try:
                    assert (await again.read()).HasField("subscribed")
                    break
                except grpc.RpcError as error:
                    answers.record("resubscribe", error)
                    assert time.monotonic() - answers.fault_at < 3 * RECOVERY_BOUND
                    await asyncio.sleep(0.1)
            published = await events.Publish(
                events_pb2.PublishRequest(channel="news", payload=b"after"), timeout=10
            )
            event = (published.receivers, (await again.read()).event.payload)
            again.cancel()
        return answers, answers.served_again("check"), promoted, stream_end, event

    try:
        answers, recovered, promoted, stream_end, event = asyncio.run(scenario())
    finally:
        server.stop()
    print(
        f"Sentinel: promoted after {promoted:.2f} s, served again after {recovered:.2f} s,",
        Counter(outcome for _, _, outcome in answers.seen),
    )
    assert answers.outcomes() <= ACCEPTED
    assert stream_end in ACCEPTED - {"OK"}
    assert recovered < RECOVERY_BOUND
    assert recovered - promoted < 2.5, "the server kept sending to the lost master"
    assert event == (1, b"after")


def sentinel_promotion(sentinels: RedisSentinels, old_master: int, since: float) -> float:
    """Seconds from `since` until the Sentinels name another master."""
    while sentinels.master_now() == old_master:
        assert time.monotonic() - since < RECOVERY_BOUND, "no new master"
        time.sleep(0.01)
    return time.monotonic() - since


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis+sentinel://127.0.0.1:1/", "the path must be /service_name"),
        ("redis+sentinel://127.0.0.1:1/svc/x", "the path must be /service_name"),
        ("redis+sentinel://127.0.0.1/svc", "a Sentinel must be given as host:port"),
        ("redis+sentinel://127.0.0.1:1/svc?socket_timeout=1", "take no options"),
    ],
)
def test_an_unusable_sentinel_url_is_refused_at_start(url: str, said: str) -> None:
    with pytest.raises(RedisURLError, match=said):
        RedisBackend.from_url(url, prefix="p", timeout=1, batch_wait=0)


def test_a_sentinel_urls_password_is_never_shown() -> None:
    url = "redis+sentinel://patterns:s3cret@127.0.0.1:1,127.0.0.1/svc"
    with pytest.raises(RedisURLError) as caught:
        RedisBackend.from_url(url, prefix="p", timeout=1, batch_wait=0)
    assert "redis+sentinel://patterns:***@127.0.0.1:1,127.0.0.1/svc" in str(caught.value)
    assert "s3cret" not in str(caught.value)
