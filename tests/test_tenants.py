"""Many teams, one server: two tenants that use the same names in every service, on every
backend (standalone 7, 6.2, Cluster), never see, change, count, receive, invalidate or
release anything of each other's; and their API keys appear in no log line and no error."""

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.cache.v1 import cache_pb2, cache_pb2_grpc
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc
from patterns.events.v1 import events_pb2, events_pb2_grpc
from patterns.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc
from patterns.lock.v1 import lock_pb2, lock_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from patterns.session.v1 import session_pb2, session_pb2_grpc
from patterns.streams.v1 import streams_pb2, streams_pb2_grpc

from devtools.processes import PatternsServer
from patterns_server.runtime.auth import new_token
from tests.rpc import bearer, details, rpc_error
from tests.tenants import Tenant, write_auth_file
from tests.windows import Windows

MINUTE = Duration(seconds=60)
ALPHA = Tenant("alpha", "team-alpha", *new_token())
BETA = Tenant("beta", "team-beta", *new_token())


@pytest.fixture(scope="session")
def tenant_server(
    backend_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PatternsServer]:
    """A server with an auth file of two tenants, logging every call."""
    auth = write_auth_file(tmp_path_factory.mktemp("auth") / "tenants.toml", [ALPHA, BETA])
    server = PatternsServer(backend_url, "--auth-file", str(auth), "--log-level", "debug")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def shared(tenant_server: PatternsServer) -> Iterator[grpc.Channel]:
    """One channel for both tenants: only the key sent with each call tells them apart."""
    with grpc.insecure_channel(tenant_server.address) as channel:
        yield channel


# Rate limits, counters


def test_rate_limits_are_counted_per_tenant(
    shared: grpc.Channel, new_key: Callable[[], str], windows: Windows
) -> None:
    limiter = ratelimit_pb2_grpc.RateLimiterStub(shared)
    policy = ratelimit_pb2.Policy(
        algorithm=ratelimit_pb2.ALGORITHM_FIXED_WINDOW,
        limit=2,
        period=windows.calm(timedelta(days=1)),
    )
    check = ratelimit_pb2.CheckRequest(key=new_key(), policy=policy, cost=2)
    assert limiter.Check(check, metadata=bearer(ALPHA), timeout=10).allowed
    assert not limiter.Check(check, metadata=bearer(ALPHA), timeout=10).allowed
    assert limiter.Check(check, metadata=bearer(BETA), timeout=10).allowed  # its own window
    reset = ratelimit_pb2.ResetRequest(key=check.key, policy=policy)
    limiter.Reset(reset, metadata=bearer(BETA), timeout=10)
    assert not limiter.Check(check, metadata=bearer(ALPHA), timeout=10).allowed


def test_counters_count_and_merge_only_their_tenants_items(
    shared: grpc.Channel, new_key: Callable[[], str]
) -> None:
    counter = counter_pb2_grpc.UniqueCounterStub(shared)
    key, destination = new_key(), new_key()
    add = counter_pb2.AddRequest(key=key, items=["a", "b", "c"])
    counter.Add(add, metadata=bearer(ALPHA), timeout=10)
    count = counter_pb2.CountRequest(keys=[key])
    assert counter.Count(count, metadata=bearer(BETA), timeout=10).count == 0
    merge = counter_pb2.MergeRequest(destination=destination, sources=[key])
    assert counter.Merge(merge, metadata=bearer(BETA), timeout=10).count == 0
    assert counter.Merge(merge, metadata=bearer(ALPHA), timeout=10).count == 3


# Events


def test_events_reach_only_their_tenants_subscribers(
    tenant_server: PatternsServer, new_key: Callable[[], str]
) -> None:
    """Beta subscribes to the channel Alpha publishes on, and to `*`: it receives none of
    Alpha's messages, and Alpha's publish counts no receiver of Beta's."""
    channel = new_key()

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(tenant_server.address) as opened:
            events = events_pb2_grpc.EventsStub(opened)
            watching = events_pb2.SubscribeRequest(channels=[channel], patterns=["*"])
            beta = events.Subscribe(watching, metadata=bearer(BETA), timeout=30)
            alpha = events.Subscribe(
                events_pb2.SubscribeRequest(channels=[channel]), metadata=bearer(ALPHA), timeout=30
            )
            assert (await beta.read()).WhichOneof("kind") == "subscribed"
            assert (await alpha.read()).WhichOneof("kind") == "subscribed"
            publish = events_pb2.PublishRequest(channel=channel, payload=b"alpha's")
            published = await events.Publish(publish, metadata=bearer(ALPHA), timeout=10)
            assert published.receivers == 1  # Alpha's own stream, no one of Beta's
            assert (await alpha.read()).event.payload == b"alpha's"
            mine = events_pb2.PublishRequest(channel=channel, payload=b"beta's")
            await events.Publish(mine, metadata=bearer(BETA), timeout=10)
            # Beta's next message is its own (twice: by channel and by `*`), never Alpha's.
            assert (await beta.read()).event.payload == b"beta's"
            assert (await beta.read()).event.payload == b"beta's"
            alpha.cancel()
            beta.cancel()

    asyncio.run(scenario())


