"""Cache contract on every backend (standalone 7, 6.2, Cluster): values, tags, prefixes,
and fill leases against stampedes."""

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from patterns.cache.v1 import cache_pb2 as pb
from patterns.cache.v1 import cache_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from tests.durations import duration_ms
from tests.grants import patient_server, sleep_past, wait_until_script_held, writes_paused
from tests.rpc import assert_invalid, assert_unavailable, grpcurl_call, once_answered, stub_for
from tests.waiting import eventually

Stub = cache_pb2_grpc.CacheStub
MINUTE = Duration(seconds=60)


@pytest.fixture
def cache(channel: grpc.Channel) -> Stub:
    return Stub(channel)


def put(cache: Stub, key: str, value: bytes, **fields: Any) -> bool:
    return cache.Set(pb.SetRequest(key=key, value=value, **fields), timeout=10).stored


def get(cache: Stub, key: str) -> bytes | None:
    response = cache.Get(pb.GetRequest(key=key), timeout=10)
    return response.value if response.found else None


# Values


def test_set_then_get_with_expiry(cache: Stub, new_key: Callable[[], str]) -> None:
    key, other = new_key(), new_key()
    assert cache.Get(pb.GetRequest(key=key)) == pb.GetResponse()  # a miss is an answer
    assert put(cache, key, b"value", ttl=MINUTE)
    got = cache.Get(pb.GetRequest(key=key))
    assert got.found and got.value == b"value"
    assert 55 < got.ttl_remaining.ToTimedelta().total_seconds() <= 60
    assert put(cache, other, b"")  # the default ttl: one hour
    default = cache.Get(pb.GetRequest(key=other))
    assert default.found and default.value == b""
    assert 3_500 < default.ttl_remaining.ToTimedelta().total_seconds() <= 3_600


def test_values_expire(cache: Stub, new_key: Callable[[], str]) -> None:
    """Values set with a ttl or an expire_at really are gone once their time is up."""
    key, other = new_key(), new_key()
    set_at = time.monotonic()
    put(cache, key, b"short", ttl=duration_ms(200))
    at = Timestamp()
    at.FromMilliseconds(int(time.time() * 1000) + 300)
    put(cache, other, b"until", expire_at=at)
    # There until their time is up: a machine that stalled longer than that cannot show it.
    assert get(cache, key) == b"short" or time.monotonic() - set_at > 0.2
    assert get(cache, other) == b"until" or time.monotonic() - set_at > 0.3
    time.sleep(0.8)  # half a second past the later end
    assert get(cache, key) is None and get(cache, other) is None


def test_only_if_absent(cache: Stub, new_key: Callable[[], str]) -> None:
    key = new_key()
    assert put(cache, key, b"first", only_if_absent=True)
    assert not put(cache, key, b"second", only_if_absent=True)
    assert get(cache, key) == b"first"


def test_get_many_answers_in_order_across_nodes(cache: Stub, new_key: Callable[[], str]) -> None:
    keys = [new_key() for _ in range(50)]
    for number, key in enumerate(keys[::2]):
        put(cache, key, b"%d" % number)
    asked = [*keys, keys[0]]
    entries = cache.GetMany(pb.GetManyRequest(keys=asked), timeout=10).entries
    assert [e.key for e in entries] == asked
    assert [e.found for e in entries] == [n % 2 == 0 for n in range(50)] + [True]
    assert [e.value for e in entries[:4:2]] == [b"0", b"1"]


def test_delete_counts_what_existed(cache: Stub, new_key: Callable[[], str]) -> None:
    keys = [new_key() for _ in range(10)]
    for key in keys[:6]:
        put(cache, key, b"x")
    assert cache.Delete(pb.DeleteRequest(keys=keys)).deleted == 6
    assert cache.Delete(pb.DeleteRequest(keys=keys)).deleted == 0


def test_the_largest_requests_are_accepted(cache: Stub, new_key: Callable[[], str]) -> None:
    key = new_key() + "k" * 480
    tags = [f"{n:03d}" + "t" * 509 for n in range(64)]
    value = bytes(range(256)) * 4096  # 1 MiB
    assert put(cache, key, value, ttl=MINUTE, tags=tags)
    keys = [key[:-4] + f"{n:04d}" for n in range(1_000)]
    entries = cache.GetMany(pb.GetManyRequest(keys=[key, *keys[1:]]), timeout=30).entries
    assert entries[0].value == value and len(entries) == 1_000
    assert cache.InvalidateTags(pb.InvalidateTagsRequest(tags=tags), timeout=30).deleted == 1


# Invalidation


