"""Sessions contract on every backend (standalone 7, 6.2, Cluster): sliding expiry, the
per-user index, the cap per user, log out everywhere, rotation, and races that must not
bring a session back."""

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.session.v1 import session_pb2 as pb
from patterns.session.v1 import session_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from tests.rpc import (
    assert_invalid,
    assert_unavailable,
    details,
    grpcurl_call,
    once_answered,
    rpc_error,
    stub_for,
)

Stub = session_pb2_grpc.SessionsStub
HOUR = Duration(seconds=3_600)
ID = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{16}")


@pytest.fixture
def sessions(channel: grpc.Channel) -> Stub:
    return Stub(channel)


def create(sessions: Stub, user: str, ttl: Duration = HOUR, **fields: Any) -> pb.Session:
    request = pb.CreateRequest(user_id=user, ttl=ttl, **fields)
    return sessions.Create(request, timeout=10).session


def listed(sessions: Stub, user: str, limit: int = 0) -> pb.ListResponse:
    return sessions.List(pb.ListRequest(user_id=user, limit=limit), timeout=10)


def assert_not_found(call: Callable[[], Any]) -> None:
    error = rpc_error(call)
    assert error.code() == grpc.StatusCode.NOT_FOUND, error
    assert details(error)["ErrorInfo"].reason == "SESSION_NOT_FOUND"


def expires_at_ms(client: Any, key: str) -> int:
    """When `key` expires, by the Redis clock (to within the time between two commands)."""
    seconds, microseconds = client.time()
    return seconds * 1000 + microseconds // 1000 + client.pttl(key)


def user_keys(client: Any, user_session: pb.Session) -> list[str]:
    """Every key of the session's user (its sessions and its index)."""
    tag = user_session.id.split(".")[1]
    match = f"patterns:default:session:{{{tag}}}*"
    return sorted(key.decode() for key in client.scan_iter(match=match, count=1_000))


# Create, Get, touch, expiry


def test_create_then_get(sessions: Stub, new_key: Callable[[], str]) -> None:
    user = new_key()
    made = create(sessions, user, attributes={"ip": "10.0.0.1", "device": "phone"})
    assert ID.fullmatch(made.id)
    assert made.user_id == user
    assert dict(made.attributes) == {"ip": "10.0.0.1", "device": "phone"}
    assert made.last_seen_at.ToMilliseconds() == made.created_at.ToMilliseconds()
    assert made.expires_at.ToMilliseconds() == made.created_at.ToMilliseconds() + 3_600_000
    got = sessions.Get(pb.GetRequest(id=made.id), timeout=10).session
    assert got == made


def test_ids_are_unguessable_and_place_a_user_in_one_slot(
    sessions: Stub, new_key: Callable[[], str]
) -> None:
    user, other = new_key(), new_key()
    ids = [create(sessions, user).id for _ in range(20)]
    assert len({i.split(".")[0] for i in ids}) == 20
    assert len({i.split(".")[1] for i in ids}) == 1
    assert create(sessions, other).id.split(".")[1] != ids[0].split(".")[1]