# Locks


def test_a_tenants_lock_cannot_be_seen_released_or_forced_by_another(
    shared: grpc.Channel, new_key: Callable[[], str]
) -> None:
    locker = lock_pb2_grpc.LockerStub(shared)
    name = new_key()
    held = locker.Acquire(
        lock_pb2.AcquireRequest(name=name, ttl=MINUTE), metadata=bearer(ALPHA), timeout=10
    )
    assert held.acquired
    inspect = lock_pb2.InspectRequest(name=name)
    assert not locker.Inspect(inspect, metadata=bearer(BETA), timeout=10).held
    stolen = lock_pb2.ReleaseRequest(name=name, token=held.token)
    released = locker.Release(stolen, metadata=bearer(BETA), timeout=10)
    assert released.status == lock_pb2.RELEASE_STATUS_NOT_HELD
    forced = locker.ForceRelease(
        lock_pb2.ForceReleaseRequest(name=name), metadata=bearer(BETA), timeout=10
    )
    assert not forced.released
    mine = locker.Acquire(
        lock_pb2.AcquireRequest(name=name, ttl=MINUTE), metadata=bearer(BETA), timeout=10
    )
    assert mine.acquired and mine.fencing_token != held.fencing_token  # its own lock
    state = locker.Inspect(inspect, metadata=bearer(ALPHA), timeout=10)
    assert state.held and state.fencing_token == held.fencing_token


# Cache


def test_cache_entries_tags_and_prefixes_stay_in_their_tenant(
    shared: grpc.Channel, new_key: Callable[[], str]
) -> None:
    cache = cache_pb2_grpc.CacheStub(shared)
    prefix, tag = new_key(), new_key()
    key = f"{prefix}:user:1"
    cache.Set(
        cache_pb2.SetRequest(key=key, value=b"alpha's", ttl=MINUTE, tags=[tag]),
        metadata=bearer(ALPHA),
        timeout=10,
    )
    get = cache_pb2.GetRequest(key=key)
    assert not cache.Get(get, metadata=bearer(BETA), timeout=10).found
    invalidate = cache_pb2.InvalidateTagsRequest(tags=[tag])
    assert cache.InvalidateTags(invalidate, metadata=bearer(BETA), timeout=10).deleted == 0
    by_prefix = cache_pb2.InvalidatePrefixRequest(prefix=prefix)
    assert cache.InvalidatePrefix(by_prefix, metadata=bearer(BETA), timeout=10).deleted == 0
    deleted = cache.Delete(cache_pb2.DeleteRequest(keys=[key]), metadata=bearer(BETA), timeout=10)
    assert deleted.deleted == 0
    assert cache.Get(get, metadata=bearer(ALPHA), timeout=10).value == b"alpha's"
    # A fill lease of one tenant makes no one of the other wait.
    lease = cache_pb2.GetOrLeaseRequest(key=f"{prefix}:cold", lease_ttl=MINUTE)
    assert cache.GetOrLease(lease, metadata=bearer(ALPHA), timeout=10).HasField("lease")
    assert cache.GetOrLease(lease, metadata=bearer(BETA), timeout=10).HasField("lease")


# Leaderboards


def test_boards_of_one_tenant_are_not_the_others(
    shared: grpc.Channel, new_key: Callable[[], str]
) -> None:
    boards = leaderboard_pb2_grpc.LeaderboardStub(shared)
    board = new_key()
    submit = leaderboard_pb2.SubmitRequest(board=board, member="ada", score=42)
    boards.Submit(submit, metadata=bearer(ALPHA), timeout=10)
    top = leaderboard_pb2.TopRequest(board=board, limit=10)
    assert boards.Top(top, metadata=bearer(BETA), timeout=10).total == 0
    remove = leaderboard_pb2.RemoveRequest(board=board, members=["ada"])
    assert boards.Remove(remove, metadata=bearer(BETA), timeout=10).removed == 0
    assert [e.member for e in boards.Top(top, metadata=bearer(ALPHA), timeout=10).entries] == [
        "ada"
    ]


# Sessions


