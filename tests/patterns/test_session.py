"""Sessions used directly: create, read, touch, update, destroy, list, rotate; the cap per
user, exact under concurrency; and ids that name nothing."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from patterns_server.core.errors import InvalidArgument, NotFound
from patterns_server.session.session import (
    CREATE,
    DESTROY_ALL,
    ID_PATTERN,
    MAX_ATTRIBUTES,
    SLICE,
    Page,
    Session,
    Sessions,
)
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
        assert await sessions.list(user) == Page([], 0, "")

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
        assert await sessions.list(user) == Page([], 0, "")

    with_redis(scenario)


def test_list_is_newest_first_with_a_total(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user, other_user = new_key(), new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        created = [await sessions.create(user, {"n": str(n)}, HOUR) for n in range(5)]
        await sessions.create(other_user, {}, HOUR)
        # Newest first: in the order they were created, within one millisecond too.
        newest_first = created[::-1]
        assert await sessions.list(user) == Page(newest_first, 5, "")
        page = await sessions.list(user, limit=2)
        assert (page.sessions, page.total) == (newest_first[:2], 5) and page.next_page_token

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
        assert await sessions.list(user) == Page([mine[0]], 1, "")
        assert await sessions.destroy_all(user) == 1
        assert await sessions.list(user) == Page([], 0, "")
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
        assert await sessions.list(user) == Page([rotated], 1, "")

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
        page = await sessions.list(user)
        listed, total = page.sessions, page.total
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
        total = (await sessions.list(user)).total
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
        total = (await sessions[0].list(user)).total
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

    async def scenario(redis: RedisBackend) -> Page:
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

    assert with_redis(scenario) == Page([], 0, "")


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
        assert (await sessions.list(user)).total == 3

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


# Bounded work: no script run handles more than SLICE sessions, whatever the user has


def user_key(redis: RedisBackend, session_id: str, *parts: str) -> str:
    """A key of the user of `session_id` (its base key, then `parts`)."""
    return ":".join([redis.keys("session")(session_id.split(".")[1]), *parts])


async def many(sessions: Sessions, user: str, count: int, **options: Any) -> list[Session]:
    made: list[Session] = []
    for start in range(0, count, 250):
        batch = (sessions.create(user, {}, HOUR, **options) for _ in range(start, count)[:250])
        made += await asyncio.gather(*batch)
    return made


def test_list_pages_hold_every_session_exactly_once_while_others_are_created(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        before = {s.id for s in await many(sessions, user, 700)}
        seen: list[str] = []
        during: list[Session] = []
        token, pages = "", 0

        async def page_through() -> None:
            nonlocal token, pages
            while True:
                page = await sessions.list(user, 50, token)
                seen.extend(s.id for s in page.sessions)
                pages += 1
                token = page.next_page_token
                if not token:
                    return
                await asyncio.sleep(0)  # the creates run between pages

        async def create_meanwhile() -> None:
            for _ in range(10):
                during.extend(await many(sessions, user, 20))

        await asyncio.gather(page_through(), create_meanwhile())
        assert len(seen) == len(set(seen))  # nothing twice
        assert before <= set(seen)  # everything live throughout, once
        assert set(seen) <= before | {s.id for s in during}
        assert pages >= 14
        everything = await sessions.list(user, 1_000)
        assert everything.total == 900 and len(everything.sessions) == 900
        assert not everything.next_page_token
        created = [s.created_at for s in everything.sessions]
        assert created == sorted(created, reverse=True)  # newest first

    with_redis(scenario)


def test_a_page_looks_at_no_more_than_limit_and_a_slice(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """Sessions that vanished without a script (as Redis evicts under memory pressure)
    are skipped, and forgotten, at most limit + SLICE a page: a page can then be short,
    or empty, with more to follow."""
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        kept = await many(sessions, user, 3)
        gone = await many(sessions, user, SLICE + 100)  # newer than the kept ones
        for session in gone:
            await redis.call("DEL", user_key(redis, session.id, "s", session.id.split(".")[0]))
        first = await sessions.list(user, 10)
        assert first.sessions == [] and first.next_page_token  # 510 looked at, all gone
        second = await sessions.list(user, 10, first.next_page_token)
        assert {s.id for s in second.sessions} == {s.id for s in kept}
        assert not second.next_page_token
        assert await sessions.list(user) == Page(kept[::-1], 3, "")

    with_redis(scenario)


def test_destroy_all_of_more_than_a_slice_ends_every_session(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        made = await many(sessions, user, 2 * SLICE + 101)
        keep = made[7]
        # One run of the script ends one slice, and says more are left.
        base = redis.keys("session")(keep.id.split(".")[1])
        assert await redis.eval(DESTROY_ALL, [base], [keep.id.split(".")[0]]) == [SLICE, 1]
        assert (await sessions.list(user)).total == SLICE + 101
        # The call runs it until none is left but the one kept.
        assert await sessions.destroy_all(user, except_id=keep.id) == SLICE + 100
        assert await sessions.list(user) == Page([keep], 1, "")
        assert await sessions.get(keep.id) == keep
        await assert_not_found(sessions.get(made[8].id))
        assert await redis.call("ZCARD", user_key(redis, keep.id, "c")) == 1

    with_redis(scenario)


def test_destroy_all_racing_creates_leaves_the_indexes_exact(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """Every session live when DestroyAll began is ended; those created meanwhile are
    ended or live, and each live one is listed, once."""
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        before = await many(sessions, user, 2 * SLICE)
        ended, during = await asyncio.gather(sessions.destroy_all(user), many(sessions, user, 300))
        assert ended >= len(before)
        for session in before[:: SLICE // 10]:
            await assert_not_found(sessions.get(session.id))
        live = []
        for session in during:
            with contextlib.suppress(NotFound):
                live.append(await sessions.get(session.id))
        assert ended == len(before) + len(during) - len(live)
        page = await sessions.list(user, 1_000)
        assert sorted(s.id for s in page.sessions) == sorted(s.id for s in live)
        assert page.total == len(live)

    with_redis(scenario)


def test_a_cap_far_below_the_sessions_ends_them_a_slice_a_run(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        made = await many(sessions, user, 2 * SLICE + 10)
        base = redis.keys("session")(made[0].id.split(".")[1])
        # One run ends a slice and creates nothing: the call runs it again.
        assert await redis.eval(CREATE, [base], ["A" * 43, user, 60_000, 1]) == []
        assert (await sessions.list(user)).total == SLICE + 10
        await assert_not_found(sessions.get("A" * 43 + "." + made[0].id.split(".")[1]))
        only = await sessions.create(user, {}, HOUR, max_per_user=1)
        assert await sessions.list(user) == Page([only], 1, "")

    with_redis(scenario)


def test_list_indexes_sessions_that_an_older_server_indexed_only_by_their_end(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    """Servers before the creation index (0.1.0) kept only the index by end: List builds
    the creation index for them, a slice a run, then pages as usual."""
    user = new_key()

    async def scenario(redis: RedisBackend) -> None:
        sessions = Sessions(redis)
        made = await many(sessions, user, SLICE + 300)
        assert await redis.call("DEL", user_key(redis, made[0].id, "c")) == 1  # as 0.1.0 left it
        rotated = await sessions.rotate(made[5].id)  # not in the creation index either
        ids: list[str] = []
        page = await sessions.list(user, 1_000)
        ids += [s.id for s in page.sessions]
        assert page.total == SLICE + 300 and not page.next_page_token
        expected = {s.id for s in made} - {made[5].id} | {rotated.id}
        assert len(ids) == len(set(ids)) and set(ids) == expected
        created = [s.created_at for s in page.sessions]
        assert created == sorted(created, reverse=True)
        assert await redis.call("EXISTS", user_key(redis, made[0].id, "b")) == 0  # built
        newer = await sessions.create(user, {}, HOUR)
        assert (await sessions.list(user, 1)).sessions == [newer]

    with_redis(scenario)


def test_a_page_token_that_list_did_not_give_is_refused(with_redis: WithRedis) -> None:
    async def scenario(redis: RedisBackend) -> None:
        for token in ("x", "-1", "0", "1.5", "1" * 17):
            with pytest.raises(InvalidArgument) as refused:
                await Sessions(redis).list("u", page_token=token)
            assert refused.value.field == "page_token"

    with_redis(scenario)
