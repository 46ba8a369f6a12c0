"""Sessions used directly: create, read, touch, update, destroy, list, rotate; the cap per
user, exact under concurrency; and ids that name nothing."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from patterns_server.core.errors import InvalidArgument, NotFound
from patterns_server.session.session import ID_PATTERN, MAX_ATTRIBUTES, Session, Sessions
from patterns_server.storage import RedisBackend
from tests.patterns import WithRedis

HOUR = timedelta(hours=1)
# The shape of an id (43 characters, a dot, 16), naming no session.
NO_SUCH_ID = "A" * 43 + "." + "B" * 16


async def assert_not_found(call: Awaitable[object]) -> None:
    with pytest.raises(NotFound) as missing:
        await call
    assert missing.value.reason == "SESSION_NOT_FOUND"


def test_create_then_get(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        before = (await redis.now()).replace(microsecond=0)  # the session's times are in ms
        session = await sessions.create(user, {"role": "admin", "theme": "dark"}, HOUR)
        after = await redis.now()
        assert ID_PATTERN.fullmatch(session.id)
        assert (session.user_id, session.attributes) == (user, {"role": "admin", "theme": "dark"})
        assert before <= session.created_at == session.last_seen_at <= after
        assert session.expires_at == session.created_at + HOUR
        assert await sessions.get(session.id) == session
        other = await sessions.create(user, {}, HOUR)
        assert other.id != session.id and other.attributes == {}

    with_redis(scenario)


def test_touch_slides_the_end_and_a_plain_get_does_not(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        session = await sessions.create(user, {}, HOUR)
        await asyncio.sleep(0.01)  # the Redis clock moves on, in whole ms
        assert await sessions.get(session.id) == session
        touched = await sessions.get(session.id, touch=True)
        assert touched.last_seen_at > session.last_seen_at
        assert touched.expires_at == touched.last_seen_at + HOUR
        assert touched.created_at == session.created_at
        assert await sessions.get(session.id) == touched

    with_redis(scenario)


def test_sessions_expire(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        session = await sessions.create(user, {}, timedelta(seconds=1))  # the shortest ttl
        await asyncio.sleep(1.5)  # well past its end
        await assert_not_found(sessions.get(session.id, touch=True))  # not brought back
        assert await sessions.list(user) == ([], 0)

    with_redis(scenario)


def test_update_sets_and_removes_attributes(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        session = await sessions.create(user, {"a": "1", "b": "2"}, HOUR)
        updated = await sessions.update(session.id, {"b": "two", "c": "3"}, ["a", "missing"])
        assert updated.attributes == {"b": "two", "c": "3"}
        assert updated.expires_at == session.expires_at  # an update is not a touch
        assert await sessions.get(session.id) == updated

    with_redis(scenario)


def test_an_update_beyond_the_most_attributes_is_refused_and_writes_nothing(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()
    full = {f"k{n}": "v" for n in range(MAX_ATTRIBUTES)}

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        session = await sessions.create(user, full, HOUR)
        with pytest.raises(InvalidArgument) as refused:
            await sessions.update(session.id, {"k0": "changed", "one-more": "v"}, [])
        assert refused.value.field == "set" and "65 attributes" in refused.value.description
        assert (await sessions.get(session.id)).attributes == full
        # Removing one makes room for another, in the same update.
        updated = await sessions.update(session.id, {"one-more": "v"}, ["k0"])
        assert len(updated.attributes) == MAX_ATTRIBUTES and "k0" not in updated.attributes

    with_redis(scenario)


def test_destroy_says_whether_the_session_was_live(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        session = await sessions.create(user, {}, HOUR)
        assert await sessions.destroy(session.id)
        assert not await sessions.destroy(session.id)
        await assert_not_found(sessions.get(session.id))
        await assert_not_found(sessions.update(session.id, {"a": "1"}, []))  # not brought back
        assert await sessions.list(user) == ([], 0)

    with_redis(scenario)


def test_list_is_newest_first_with_a_total(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user, other_user = new_key(), new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        created = [await sessions.create(user, {"n": str(n)}, HOUR) for n in range(5)]
        await sessions.create(other_user, {}, HOUR)
        # Newest first: by creation time (ms), then by id within one millisecond.
        newest_first = sorted(created, key=lambda s: (s.created_at, s.id), reverse=True)
        assert await sessions.list(user) == (newest_first, 5)
        assert await sessions.list(user, limit=2) == (newest_first[:2], 5)

    with_redis(scenario)


def test_destroy_all_ends_every_session_or_all_but_one(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user, other_user = new_key(), new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        mine = [await sessions.create(user, {}, HOUR) for _ in range(4)]
        theirs = await sessions.create(other_user, {}, HOUR)
        with pytest.raises(InvalidArgument) as refused:
            await sessions.destroy_all(user, except_id=theirs.id)
        assert refused.value.field == "except_id"
        assert await sessions.destroy_all(user, except_id=mine[0].id) == 3  # "log out elsewhere"
        assert await sessions.list(user) == ([mine[0]], 1)
        assert await sessions.destroy_all(user) == 1
        assert await sessions.list(user) == ([], 0)
        assert await sessions.get(theirs.id) == theirs  # another user's are untouched

    with_redis(scenario)


def test_rotate_moves_the_session_to_a_new_id_and_the_old_names_nothing(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        session = await sessions.create(user, {"role": "admin"}, HOUR)
        rotated = await sessions.rotate(session.id)
        assert rotated.id != session.id and ID_PATTERN.fullmatch(rotated.id)
        assert rotated == Session(
            rotated.id,
            user,
            {"role": "admin"},
            session.created_at,
            session.last_seen_at,
            session.expires_at,
        )
        await assert_not_found(sessions.get(session.id))
        await assert_not_found(sessions.rotate(session.id))
        assert not await sessions.destroy(session.id)
        assert await sessions.list(user) == ([rotated], 1)

    with_redis(scenario)


@pytest.mark.parametrize("session_id", ["", "nope", NO_SUCH_ID, NO_SUCH_ID + "x", "a.b"])
def test_an_id_that_names_no_session_is_not_found(with_redis: WithRedis, session_id: str) -> None:
    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        calls: list[Callable[[], Awaitable[Session]]] = [
            lambda: sessions.get(session_id),
            lambda: sessions.get(session_id, touch=True),
            lambda: sessions.update(session_id, {"a": "1"}, []),
            lambda: sessions.rotate(session_id),
        ]
        for call in calls:
            with pytest.raises(NotFound) as missing:
                await call()
            assert missing.value.reason == "SESSION_NOT_FOUND"
            assert not session_id or session_id not in str(missing.value)  # ids are secrets
        assert not await sessions.destroy(session_id)

    with_redis(scenario)


# The cap per user


def test_the_cap_ends_the_sessions_that_would_end_soonest(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """Not the oldest: the one with the least time left."""
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        oldest = await sessions.create(user, {}, 5 * HOUR, max_per_user=2)
        soonest = await sessions.create(user, {}, 1 * HOUR, max_per_user=2)
        newest = await sessions.create(user, {}, 3 * HOUR, max_per_user=2)
        listed, total = await sessions.list(user)
        # Both may be created in one millisecond: their order is then their ids'.
        assert total == 2 and {s.id for s in listed} == {newest.id, oldest.id}
        await assert_not_found(sessions.get(soonest.id))

    with_redis(scenario)


def test_the_sessions_default_cap_applies_when_a_create_gives_none(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> int:
        sessions = Sessions(redis, max_per_user=3)
        for _ in range(5):
            await sessions.create(user, {}, HOUR)
        _, total = await sessions.list(user)
        return total

    assert with_redis(scenario) == 3


def test_fifty_creates_at_once_with_a_cap_of_five_leave_exactly_five(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> tuple[int, int]:
        sessions = [Sessions(redis) for _ in range(4)]  # as if from four servers
        created = await asyncio.gather(
            *(sessions[n % 4].create(user, {}, HOUR, max_per_user=5) for n in range(50))
        )
        _, total = await sessions[0].list(user)
        live = 0
        for session in created:
            try:
                await sessions[0].get(session.id)
                live += 1
            except NotFound:
                pass
        return total, live

    assert with_redis(scenario) == (5, 5)


def test_updates_and_touches_racing_a_destroy_never_bring_the_session_back(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> tuple[list[Session], int]:
        sessions = Sessions(redis)
        session = await sessions.create(user, {}, HOUR)

        async def update_or_touch(n: int) -> None:
            try:
                if n % 2:
                    await sessions.update(session.id, {f"k{n % 10}": "v"}, [])
                else:
                    await sessions.get(session.id, touch=True)
            except NotFound:
                pass  # came after the destroy: the session stays gone

        racers = [update_or_touch(n) for n in range(100)]
        outcomes = await asyncio.gather(*racers[:50], sessions.destroy(session.id), *racers[50:])
        assert outcomes[50] is True  # the destroy found it live
        await assert_not_found(sessions.get(session.id))
        return await sessions.list(user)

    assert with_redis(scenario) == ([], 0)


def test_a_negative_cap_is_refused_and_ends_no_session(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        for _ in range(3):
            await sessions.create(user, {}, HOUR)
        with pytest.raises(InvalidArgument) as refused:
            await sessions.create(user, {}, HOUR, max_per_user=-1)
        assert refused.value.field == "max_per_user"
        assert (await sessions.list(user))[1] == 3

    with_redis(scenario)


def test_a_negative_list_limit_is_refused(with_redis: WithRedis) -> None:
    async def scenario(redis: RedisBackend) -> None:
        with pytest.raises(InvalidArgument) as refused:
            await Sessions(redis).list("u", limit=-1)
        assert refused.value.field == "limit"

    with_redis(scenario)


# Limits


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.create("", {}, HOUR), "user_id"),
        (lambda s: s.create("u", {}, None), "ttl"),
        (lambda s: s.create("u", {}, timedelta(milliseconds=999)), "ttl"),
        (lambda s: s.create("u", {}, timedelta(days=366)), "ttl"),
        (lambda s: s.create("u", {}, HOUR, max_per_user=10_001), "max_per_user"),
        (lambda s: s.create("u", {f"k{n}": "v" for n in range(65)}, HOUR), "attributes"),
        (lambda s: s.create("u", {"": "v"}, HOUR), "attributes"),
        (lambda s: s.create("u", {"k": "v" * 4_097}, HOUR), "attributes"),
        (lambda s: s.update(NO_SUCH_ID, {"a": "1"}, ["a"]), "remove[0]"),
        (lambda s: s.update(NO_SUCH_ID, {}, ["n" * 129]), "remove[0]"),
        (lambda s: s.list("u", limit=1_001), "limit"),
        (lambda s: s.destroy_all("u", except_id="not an id"), "except_id"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    with_redis: WithRedis, call: Callable[[Sessions], Awaitable[object]], field: str
) -> None:
    async def scenario(redis: RedisBackend) -> None:
        with pytest.raises(InvalidArgument) as refused:
            await call(Sessions(redis))
        assert refused.value.field == field

    with_redis(scenario)