def test_a_session_id_of_one_tenant_names_nothing_for_another(
    shared: grpc.Channel, new_key: Callable[[], str]
) -> None:
    sessions = session_pb2_grpc.SessionsStub(shared)
    user = new_key()
    created = sessions.Create(
        session_pb2.CreateRequest(user_id=user, ttl=MINUTE), metadata=bearer(ALPHA), timeout=10
    ).session
    for call in (
        lambda: sessions.Get(session_pb2.GetRequest(id=created.id), metadata=bearer(BETA)),
        lambda: sessions.Rotate(session_pb2.RotateRequest(id=created.id), metadata=bearer(BETA)),
        lambda: sessions.Update(
            session_pb2.UpdateRequest(id=created.id, set={"x": "y"}), metadata=bearer(BETA)
        ),
    ):
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert details(error)["ErrorInfo"].reason == "SESSION_NOT_FOUND"
    destroy = session_pb2.DestroyRequest(id=created.id)
    assert not sessions.Destroy(destroy, metadata=bearer(BETA), timeout=10).destroyed
    listing = session_pb2.ListRequest(user_id=user)
    assert sessions.List(listing, metadata=bearer(BETA), timeout=10).total == 0
    everything = session_pb2.DestroyAllRequest(user_id=user)
    assert sessions.DestroyAll(everything, metadata=bearer(BETA), timeout=10).destroyed == 0
    alive = sessions.Get(session_pb2.GetRequest(id=created.id), metadata=bearer(ALPHA))
    assert alive.session.attributes == created.attributes


# Streams


def test_a_tenants_streams_groups_and_idempotency_keys_are_its_own(
    tenant_server: PatternsServer, shared: grpc.Channel, new_key: Callable[[], str]
) -> None:
    streams = streams_pb2_grpc.StreamsStub(shared)
    stream = new_key()
    append = streams_pb2.AppendRequest(stream=stream, payload=b"alpha's", idempotency_key="k")
    first = streams.Append(append, metadata=bearer(ALPHA), timeout=10)
    beta_append = streams_pb2.AppendRequest(stream=stream, payload=b"beta's", idempotency_key="k")
    again = streams.Append(beta_append, metadata=bearer(BETA), timeout=10)
    assert not again.duplicate  # the idempotency key is the tenant's own too
    read = streams_pb2.ReadRequest(stream=stream)
    assert [e.id for e in streams.Read(read, metadata=bearer(ALPHA)).entries] == [first.id]
    assert [e.id for e in streams.Read(read, metadata=bearer(BETA)).entries] == [again.id]

    async def consumed() -> list[bytes]:
        async with grpc.aio.insecure_channel(tenant_server.address) as channel:
            call = streams_pb2_grpc.StreamsStub(channel).Consume(metadata=bearer(BETA), timeout=30)
            opening = streams_pb2.ConsumeOpen(
                stream=stream, group="g", consumer="c", start=streams_pb2.START_POSITION_EARLIEST
            )
            await call.write(streams_pb2.ConsumeRequest(open=opening))
            assert (await call.read()).WhichOneof("kind") == "subscribed"
            payloads = [(await call.read()).delivery.payload]
            call.cancel()
            return payloads

    assert asyncio.run(consumed()) == [b"beta's"]  # beta's own stream only
    info = streams_pb2.InfoRequest(stream=stream)
    assert not streams.Info(info, metadata=bearer(ALPHA), timeout=10).groups


# Keys: never in a log line, never in an error


def test_no_key_appears_in_the_log_or_in_an_error(
    tenant_server: PatternsServer, shared: grpc.Channel, new_key: Callable[[], str]
) -> None:
    counter = counter_pb2_grpc.UniqueCounterStub(shared)
    count = counter_pb2.CountRequest(keys=[new_key()])
    counter.Count(count, metadata=bearer(ALPHA), timeout=10)
    almost = ALPHA.token[:-1] + ("x" if ALPHA.token[-1] != "x" else "y")
    refused = rpc_error(
        lambda: counter.Count(count, metadata=[("authorization", f"Bearer {almost}")])
    )
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert almost not in (refused.details() or "")
    assert "tenant=alpha" in tenant_server.log  # the debug log of every call was on
    for secret in (ALPHA.token, BETA.token, almost, ALPHA.token[4:], BETA.token[4:]):
        assert secret not in tenant_server.log


def test_keys_written_in_the_auth_file_are_digests_only(tmp_path: Path) -> None:
    auth = write_auth_file(tmp_path / "tenants.toml", [ALPHA, BETA]).read_text()
    assert ALPHA.digest in auth and ALPHA.token not in auth and BETA.token not in auth
