"""Cache used directly: values with expiry, batch reads, tags and prefixes, and fill
leases (one filler per cold key, waiters woken by the fill, stale fills refused)."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from patterns_server.cache.cache import Cache, Entry, Pending
from patterns_server.core.errors import InvalidArgument
from patterns_server.storage import RedisBackend
from patterns_server.storage.leases import Lease
from patterns_server.storage.wakeups import FALLBACK_SECONDS
from tests.patterns import WithRedis
from tests.waiting import eventually_async

MINUTE = timedelta(minutes=1)
DEFAULT_TTL = timedelta(hours=1)
MAX_VALUE = 1_024


def cache_of(redis: RedisBackend) -> Cache:
    return Cache(redis, DEFAULT_TTL, MAX_VALUE)


# Values


def test_set_then_get_with_the_time_left(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        assert await cache.get(key) == Entry(key, False)
        assert await cache.set(key, b"v1", ttl=MINUTE)
        entry = await cache.get(key)
        assert (entry.found, entry.value) == (True, b"v1")
        assert timedelta(seconds=50) < entry.ttl_remaining <= MINUTE
        assert await cache.set(key, b"v2")  # no expiry given: the cache's default
        entry = await cache.get(key)
        assert entry.value == b"v2" and DEFAULT_TTL - MINUTE < entry.ttl_remaining <= DEFAULT_TTL

    with_redis(scenario)


def test_values_expire(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        assert await cache.set(key, b"v", ttl=timedelta(milliseconds=100))
        await asyncio.sleep(0.5)  # well past its end
        assert not (await cache.get(key)).found

    with_redis(scenario)


def test_expire_at_places_the_end_on_the_redis_clock(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        now = await redis.now()
        assert await cache.set(key, b"v", expire_at=now + timedelta(seconds=90))
        assert timedelta(seconds=80) < (await cache.get(key)).ttl_remaining <= timedelta(seconds=90)
        for expiry in (
            {"expire_at": now - timedelta(seconds=1)},  # in the past
            {"expire_at": now + timedelta(days=3_651)},  # beyond the longest ttl
            {"expire_at": now + MINUTE, "ttl": MINUTE},  # both
        ):
            with pytest.raises(InvalidArgument) as refused:
                await cache.set(key, b"refused", **expiry)
            assert refused.value.field == "expire_at"
        assert (await cache.get(key)).value == b"v"  # nothing refused was written

    with_redis(scenario)


def test_only_if_absent_keeps_the_first_value(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        assert await cache.set(key, b"first", only_if_absent=True)
        assert not await cache.set(key, b"second", only_if_absent=True)
        assert (await cache.get(key)).value == b"first"

    with_redis(scenario)


def test_get_many_answers_in_request_order_across_nodes(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    keys = [new_key() for _ in range(30)]  # spread over every node of a Cluster

    async def scenario(redis: RedisBackend) -> list[Entry]:
        cache = cache_of(redis)
        for n, key in enumerate(keys):
            if n % 3:
                await cache.set(key, b"%d" % n)
        return await cache.get_many([*reversed(keys), keys[1]])

    entries = with_redis(scenario)
    assert [e.key for e in entries] == [*reversed(keys), keys[1]]
    expected = [(n % 3 != 0, b"%d" % n if n % 3 else b"") for n in reversed(range(30))]
    assert [(e.found, e.value) for e in entries] == [*expected, (True, b"1")]


def test_delete_counts_what_existed(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    present, absent = new_key(), new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        await cache.set(present, b"v")
        assert await cache.delete([present, absent]) == 1
        assert not (await cache.get(present)).found
        assert await cache.delete([present]) == 0

    with_redis(scenario)


# Tags and prefixes


def test_invalidate_tags_deletes_exactly_the_entries_that_carry_them(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user, team, other = new_key(), new_key(), new_key()
    a, b, c, d, e = (new_key() for _ in range(5))

    async def scenario(redis: RedisBackend) -> dict[str, bool]:
        cache = cache_of(redis)
        await cache.set(a, b"a", tags=[user])
        await cache.set(b, b"b", tags=[user, team])  # carries both: deleted, counted once
        await cache.set(c, b"c", tags=[team])
        await cache.set(d, b"d", tags=[other])
        await cache.set(e, b"e")
        assert await cache.invalidate_tags([user, team, user]) == 3
        entries = await cache.get_many([a, b, c, d, e])
        return {entry.key: entry.found for entry in entries}

    assert with_redis(scenario) == {a: False, b: False, c: False, d: True, e: True}


def test_an_entry_set_again_without_the_tag_survives_its_invalidation(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key, tag = new_key(), new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        await cache.set(key, b"tagged", tags=[tag])
        await cache.set(key, b"untagged")  # replaces the value and its tags
        assert await cache.invalidate_tags([tag]) == 0
        assert (await cache.get(key)).value == b"untagged"

    with_redis(scenario)


def test_invalidate_prefix_deletes_exactly_the_keys_that_start_with_it(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """The prefix is taken literally (`*` is no glob), counts entries only, and ends the
    fills of the keys it covers."""
    base = new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        for suffix in (":a", ":a:1", ":ab", ":b", "*x"):
            await cache.set(base + suffix, b"v")
        filling = await cache.get_or_lease(base + ":a:2", MINUTE)  # a fill, no entry yet
        assert isinstance(filling, Lease)
        assert await cache.invalidate_prefix(base + ":a:") == 1
        assert await cache.invalidate_prefix(base + "*") == 1  # only "<base>*x"
        assert await cache.invalidate_prefix(base + ":a") == 2
        left = await cache.get_many([base + s for s in (":a", ":a:1", ":ab", ":b", "*x")])
        assert [e.found for e in left] == [False, False, False, True, False]
        # The fill was ended: its token stores nothing, and the key can be leased anew.
        assert not await cache.set(base + ":a:2", b"stale", lease_token=filling.token)
        assert isinstance(await cache.get_or_lease(base + ":a:2", MINUTE), Lease)

    with_redis(scenario)


# Fill leases


def test_a_cold_key_is_leased_once_and_the_fill_is_read(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        before = await redis.now()
        lease = await cache.get_or_lease(key, MINUTE)
        assert isinstance(lease, Lease)
        assert before <= lease.expires_at - MINUTE <= await redis.now()
        assert isinstance(await cache.get_or_lease(key, MINUTE), Pending)  # not twice
        assert await cache.set(key, b"filled", lease_token=lease.token)
        hit = await cache.get_or_lease(key, MINUTE)
        assert isinstance(hit, Entry) and (hit.found, hit.value) == (True, b"filled")

    with_redis(scenario)


def test_a_waiter_is_woken_by_the_fill(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> float:
        cache, loop = cache_of(redis), asyncio.get_running_loop()
        lease = await cache.get_or_lease(key, MINUTE)
        assert isinstance(lease, Lease)
        waiter = asyncio.create_task(cache.get_or_lease(key, MINUTE, wait=MINUTE))
        await eventually_async(lambda: redis.subscribed == (1, 0))  # on the key's channel
        await asyncio.sleep(0.2)  # past its attempt after subscribing: now it sleeps
        assert not waiter.done()
        filled_at = loop.time()
        assert await cache.set(key, b"filled", lease_token=lease.token)
        answer = await asyncio.wait_for(waiter, 10)
        assert isinstance(answer, Entry) and answer.value == b"filled"
        return loop.time() - filled_at

    # Woken by the fill, not by its fallback (2 s; the filler's lease had a minute left).
    assert with_redis(scenario) < FALLBACK_SECONDS / 2


def test_a_wait_that_runs_out_is_pending(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        assert isinstance(await cache.get_or_lease(key, MINUTE), Lease)
        wait = timedelta(milliseconds=300)
        assert isinstance(await cache.get_or_lease(key, MINUTE, wait=wait), Pending)

    with_redis(scenario)


def test_a_fill_after_the_key_was_deleted_is_refused(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        lease = await cache.get_or_lease(key, MINUTE)
        assert isinstance(lease, Lease)
        assert await cache.delete([key]) == 0  # no value yet, but the fill is ended
        assert not await cache.set(key, b"stale", lease_token=lease.token)
        assert not (await cache.get(key)).found

    with_redis(scenario)


def test_a_fill_under_a_tag_invalidated_since_the_lease_is_refused(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key, tag = new_key(), new_key()

    async def scenario(redis: RedisBackend) -> None:
        cache = cache_of(redis)
        lease = await cache.get_or_lease(key, MINUTE)
        assert isinstance(lease, Lease)
        await cache.invalidate_tags([tag])  # what the filler read may be stale now
        assert not await cache.set(key, b"stale", tags=[tag], lease_token=lease.token)
        assert not (await cache.get(key)).found
        # The lease itself stands: a value under no invalidated tag is stored.
        assert await cache.set(key, b"fresh", tags=[new_key()], lease_token=lease.token)

    with_redis(scenario)


def test_two_hundred_lookups_of_a_cold_key_at_once_grant_exactly_one_lease(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> list[str]:
        caches = [cache_of(redis) for _ in range(4)]  # as if from four servers
        answers = await asyncio.gather(
            *(caches[n % 4].get_or_lease(key, MINUTE) for n in range(200))
        )
        return [type(answer).__name__ for answer in answers]

    answers = with_redis(scenario)
    assert (answers.count("Lease"), answers.count("Pending")) == (1, 199)


def test_a_stampede_of_two_hundred_gets_one_filler_and_the_value_for_all(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> list[bytes]:
        caches = [cache_of(redis) for _ in range(4)]
        return await asyncio.gather(*(read_through(caches[n % 4], key) for n in range(200)))

    values = with_redis(scenario)
    assert (values.count(b"filled it"), values.count(b"computed")) == (1, 199)


def test_a_dead_fillers_lease_passes_to_exactly_one_waiter(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    key = new_key()

    async def scenario(redis: RedisBackend) -> list[bytes]:
        cache = cache_of(redis)
        dead = await cache.get_or_lease(key, timedelta(milliseconds=100))  # never fills
        assert isinstance(dead, Lease)
        return await asyncio.gather(*(read_through(cache, key) for _ in range(50)))

    values = with_redis(scenario)
    assert (values.count(b"filled it"), values.count(b"computed")) == (1, 49)


async def read_through(cache: Cache, key: str) -> bytes:
    """The value of `key`, computed by this caller when it gets the lease (then it says
    b"filled it"), else waited for."""
    answer = await cache.get_or_lease(key, MINUTE, wait=MINUTE)
    if isinstance(answer, Lease):
        assert await cache.set(key, b"computed", lease_token=answer.token)
        return b"filled it"
    assert isinstance(answer, Entry) and answer.found
    return answer.value


def test_two_hundred_sets_with_expire_at_at_once_are_all_stored(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """expire_at is checked against the Redis clock: each such Set first reads TIME."""
    keys = [new_key() for _ in range(200)]

    async def scenario(redis: RedisBackend) -> list[bool]:
        cache = cache_of(redis)
        ends = await redis.now() + MINUTE
        return await asyncio.gather(*(cache.set(key, b"v", expire_at=ends) for key in keys))

    assert with_redis(scenario) == [True] * 200


# Limits


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda cache: cache.get(""), "key"),
        (lambda cache: cache.set("k", b"v" * (MAX_VALUE + 1)), "value"),
        (lambda cache: cache.set("k", b"v", ttl=timedelta(days=3_651)), "ttl"),
        (lambda cache: cache.set("k", b"v", tags=[f"t{n}" for n in range(65)]), "tags"),
        (lambda cache: cache.set("k", b"v", tags=["t", ""]), "tags[1]"),
        (lambda cache: cache.set("k", b"v", lease_token="t" * 65), "lease_token"),
        (lambda cache: cache.get_many([]), "keys"),
        (lambda cache: cache.get_many(["k"] * 1_001), "keys"),
        (lambda cache: cache.delete(["k", ""]), "keys[1]"),
        (lambda cache: cache.invalidate_tags([]), "tags"),
        (lambda cache: cache.invalidate_prefix(""), "prefix"),
        (lambda cache: cache.get_or_lease("k", None), "lease_ttl"),
        (lambda cache: cache.get_or_lease("k", timedelta(hours=2)), "lease_ttl"),
        (lambda cache: cache.get_or_lease("k", MINUTE, wait=timedelta(hours=2)), "wait_timeout"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    with_redis: WithRedis, call: Callable[[Cache], Awaitable[object]], field: str
) -> None:
    async def scenario(redis: RedisBackend) -> None:
        with pytest.raises(InvalidArgument) as refused:
            await call(cache_of(redis))
        assert refused.value.field == field

    with_redis(scenario)