def test_tag_invalidation_deletes_exactly_the_tagged_entries(
    cache: Stub, new_key: Callable[[], str]
) -> None:
    """Across Cluster slots; an entry set again without the tag survives."""
    tag, other_tag = new_key(), new_key()
    tagged = [new_key() for _ in range(30)]
    for key in tagged:
        put(cache, key, b"v", tags=[tag, other_tag])
    untagged, retagged = new_key(), tagged[0]
    put(cache, untagged, b"v", tags=[other_tag])
    put(cache, retagged, b"new", tags=[other_tag])  # no longer carries `tag`
    deleted = cache.InvalidateTags(pb.InvalidateTagsRequest(tags=[tag]), timeout=30).deleted
    assert deleted == 29
    assert [get(cache, key) for key in tagged[1:]] == [None] * 29
    assert get(cache, retagged) == b"new" and get(cache, untagged) == b"v"
    assert cache.InvalidateTags(pb.InvalidateTagsRequest(tags=[tag])).deleted == 0
    assert cache.InvalidateTags(pb.InvalidateTagsRequest(tags=[other_tag])).deleted == 2


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_tag_indexes_expire_with_their_longest_lived_member(
    redis7: RedisServer, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    tag = new_key()
    with grpc.insecure_channel(server.address) as channel:
        cache = Stub(channel)
        put(cache, new_key(), b"v", tags=[tag], ttl=duration_ms(300))
        put(cache, new_key(), b"v", tags=[tag], ttl=MINUTE)
        index = f"patterns:default:cachetag:{{{tag}}}"
        assert 59_000 < redis7.client().pttl(index) <= 61_000
        assert redis7.client().zcard(index) == 2
        time.sleep(1.5)  # members are kept 1 s past their entry: then the first is gone
        put(cache, new_key(), b"v", tags=[tag], ttl=duration_ms(300))  # prunes the expired member
        assert redis7.client().zcard(index) == 2


def test_prefix_invalidation_deletes_exactly_the_matching_keys(
    server: PatternsServer, backend_url: str, new_key: Callable[[], str]
) -> None:
    """Among 10,000 keys, on every node; `*` in the prefix is taken literally."""
    base = new_key()

    async def scenario() -> tuple[int, int, int]:
        async with stub_for(server.address, Stub) as stub:
            names = [f"{base}:user:{n}" for n in range(9_000)] + [
                f"{base}:other:{n}" for n in range(1_000)
            ]
            for start in range(0, len(names), 500):
                await asyncio.gather(
                    *(
                        stub.Set(pb.SetRequest(key=n, value=b"v"))
                        for n in names[start : start + 500]
                    )
                )
            await stub.Set(pb.SetRequest(key=f"{base}:user*", value=b"literal"))
            literal = await stub.InvalidatePrefix(
                pb.InvalidatePrefixRequest(prefix=f"{base}:user*")
            )
            users = await stub.InvalidatePrefix(pb.InvalidatePrefixRequest(prefix=f"{base}:user:"))
            left = await stub.GetMany(
                pb.GetManyRequest(keys=[f"{base}:user:{n}" for n in range(0, 9_000, 9)])
            )
            others = await stub.GetMany(
                pb.GetManyRequest(keys=[f"{base}:other:{n}" for n in range(1_000)])
            )
            assert not any(entry.found for entry in left.entries)
            return literal.deleted, users.deleted, sum(e.found for e in others.entries)

    assert asyncio.run(scenario()) == (1, 9_000, 1_000)


# Fill leases


def test_a_stampede_gets_one_lease_and_everyone_the_value(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    """200 concurrent GetOrLease on a cold key: exactly one lease; once its holder sets
    the value, the 199 others return it, woken by the fill (not the 2 s fallback)."""
    key = new_key()

    async def scenario() -> tuple[int, float]:
        async with stub_for(server.address, Stub) as stub:
            request = pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE, wait_timeout=MINUTE)
            calls = [asyncio.ensure_future(stub.GetOrLease(request)) for _ in range(200)]
            done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
            (first,) = done
            assert first.result().WhichOneof("result") == "lease"
            await asyncio.sleep(0.3)  # the others wait meanwhile
            assert sum(call.done() for call in calls) == 1
            filled_at = time.monotonic()
            token = first.result().lease.token
            stored = await stub.Set(pb.SetRequest(key=key, value=b"computed", lease_token=token))
            assert stored.stored
            answers = await asyncio.gather(*calls)
            slowest = time.monotonic() - filled_at
            hits = [a for a in answers if a.WhichOneof("result") == "hit"]
            assert all(a.hit.value == b"computed" for a in hits)
            return len(hits), slowest

    hits, slowest = asyncio.run(scenario())
    assert hits == 199
    print(f"the last of 199 waiters had the value {slowest * 1000:.0f} ms after the fill")
    assert slowest < 1.5


def test_a_dead_fillers_lease_passes_to_one_waiter(cache: Stub, new_key: Callable[[], str]) -> None:
    key = new_key()
    first = cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=duration_ms(300)))
    assert first.WhichOneof("result") == "lease"  # its holder never fills
    request = pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE, wait_timeout=duration_ms(5_000))
    started = time.monotonic()
    second = cache.GetOrLease(request)
    assert second.WhichOneof("result") == "lease" and second.lease.token != first.lease.token
    assert time.monotonic() - started < 2.0
    assert cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE)).HasField("pending")


