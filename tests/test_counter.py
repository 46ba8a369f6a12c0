"""UniqueCounter contract: runs against every backend (standalone 7, 6.2, Cluster)."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.counter.v1 import counter_pb2 as pb
from patterns.counter.v1 import counter_pb2_grpc

from devtools.processes import PatternsServer
from tests.durations import duration_ms
from tests.rpc import assert_invalid

Stub = counter_pb2_grpc.UniqueCounterStub
MINUTE = Duration(seconds=60)


@pytest.fixture
def counter(channel: grpc.Channel) -> Stub:
    return Stub(channel)


def add(counter: Stub, key: str, items: list[str], ttl: Duration | None = None) -> bool:
    return counter.Add(pb.AddRequest(key=key, items=items, ttl=ttl)).changed


def count(counter: Stub, *keys: str) -> int:
    return counter.Count(pb.CountRequest(keys=keys)).count


def test_add_then_count(counter: Stub, new_key: Callable[[], str]) -> None:
    key = new_key()
    assert count(counter, key) == 0
    assert add(counter, key, ["alice", "bob", "carol"]) is True
    assert count(counter, key) == 3


def test_adding_known_items_changes_nothing(counter: Stub, new_key: Callable[[], str]) -> None:
    key = new_key()
    add(counter, key, ["alice", "bob"])
    assert add(counter, key, ["bob", "alice", "alice"]) is False
    assert count(counter, key) == 2


def test_count_is_the_union_across_many_keys(counter: Stub, new_key: Callable[[], str]) -> None:
    # On the Cluster backend these 30 keys are spread over all three nodes.
    keys = [new_key() for _ in range(30)]
    for day, key in enumerate(keys):
        add(counter, key, [f"visitor-{day}", f"visitor-{day + 1}", "regular"])
    assert count(counter, *keys) == 32
    assert count(counter, keys[0], keys[1], keys[0]) == 4
    assert count(counter, keys[5], new_key()) == 3  # a missing key is empty


def stored_as(key: str) -> str:
    """The Redis key of counter `key`."""
    return f"patterns:default:counter:{{{key}}}"


def test_ttl_expires_the_counter(counter: Stub, new_key: Callable[[], str]) -> None:
    """The counter really is gone once its ttl has passed."""
    key = new_key()
    added_at = time.monotonic()
    add(counter, key, ["alice"], ttl=duration_ms(300))
    # There until its 300 ms are up: a machine that stalled longer than that cannot show it.
    assert count(counter, key) == 1 or time.monotonic() - added_at > 0.3
    time.sleep(0.8)  # half a second past the ttl
    assert count(counter, key) == 0


def test_ttl_is_renewed_by_each_add(
    counter: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    key = new_key()
    add(counter, key, ["alice"], ttl=Duration(seconds=1))
    add(counter, key, ["bob"], ttl=Duration(seconds=60))
    # The second Add replaced the first's expiry: a minute left, not a second (10 s of
    # room below it for a slow machine).
    assert 50_000 < backend_redis.pttl(stored_as(key)) <= 60_000
    assert count(counter, key) == 2


def test_merge_keeps_destination_items_and_returns_its_count(
    counter: Stub, new_key: Callable[[], str]
) -> None:
    destination, first, second = new_key(), new_key(), new_key()
    add(counter, destination, ["alice"])
    add(counter, first, ["bob", "carol"])
    add(counter, second, ["carol", "dave"])
    merged = counter.Merge(pb.MergeRequest(destination=destination, sources=[first, second]))
    assert merged.count == 4
    assert count(counter, destination) == 4
    assert count(counter, first) == 2  # sources are left as they were
    # Merging the same sources again adds nothing; a missing source is empty.
    again = counter.Merge(pb.MergeRequest(destination=destination, sources=[first, new_key()]))
    assert again.count == 4


def test_merge_ttl_expires_the_destination(
    counter: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    destination, source = new_key(), new_key()
    add(counter, source, ["alice"])
    counter.Merge(pb.MergeRequest(destination=destination, sources=[source], ttl=MINUTE))
    # The destination expires in a minute (10 s of room below it for a slow machine); the
    # source keeps no expiry (-1).
    assert 50_000 < backend_redis.pttl(stored_as(destination)) <= 60_000
    assert backend_redis.pttl(stored_as(source)) == -1
    assert count(counter, source) == 1


def test_100k_distinct_items_counted_within_2_percent(
    counter: Stub, new_key: Callable[[], str]
) -> None:
    key = new_key()
    for start in range(0, 100_000, 10_000):
        add(counter, key, [f"user-{n}" for n in range(start, start + 10_000)])
    estimate = count(counter, key)
    assert abs(estimate - 100_000) <= 2_000, estimate


def test_concurrent_adds_lose_nothing(server: PatternsServer, new_key: Callable[[], str]) -> None:
    """50 clients add 200 items each at once (half of them shared): the union is complete."""
    key = new_key()

    async def client(number: int) -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = Stub(channel)
            for batch in range(10):
                own = [f"client-{number}-{batch}-{i}" for i in range(10)]
                shared = [f"shared-{batch}-{i}" for i in range(10)]
                await stub.Add(pb.AddRequest(key=key, items=own + shared))

    async def scenario() -> None:
        await asyncio.gather(*(client(n) for n in range(50)))

    asyncio.run(scenario())
    with grpc.insecure_channel(server.address) as channel:
        estimate = count(Stub(channel), key)
    expected = 50 * 100 + 100
    assert abs(estimate - expected) <= expected * 0.02, estimate


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AddRequest(key="", items=["a"]), "key"),
        (pb.AddRequest(key="k" * 513, items=["a"]), "key"),
        (pb.AddRequest(key="é" * 257, items=["a"]), "key"),  # 514 bytes of UTF-8
        (pb.AddRequest(key="k", items=[]), "items"),
        (pb.AddRequest(key="k", items=["a"] * 10_001), "items"),
        (pb.AddRequest(key="k", items=["a", ""]), "items[1]"),
        (pb.AddRequest(key="k", items=["a", "b", "x" * 1_025]), "items[2]"),
        (pb.AddRequest(key="k", items=["a"], ttl=Duration(seconds=-1)), "ttl"),
        (pb.AddRequest(key="k", items=["a"], ttl=Duration(nanos=999_999)), "ttl"),
        (pb.AddRequest(key="k", items=["a"], ttl=Duration(seconds=3_651 * 86_400)), "ttl"),
        (pb.AddRequest(key="k", items=["a"], ttl=Duration(seconds=315_576_000_000)), "ttl"),
    ],
)
def test_add_rejects_bad_input(counter: Stub, request_: pb.AddRequest, field: str) -> None:
    assert_invalid(lambda: counter.Add(request_), field)


@pytest.mark.parametrize(
    ("keys", "field"),
    [([], "keys"), (["k"] * 101, "keys"), (["k", ""], "keys[1]"), (["k", "k" * 513], "keys[1]")],
)
def test_count_rejects_bad_input(counter: Stub, keys: list[str], field: str) -> None:
    assert_invalid(lambda: counter.Count(pb.CountRequest(keys=keys)), field)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.MergeRequest(destination="", sources=["a"]), "destination"),
        (pb.MergeRequest(destination="d" * 513, sources=["a"]), "destination"),
        (pb.MergeRequest(destination="d", sources=[]), "sources"),
        (pb.MergeRequest(destination="d", sources=["a"] * 101), "sources"),
        (pb.MergeRequest(destination="d", sources=["a", ""]), "sources[1]"),
        (pb.MergeRequest(destination="d", sources=["a"], ttl=Duration(seconds=-5)), "ttl"),
    ],
)
def test_merge_rejects_bad_input(counter: Stub, request_: pb.MergeRequest, field: str) -> None:
    assert_invalid(lambda: counter.Merge(request_), field)


@pytest.mark.parametrize("name", ["}starts-with-brace", "a}b{c", "{tagged}", "é:ü 🙂", " "])
def test_any_utf8_name_works(counter: Stub, new_key: Callable[[], str], name: str) -> None:
    key, other = new_key() + name, name + new_key()
    add(counter, key, ["a", "b"])
    add(counter, other, ["b", "c"])
    merged = counter.Merge(pb.MergeRequest(destination=key, sources=[other]))
    assert merged.count == count(counter, key, other) == 3