def test_touch_slides_the_end_and_a_plain_get_does_not(
    sessions: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    made = create(sessions, new_key(), ttl=Duration(seconds=60))
    time.sleep(0.02)
    plain = sessions.Get(pb.GetRequest(id=made.id), timeout=10).session
    assert plain == made
    touched = sessions.Get(pb.GetRequest(id=made.id, touch=True), timeout=10).session
    assert touched.last_seen_at.ToMilliseconds() >= made.created_at.ToMilliseconds() + 20
    assert touched.expires_at.ToMilliseconds() == touched.last_seen_at.ToMilliseconds() + 60_000
    assert touched.created_at == made.created_at
    again = sessions.Get(pb.GetRequest(id=made.id), timeout=10).session
    assert again == touched
    (session_key,) = [k for k in user_keys(backend_redis, made) if ":s:" in k]
    assert (
        abs(expires_at_ms(backend_redis, session_key) - touched.expires_at.ToMilliseconds()) < 1_000
    )


def test_sessions_expire_and_leave_nothing_behind(
    sessions: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    user = new_key()
    short = create(sessions, user, ttl=Duration(seconds=1))
    time.sleep(1.1)
    assert_not_found(lambda: sessions.Get(pb.GetRequest(id=short.id), timeout=10))
    assert_not_found(lambda: sessions.Get(pb.GetRequest(id=short.id, touch=True), timeout=10))
    assert_not_found(lambda: sessions.Rotate(pb.RotateRequest(id=short.id), timeout=10))
    response = listed(sessions, user)
    assert (list(response.sessions), response.total) == ([], 0)
    assert user_keys(backend_redis, short) == []  # the index went with its last session


def test_the_index_lives_as_long_as_its_longest_session_and_drops_dead_ids(
    sessions: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    user = new_key()
    short = create(sessions, user, ttl=Duration(seconds=1))
    long = create(sessions, user, ttl=Duration(seconds=86_400))
    create(sessions, user, ttl=Duration(seconds=60))
    index = next(k for k in user_keys(backend_redis, long) if k.endswith(":u"))
    assert abs(expires_at_ms(backend_redis, index) - long.expires_at.ToMilliseconds()) < 1_000
    assert backend_redis.zcard(index) == 3
    time.sleep(1.1)
    create(sessions, user)  # a write prunes the ended session from the index
    assert backend_redis.zcard(index) == 3
    members = {m.decode() for m in backend_redis.zrange(index, 0, -1)}
    assert short.id.split(".")[0] not in members
    assert abs(expires_at_ms(backend_redis, index) - long.expires_at.ToMilliseconds()) < 1_000


# Update, Destroy, List, DestroyAll, Rotate


def test_update_sets_and_removes_and_never_resurrects(
    sessions: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    made = create(sessions, new_key(), attributes={"a": "1", "b": "2"})
    request = pb.UpdateRequest(id=made.id, set={"b": "3", "c": "4"}, remove=["a", "zz"])
    updated = sessions.Update(request, timeout=10).session
    assert dict(updated.attributes) == {"b": "3", "c": "4"}
    assert updated.expires_at == made.expires_at  # an update is not a touch
    assert sessions.Destroy(pb.DestroyRequest(id=made.id), timeout=10).destroyed
    assert_not_found(lambda: sessions.Update(request, timeout=10))
    assert user_keys(backend_redis, made) == []


def test_an_update_beyond_64_attributes_writes_nothing(
    sessions: Stub, new_key: Callable[[], str]
) -> None:
    made = create(sessions, new_key(), attributes={f"a{i}": "v" for i in range(60)})
    too_many = pb.UpdateRequest(id=made.id, set={f"b{i}": "v" for i in range(5)})
    assert_invalid(lambda: sessions.Update(too_many, timeout=10), "set")
    assert sessions.Get(pb.GetRequest(id=made.id), timeout=10).session == made
    swap = pb.UpdateRequest(
        id=made.id, set={f"b{i}": "v" for i in range(5)}, remove=[f"a{i}" for i in range(1)]
    )
    assert len(sessions.Update(swap, timeout=10).session.attributes) == 64


def test_destroy_says_whether_there_was_a_session(
    sessions: Stub, new_key: Callable[[], str]
) -> None:
    made = create(sessions, new_key())
    assert sessions.Destroy(pb.DestroyRequest(id=made.id), timeout=10).destroyed
    assert not sessions.Destroy(pb.DestroyRequest(id=made.id), timeout=10).destroyed
    assert not sessions.Destroy(pb.DestroyRequest(id="not-an-id"), timeout=10).destroyed
    assert_not_found(lambda: sessions.Get(pb.GetRequest(id=made.id), timeout=10))


def test_list_is_newest_first_with_a_total(sessions: Stub, new_key: Callable[[], str]) -> None:
    user = new_key()
    made = []
    for i in range(5):
        made.append(create(sessions, user, attributes={"n": str(i)}))
        time.sleep(0.002)  # distinct creation times (ms)
    create(sessions, new_key())  # another user's
    response = listed(sessions, user)
    assert response.total == 5
    assert [s.id for s in response.sessions] == [s.id for s in reversed(made)]
    assert list(response.sessions) == list(reversed(made))
    page = listed(sessions, user, limit=2)
    assert (page.total, [s.id for s in page.sessions]) == (5, [made[4].id, made[3].id])
    assert listed(sessions, new_key()).total == 0


def create_many(server: PatternsServer, user: str, count: int) -> list[pb.Session]:
    async def scenario() -> list[pb.Session]:
        async with stub_for(server.address, Stub) as stub:
            request = pb.CreateRequest(user_id=user, ttl=HOUR)
            made: list[pb.Session] = []
            for start in range(0, count, 250):
                calls = (stub.Create(request, timeout=30) for _ in range(start, count)[:250])
                made += [reply.session for reply in await asyncio.gather(*calls)]
            return made

    return asyncio.run(scenario())


def test_list_pages_through_every_session_with_page_tokens(
    server: PatternsServer, sessions: Stub, new_key: Callable[[], str]
) -> None:
    user = new_key()
    made = create_many(server, user, 250)
    ids: list[str] = []
    created: list[int] = []
    token, pages = "", 0
    while True:
        request = pb.ListRequest(user_id=user, limit=100, page_token=token)
        page = sessions.List(request, timeout=10)
        assert page.total == 250
        ids += [s.id for s in page.sessions]
        created += [s.created_at.ToMilliseconds() for s in page.sessions]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3 and len(ids) == 250
    assert set(ids) == {s.id for s in made}
    assert created == sorted(created, reverse=True)  # newest first, across pages too


def test_destroy_all_of_more_than_500_sessions_ends_them_all(
    server: PatternsServer, sessions: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    user = new_key()
    made = create_many(server, user, 1_101)
    request = pb.DestroyAllRequest(user_id=user, except_id=made[-1].id)
    assert sessions.DestroyAll(request, timeout=30).destroyed == 1_100
    assert [s.id for s in listed(sessions, user).sessions] == [made[-1].id]
    assert len(user_keys(backend_redis, made[0])) == 3  # the session kept and two indexes
    assert sessions.DestroyAll(pb.DestroyAllRequest(user_id=user), timeout=30).destroyed == 1
    assert user_keys(backend_redis, made[0]) == []


def test_destroy_all_logs_out_everywhere_or_everywhere_else(
    sessions: Stub, new_key: Callable[[], str]
) -> None:
    user, other = new_key(), new_key()
    mine = [create(sessions, user) for _ in range(4)]
    theirs = create(sessions, other)
    request = pb.DestroyAllRequest(user_id=user, except_id=mine[0].id)
    assert sessions.DestroyAll(request, timeout=10).destroyed == 3
    assert [s.id for s in listed(sessions, user).sessions] == [mine[0].id]
    everywhere = pb.DestroyAllRequest(user_id=user)
    assert sessions.DestroyAll(everywhere, timeout=10).destroyed == 1
    assert sessions.DestroyAll(everywhere, timeout=10).destroyed == 0
    assert_not_found(lambda: sessions.Get(pb.GetRequest(id=mine[0].id), timeout=10))
    assert sessions.Get(pb.GetRequest(id=theirs.id), timeout=10).session == theirs
    foreign = pb.DestroyAllRequest(user_id=user, except_id=theirs.id)
    assert_invalid(lambda: sessions.DestroyAll(foreign, timeout=10), "except_id")


def test_rotate_moves_the_session_and_kills_the_old_id(
    sessions: Stub, new_key: Callable[[], str]
) -> None:
    user = new_key()
    made = create(sessions, user, attributes={"role": "user"})
    rotated = sessions.Rotate(pb.RotateRequest(id=made.id), timeout=10).session
    assert ID.fullmatch(rotated.id) and rotated.id != made.id
    assert rotated.id.split(".")[1] == made.id.split(".")[1]
    made.id = rotated.id
    assert rotated == made  # same user, attributes and times
    response = listed(sessions, user)
    assert [s.id for s in response.sessions] == [rotated.id]
    assert sessions.Get(pb.GetRequest(id=rotated.id, touch=True), timeout=10).session.user_id


def test_the_old_id_is_dead_after_a_rotation(sessions: Stub, new_key: Callable[[], str]) -> None:
    made = create(sessions, new_key())
    sessions.Rotate(pb.RotateRequest(id=made.id), timeout=10)
    assert_not_found(lambda: sessions.Get(pb.GetRequest(id=made.id), timeout=10))
    assert_not_found(lambda: sessions.Rotate(pb.RotateRequest(id=made.id), timeout=10))
    update = pb.UpdateRequest(id=made.id, set={"x": "y"})
    assert_not_found(lambda: sessions.Update(update, timeout=10))
    assert not sessions.Destroy(pb.DestroyRequest(id=made.id), timeout=10).destroyed


@pytest.mark.parametrize("session_id", ["", "abc", "x" * 60, "a" * 43 + "." + "b" * 16])
def test_an_id_that_names_nothing_is_not_found(sessions: Stub, session_id: str) -> None:
    assert_not_found(lambda: sessions.Get(pb.GetRequest(id=session_id, touch=True), timeout=10))
    update = pb.UpdateRequest(id=session_id, set={"a": "b"})
    assert_not_found(lambda: sessions.Update(update, timeout=10))
    assert_not_found(lambda: sessions.Rotate(pb.RotateRequest(id=session_id), timeout=10))


# The cap per user, and races


def test_the_cap_ends_the_sessions_that_would_end_soonest(
    sessions: Stub, new_key: Callable[[], str]
) -> None:
    user = new_key()
    made = []
    for _ in range(5):
        made.append(create(sessions, user, max_per_user=5))
        time.sleep(0.002)  # distinct ends (ms)
    sessions.Get(pb.GetRequest(id=made[0].id, touch=True), timeout=10)  # now the latest
    newest = create(sessions, user, max_per_user=5)
    live = {s.id for s in listed(sessions, user).sessions}
    assert live == {made[0].id, made[2].id, made[3].id, made[4].id, newest.id}
    only = create(sessions, user, max_per_user=1)
    assert [s.id for s in listed(sessions, user).sessions] == [only.id]


def test_the_servers_default_cap_applies_when_a_create_gives_none(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    server = server_on_own_redis("--sessions-max-per-user", "2")
    with grpc.insecure_channel(server.address) as channel:
        stub = Stub(channel)
        for _ in range(4):
            create(stub, "u")
        assert listed(stub, "u").total == 2
        create(stub, "u", max_per_user=3)
        assert listed(stub, "u").total == 3


def test_twenty_concurrent_creates_with_a_cap_of_five_leave_exactly_five(
    server: PatternsServer, sessions: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario() -> list[pb.Session]:
        async with stub_for(server.address, Stub) as stub:
            request = pb.CreateRequest(user_id=user, ttl=HOUR, max_per_user=5)
            replies = await asyncio.gather(*(stub.Create(request, timeout=10) for _ in range(20)))
            return [reply.session for reply in replies]

    made = asyncio.run(scenario())
    assert len({s.id for s in made}) == 20
    response = listed(sessions, user)
    assert response.total == 5 and len(response.sessions) == 5
    live = [s for s in made if _alive(sessions, s.id)]
    assert len(live) == 5
    keys = user_keys(backend_redis, made[0])
    assert len([k for k in keys if ":s:" in k]) == 5 and len(keys) == 7  # and two indexes


def _alive(sessions: Stub, session_id: str) -> bool:
    try:
        sessions.Get(pb.GetRequest(id=session_id), timeout=10)
        return True
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        return False


def test_updates_and_touches_racing_destroys_never_leave_a_session_behind(
    server: PatternsServer, sessions: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    user = new_key()

    async def scenario() -> list[pb.Session]:
        async with stub_for(server.address, Stub) as stub:
            create_request = pb.CreateRequest(user_id=user, ttl=HOUR)
            made = [(await stub.Create(create_request, timeout=10)).session for _ in range(100)]

            async def quietly(call: Any) -> None:
                try:
                    await call
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND, error

            racers = []
            for session in made:
                racers += [
                    quietly(stub.Update(pb.UpdateRequest(id=session.id, set={"x": "1"}))),
                    stub.Destroy(pb.DestroyRequest(id=session.id), timeout=10),
                    quietly(stub.Get(pb.GetRequest(id=session.id, touch=True))),
                    quietly(stub.Update(pb.UpdateRequest(id=session.id, remove=["x"]))),
                ]
            await asyncio.gather(*racers)
            return made

    made = asyncio.run(scenario())
    assert user_keys(backend_redis, made[0]) == []
    for session in made[:10]:
        assert not _alive(sessions, session.id)


# Bad input, outages, grpcurl


NAME = "n" * 128
VALUE = "v" * 4_096


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("Create", pb.CreateRequest(ttl=HOUR), "user_id"),
        ("Create", pb.CreateRequest(user_id="u" * 513, ttl=HOUR), "user_id"),
        ("Create", pb.CreateRequest(user_id="u"), "ttl"),
        ("Create", pb.CreateRequest(user_id="u", ttl=Duration(nanos=999_000_000)), "ttl"),
        ("Create", pb.CreateRequest(user_id="u", ttl=Duration(seconds=366 * 86_400)), "ttl"),
        ("Create", pb.CreateRequest(user_id="u", ttl=Duration(seconds=1, nanos=-1)), "ttl"),
        (
            "Create",
            pb.CreateRequest(user_id="u", ttl=HOUR, attributes={str(i): "" for i in range(65)}),
            "attributes",
        ),
        ("Create", pb.CreateRequest(user_id="u", ttl=HOUR, attributes={"": "v"}), "attributes"),
        (
            "Create",
            pb.CreateRequest(user_id="u", ttl=HOUR, attributes={NAME + "n": "v"}),
            "attributes",
        ),
        (
            "Create",
            pb.CreateRequest(user_id="u", ttl=HOUR, attributes={"n": VALUE + "v"}),
            "attributes",
        ),
        ("Create", pb.CreateRequest(user_id="u", ttl=HOUR, max_per_user=10_001), "max_per_user"),
        ("Update", pb.UpdateRequest(set={str(i): "" for i in range(65)}), "set"),
        ("Update", pb.UpdateRequest(set={"n": VALUE + "v"}), "set"),
        ("Update", pb.UpdateRequest(remove=["r"] * 65), "remove"),
        ("Update", pb.UpdateRequest(remove=["r", ""]), "remove[1]"),
        ("Update", pb.UpdateRequest(set={"r": "v"}, remove=["r"]), "remove[0]"),
        ("List", pb.ListRequest(), "user_id"),
        ("List", pb.ListRequest(user_id="u", limit=1_001), "limit"),
        ("List", pb.ListRequest(user_id="u", page_token="not-a-token"), "page_token"),
        ("DestroyAll", pb.DestroyAllRequest(), "user_id"),
        ("DestroyAll", pb.DestroyAllRequest(user_id="u", except_id="nope"), "except_id"),
    ],
)
def test_bad_input_is_refused(sessions: Stub, call: str, request_: Any, field: str) -> None:
    assert_invalid(lambda: getattr(sessions, call)(request_, timeout=10), field)


def test_the_largest_requests_are_accepted(sessions: Stub) -> None:
    user = "u" * 512
    attributes = {f"{i:03}" + NAME[3:]: VALUE for i in range(64)}
    made = create(sessions, user, attributes=attributes, max_per_user=10_000)
    assert dict(made.attributes) == attributes
    replace = {f"{i:03}" + NAME[3:]: VALUE.upper() for i in range(64, 128)}
    request = pb.UpdateRequest(id=made.id, set=replace, remove=list(attributes))
    updated = sessions.Update(request, timeout=10).session
    assert dict(updated.attributes) == replace
    page = listed(sessions, user, limit=1_000)
    assert list(page.sessions) == [updated]
    assert sessions.DestroyAll(pb.DestroyAllRequest(user_id=user), timeout=10).destroyed == 1


def test_redis_outage_is_unavailable_then_recovers(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    with grpc.insecure_channel(server_on_own_redis().address) as channel:
        stub = Stub(channel)
        made = create(stub, "u")
        own_redis.stop()
        assert_unavailable(lambda: stub.Get(pb.GetRequest(id=made.id), timeout=10))
        own_redis.start()  # an empty Redis: the session is gone with it
        once_answered(lambda: create(stub, "u"))


def test_grpcurl_creates_and_touches(
    grpcurl_path: str, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    def grpcurl(method: str, data: dict[str, Any]) -> Any:
        return grpcurl_call(grpcurl_path, server, method, data)

    user = new_key()
    created = grpcurl(
        "patterns.session.v1.Sessions/Create",
        {"userId": user, "ttl": "1800s", "attributes": {"ip": "203.0.113.7"}},
    )["session"]
    assert created["userId"] == user and created["attributes"] == {"ip": "203.0.113.7"}
    got = grpcurl("patterns.session.v1.Sessions/Get", {"id": created["id"], "touch": True})
    assert got["session"]["id"] == created["id"]