def test_a_wait_that_runs_out_is_pending(cache: Stub, new_key: Callable[[], str]) -> None:
    key = new_key()
    cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE))
    request = pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE, wait_timeout=duration_ms(300))
    assert cache.GetOrLease(request).WhichOneof("result") == "pending"
    put(cache, key, b"there")
    hit = cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE)).hit
    assert hit.value == b"there" and hit.ttl_remaining.seconds > 3_500


def test_a_released_lease_passes_to_a_waiter_at_once(
    cache: Stub, new_key: Callable[[], str]
) -> None:
    """A filler whose computation failed gives its lease back: a waiter takes the next
    one at once, not after the lease's minute; a second release, or one by a token that
    does not hold the lease, answers released = false and changes nothing."""
    key = new_key()
    first = cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE), timeout=10).lease
    request = pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE, wait_timeout=MINUTE)
    waiter = cache.GetOrLease.future(request, timeout=70)
    time.sleep(0.3)  # the waiter waits meanwhile
    assert not waiter.done()
    release = pb.ReleaseLeaseRequest(key=key, lease_token=first.token)
    released_at = time.monotonic()
    assert cache.ReleaseLease(release, timeout=10).released
    second = waiter.result()
    took = time.monotonic() - released_at
    print(f"the waiter had the next lease {took * 1000:.0f} ms after the release")
    assert second.WhichOneof("result") == "lease" and second.lease.token != first.token
    assert took < 1.5  # woken by the release, not by the lease's end a minute later
    assert not cache.ReleaseLease(release, timeout=10).released  # again: nothing to end
    assert cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE)).HasField("pending")
    assert put(cache, key, b"filled", lease_token=second.lease.token)  # the second still holds
    stranger = pb.ReleaseLeaseRequest(key=new_key(), lease_token=first.token)
    assert not cache.ReleaseLease(stranger, timeout=10).released  # no lease there at all


@pytest.fixture(scope="module")
def patient(backend_url: str) -> Iterator[PatternsServer]:
    server = patient_server(backend_url)
    yield server
    server.stop()


def test_a_fill_lease_granted_to_a_waiter_gone_meanwhile_is_given_back(
    patient: PatternsServer, backend_url: str, new_key: Callable[[], str]
) -> None:
    """A waiter's GetOrLease script waits in Redis (writes paused) while the waiter
    cancels; once the pause ends Redis grants it the fill lease, which it will never see.
    The server gives the lease back at once: the next caller gets it, instead of waiting
    out its minute as pending."""
    key = new_key()
    with grpc.insecure_channel(patient.address) as channel:
        cache = Stub(channel)
        first = cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=duration_ms(2_000)))
        assert first.WhichOneof("result") == "lease"  # its holder never fills
        request = pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE, wait_timeout=MINUTE)
        waiting = cache.GetOrLease.future(request)
        with writes_paused(backend_url) as nodes:
            wait_until_script_held(nodes)  # a try, at the latest as the first lease ends
            assert not waiting.done()
            waiting.cancel()
            sleep_past(first.lease.expires_at.ToNanoseconds() / 1e9)  # the try will succeed
            time.sleep(0.5)  # the cancellation reaches the server

        def leased() -> bool:
            answer = cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE))
            return answer.WhichOneof("result") == "lease"

        eventually(leased, within=5, what="the fill lease given back")


@pytest.mark.parametrize("invalidation", ["delete", "tag", "prefix"])
def test_a_fill_invalidated_meanwhile_is_refused(
    cache: Stub, new_key: Callable[[], str], invalidation: str
) -> None:
    """A slow filler never writes back what was invalidated while it computed."""
    key, tag = new_key(), new_key()
    put(cache, key, b"old", tags=[tag])
    cache.Delete(pb.DeleteRequest(keys=[key]))
    lease = cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE)).lease
    if invalidation == "delete":
        cache.Delete(pb.DeleteRequest(keys=[key]))
    elif invalidation == "tag":
        cache.InvalidateTags(pb.InvalidateTagsRequest(tags=[tag]))
    else:
        cache.InvalidatePrefix(pb.InvalidatePrefixRequest(prefix=key))
    assert not put(cache, key, b"stale", tags=[tag], lease_token=lease.token)
    assert get(cache, key) is None


def test_a_fill_whose_tag_was_invalidated_meanwhile_is_refused(
    cache: Stub, new_key: Callable[[], str]
) -> None:
    """The key was never under the tag before: only the tag's invalidation time tells."""
    key, tag = new_key(), new_key()
    lease = cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE)).lease
    time.sleep(0.002)
    cache.InvalidateTags(pb.InvalidateTagsRequest(tags=[tag]))
    assert not put(cache, key, b"stale", tags=[tag], lease_token=lease.token)
    fresh = cache.GetOrLease(pb.GetOrLeaseRequest(key=key, lease_ttl=MINUTE)).lease
    assert put(cache, key, b"fresh", tags=[tag], lease_token=fresh.token)


# Bad input, outages, grpcurl


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.SetRequest(key=""), "key"),
        (pb.SetRequest(key="k" * 513), "key"),
        (
            pb.SetRequest(key="k", ttl=MINUTE, expire_at=Timestamp(seconds=4_000_000_000)),
            "expire_at",
        ),
        (pb.SetRequest(key="k", expire_at=Timestamp(seconds=1_000_000)), "expire_at"),
        (pb.SetRequest(key="k", expire_at=Timestamp(seconds=253_402_300_000)), "expire_at"),
        (pb.SetRequest(key="k", ttl=Duration(nanos=999)), "ttl"),
        (pb.SetRequest(key="k", ttl=Duration(seconds=-1)), "ttl"),
        (pb.SetRequest(key="k", value=b"x" * ((1 << 20) + 1)), "value"),
        (pb.SetRequest(key="k", tags=["t"] * 65), "tags"),
        (pb.SetRequest(key="k", tags=["t", ""]), "tags[1]"),
        (pb.SetRequest(key="k", lease_token="t" * 65), "lease_token"),
    ],
)
def test_set_rejects_bad_input(cache: Stub, request_: pb.SetRequest, field: str) -> None:
    assert_invalid(lambda: cache.Set(request_), field)


def test_the_other_calls_reject_bad_input(cache: Stub) -> None:
    assert_invalid(lambda: cache.Get(pb.GetRequest()), "key")
    assert_invalid(lambda: cache.GetMany(pb.GetManyRequest()), "keys")
    assert_invalid(lambda: cache.GetMany(pb.GetManyRequest(keys=["k"] * 1_001)), "keys")
    assert_invalid(lambda: cache.Delete(pb.DeleteRequest(keys=["k", ""])), "keys[1]")
    assert_invalid(lambda: cache.InvalidateTags(pb.InvalidateTagsRequest()), "tags")
    too_many = pb.InvalidateTagsRequest(tags=["t"] * 65)
    assert_invalid(lambda: cache.InvalidateTags(too_many), "tags")
    assert_invalid(lambda: cache.InvalidatePrefix(pb.InvalidatePrefixRequest()), "prefix")
    assert_invalid(lambda: cache.GetOrLease(pb.GetOrLeaseRequest(key="k")), "lease_ttl")
    long_lease = pb.GetOrLeaseRequest(key="k", lease_ttl=Duration(seconds=3_601))
    assert_invalid(lambda: cache.GetOrLease(long_lease), "lease_ttl")
    for release, field in [
        (pb.ReleaseLeaseRequest(lease_token="t"), "key"),
        (pb.ReleaseLeaseRequest(key="k"), "lease_token"),
        (pb.ReleaseLeaseRequest(key="k", lease_token="t" * 65), "lease_token"),
    ]:
        assert_invalid(lambda: cache.ReleaseLease(release), field)  # noqa: B023


def test_redis_outage_is_unavailable_then_recovers(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    with grpc.insecure_channel(server_on_own_redis().address) as channel:
        cache = Stub(channel)
        assert put(cache, "k", b"v")
        own_redis.stop()
        assert_unavailable(lambda: cache.Get(pb.GetRequest(key="k"), timeout=10))
        own_redis.start()
        assert once_answered(lambda: put(cache, "k", b"back"))


def test_keys_live_in_the_namespace(
    redis7: RedisServer, server: PatternsServer, backend_url: str, new_key: Callable[[], str]
) -> None:
    key = new_key()
    with grpc.insecure_channel(server.address) as channel:
        put(Stub(channel), key, b"v", tags=["t"])
    if backend_url == redis7.url:
        client = redis.Redis.from_url(backend_url)
        assert client.exists(f"patterns:default:cache:{{{key}}}")


def test_grpcurl_sets_and_gets(
    grpcurl_path: str, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    key = new_key()

    def grpcurl(method: str, data: dict[str, Any]) -> Any:
        return grpcurl_call(grpcurl_path, server, method, data)

    stored = grpcurl("patterns.cache.v1.Cache/Set", {"key": key, "value": "aGk=", "ttl": "60s"})
    assert stored == {"stored": True}
    got = grpcurl("patterns.cache.v1.Cache/Get", {"key": key})
    assert got["found"] is True and got["value"] == "aGk="
