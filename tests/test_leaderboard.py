"""Leaderboard contract on every backend (standalone 7, 6.2, Cluster): submit modes, fair
ranks for ties, pages, neighbours, and boards that roll over by period."""

import asyncio
import math
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
import pytest
import redis
from patterns.leaderboard.v1 import leaderboard_pb2 as pb
from patterns.leaderboard.v1 import leaderboard_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from patterns_server.leaderboard.leaderboard import TOP
from tests.rpc import assert_invalid, assert_unavailable, grpcurl_call, once_answered

Stub = leaderboard_pb2_grpc.LeaderboardStub
LOW = pb.ORDER_LOW_FIRST


@pytest.fixture
def board(channel: grpc.Channel) -> Stub:
    return Stub(channel)


def submit(board: Stub, name: str, member: str, score: float, **fields: Any) -> pb.SubmitResponse:
    return board.Submit(
        pb.SubmitRequest(board=name, member=member, score=score, **fields), timeout=10
    )


def top(board: Stub, name: str, limit: int = 1_000, **fields: Any) -> list[tuple[str, float, int]]:
    page = board.Top(pb.TopRequest(board=name, limit=limit, **fields), timeout=10)
    return [(e.member, e.score, e.rank) for e in page.entries]


def test_modes_set_increment_and_keep_best(board: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    assert submit(board, name, "ann", 10).updated
    response = submit(board, name, "ann", 10)
    assert (response.score, response.rank, response.updated) == (10, 1, False)
    assert submit(board, name, "ann", 5, mode=pb.MODE_INCREMENT).score == 15
    assert submit(board, name, "ann", 0, mode=pb.MODE_INCREMENT).updated is False
    worse = submit(board, name, "ann", 12, mode=pb.MODE_BEST)
    assert (worse.score, worse.updated) == (15, False)
    better = submit(board, name, "ann", 20, mode=pb.MODE_BEST)
    assert (better.score, better.updated) == (20, True)
    assert submit(board, name, "bob", 7.5, mode=pb.MODE_BEST).score == 7.5  # new: stored


def test_low_first_boards_rank_and_keep_the_lowest(board: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    for member, strokes in [("ann", 72), ("bob", 68), ("cy", 75)]:
        submit(board, name, member, strokes, order=LOW)
    assert submit(board, name, "ann", 70, order=LOW, mode=pb.MODE_BEST).score == 70
    assert submit(board, name, "ann", 74, order=LOW, mode=pb.MODE_BEST).score == 70
    assert top(board, name, order=LOW) == [("bob", 68, 1), ("ann", 70, 2), ("cy", 75, 3)]
    assert top(board, name) == []  # the other order is another board


def test_ties_share_a_rank_and_every_view_agrees(board: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    scores = {"dan": 90, "bea": 80, "ali": 80, "cat": 80, "eve": 70, "fay": 70, "gus": 10}
    for member, score in scores.items():
        submit(board, name, member, score)
    expected = [
        ("dan", 90, 1),
        ("ali", 80, 2),
        ("bea", 80, 2),
        ("cat", 80, 2),
        ("eve", 70, 5),
        ("fay", 70, 5),
        ("gus", 10, 7),
    ]
    assert top(board, name) == expected
    for offset in range(7):  # pages agree wherever they start
        page = top(board, name, limit=2, offset=offset)
        assert page == expected[offset : offset + 2]
    for member, score, rank in expected:
        found = board.GetRank(pb.GetRankRequest(board=name, member=member))
        assert (found.found, found.score, found.rank) == (True, score, rank)
    around = board.Around(pb.AroundRequest(board=name, member="eve", radius=2)).entries
    assert [(e.member, e.score, e.rank) for e in around] == expected[2:7]
    edge = board.Around(pb.AroundRequest(board=name, member="dan", radius=2)).entries
    assert [e.member for e in edge] == ["dan", "ali", "bea"]  # clipped at the top
    page = board.Top(pb.TopRequest(board=name, limit=3, offset=5))
    assert page.total == 7 and [e.member for e in page.entries] == ["fay", "gus"]


def test_absent_members_remove_and_size(board: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    assert board.GetRank(pb.GetRankRequest(board=name, member="x")) == pb.GetRankResponse()
    assert list(board.Around(pb.AroundRequest(board=name, member="x", radius=3)).entries) == []
    for n in range(5):
        submit(board, name, f"m{n}", n)
    assert board.Size(pb.SizeRequest(board=name)).count == 5
    removed = board.Remove(pb.RemoveRequest(board=name, members=["m1", "m2", "nobody"]))
    assert removed.removed == 2
    assert board.Size(pb.SizeRequest(board=name)).count == 3
    assert [m for m, _, _ in top(board, name)] == ["m4", "m3", "m0"]


def test_scores_are_doubles_exact_to_two_to_the_53(board: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    big = 2.0**53
    assert submit(board, name, "a", big).score == big
    assert submit(board, name, "b", -1.5e-300).score == -1.5e-300
    assert submit(board, name, "c", 0.1).score == 0.1


@pytest.mark.parametrize("order", [pb.ORDER_HIGH_FIRST, LOW])
@pytest.mark.parametrize("period", [pb.PERIOD_NONE, pb.PERIOD_DAILY])
def test_an_increment_that_would_reach_infinity_is_refused_and_writes_nothing(
    board: Stub, new_key: Callable[[], str], order: int, period: int
) -> None:
    """Two INCREMENTs of 1.5e308 once stored infinity (and Top showed inf), though the
    contract refuses infinite scores: the second is refused, naming `score`, and the board
    keeps 1.5e308; so is one that would reach -infinity."""
    name = new_key()
    fields = {"mode": pb.MODE_INCREMENT, "order": order, "period": period}
    assert submit(board, name, "ann", 1.5e308, **fields).score == 1.5e308
    assert_invalid(lambda: submit(board, name, "ann", 1.5e308, **fields), "score")
    assert submit(board, name, "bob", -1.5e308, **fields).score == -1.5e308
    assert_invalid(lambda: submit(board, name, "bob", -1.5e308, **fields), "score")
    page = top(board, name, order=order, period=period)
    assert {(member, score) for member, score, _ in page} == {("ann", 1.5e308), ("bob", -1.5e308)}


def test_increments_are_exact_and_best_keeps_the_maximum_under_concurrency(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name, best_board = new_key(), new_key()

    async def client(stub: Stub, number: int) -> None:
        for n in range(100):
            await stub.Submit(
                pb.SubmitRequest(board=name, member="pot", score=1, mode=pb.MODE_INCREMENT)
            )
            score = (number * 100 + n) % 4_999
            await stub.Submit(
                pb.SubmitRequest(board=best_board, member="top", score=score, mode=pb.MODE_BEST)
            )

    async def scenario() -> None:
        channels = [grpc.aio.insecure_channel(server.address) for _ in range(50)]
        try:
            await asyncio.gather(*(client(Stub(c), n) for n, c in enumerate(channels)))
        finally:
            for channel in channels:
                await channel.close()

    asyncio.run(scenario())
    with grpc.insecure_channel(server.address) as channel:
        stub = Stub(channel)
        assert stub.GetRank(pb.GetRankRequest(board=name, member="pot")).score == 5_000
        assert stub.GetRank(pb.GetRankRequest(board=best_board, member="top")).score == 4_998


# Periods


@pytest.mark.parametrize(
    ("period", "part"),
    [(pb.PERIOD_DAILY, "day"), (pb.PERIOD_WEEKLY, "week"), (pb.PERIOD_MONTHLY, "month")],
)
def test_a_periodic_board_is_a_key_per_period_that_outlives_it_by_one(
    board: Stub, backend_redis: Any, new_key: Callable[[], str], period: pb.Period, part: str
) -> None:
    name = new_key()
    client = backend_redis
    before = datetime.fromtimestamp(client.time()[0], UTC)
    submit(board, name, "ann", 1, period=period)
    after = datetime.fromtimestamp(client.time()[0], UTC)
    (key,) = [
        key.decode() for key in client.scan_iter(match=f"patterns:default:leaderboard:{{{name}}}*")
    ]
    # Which period, and when its key expires, by the calendar (either side of a boundary
    # crossed during the test).
    expected = {_period_key(part, moment) for moment in (before, after)}
    assert key.rsplit(":", 1)[1] in {number for number, _ in expected}
    expires_at = datetime.fromtimestamp(client.ttl(key) + time.time(), UTC)
    assert any(abs((expires_at - end).total_seconds()) < 5 for _, end in expected)
    assert board.Size(pb.SizeRequest(board=name, period=period)).count == 1
    assert board.Size(pb.SizeRequest(board=name)).count == 0  # not the period-less board


def _period_key(part: str, moment: datetime) -> tuple[str, datetime]:
    """The key's period part, and when that period's key expires (the end of the next)."""
    day = (moment.date() - date(1970, 1, 1)).days
    if part == "day":
        return f"day{day}", datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day + 2)
    if part == "week":
        monday = moment.date() - timedelta(days=moment.weekday())
        index = ((monday - date(1970, 1, 1)).days + 3) // 7
        return f"week{index}", datetime.combine(
            monday + timedelta(days=14), datetime.min.time(), UTC
        )
    index = moment.year * 12 + moment.month - 1
    ends = index + 2
    return f"month{index}", datetime(ends // 12, ends % 12 + 1, 1, tzinfo=UTC)


def test_the_previous_period_can_be_read(
    board: Stub, backend_redis: Any, new_key: Callable[[], str]
) -> None:
    name = new_key()
    client = backend_redis
    day = client.time()[0] // 86_400
    # Yesterday's board, as yesterday's submissions left it (written here directly).
    client.zadd(f"patterns:default:leaderboard:{{{name}}}:h:day{day - 1}", {"ann": -42})
    previous = board.GetRank(
        pb.GetRankRequest(board=name, member="ann", period=pb.PERIOD_DAILY, period_offset=-1)
    )
    if previous.found:  # unless midnight passed between the two lines above
        assert (previous.score, previous.rank) == (42, 1)
        current = pb.GetRankRequest(board=name, member="ann", period=pb.PERIOD_DAILY)
        assert not board.GetRank(current).found
    else:
        assert client.time()[0] // 86_400 != day


@pytest.mark.parametrize("backend_url", ["redis7", "redis6.2", "valkey8"], indirect=True)
def test_the_calendar_in_lua_agrees_with_python(backend_url: str) -> None:
    """The shipped Lua date functions, run in Redis, for every 7th day from 1970 to 2200
    and the days around every New Year and leap day."""
    common = TOP.source[: TOP.source.index(TOP.body.read_text())]  # the shared functions
    harness = (
        common
        + """
local reply = {}
for i = 1, #ARGV do
  local y, m = civil(tonumber(ARGV[i]))
  reply[#reply + 1] = y * 100 + m
  reply[#reply + 1] = month_start(y, m)
end
return reply
"""
    )
    epoch = date(1970, 1, 1)
    days = list(range(0, (date(2200, 1, 1) - epoch).days, 7))
    for year in range(1970, 2201):
        for edge in (date(year, 1, 1), date(year, 3, 1)):
            days += [(edge - epoch).days + delta for delta in (-1, 0)]
    client = redis.Redis.from_url(backend_url)
    for start in range(0, len(days), 2_000):
        chunk = days[start : start + 2_000]
        reply = client.eval(harness, 1, "unused", *chunk)
        for i, day in enumerate(chunk):
            when = epoch + timedelta(days=day)
            assert reply[2 * i] == when.year * 100 + when.month, when
            assert reply[2 * i + 1] == (when.replace(day=1) - epoch).days, when


# Bad input, outages, grpcurl


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("Submit", pb.SubmitRequest(member="m"), "board"),
        ("Submit", pb.SubmitRequest(board="b" * 513, member="m"), "board"),
        ("Submit", pb.SubmitRequest(board="b"), "member"),
        ("Submit", pb.SubmitRequest(board="b", member="m", score=math.nan), "score"),
        ("Submit", pb.SubmitRequest(board="b", member="m", score=math.inf), "score"),
        ("Submit", pb.SubmitRequest(board="b", member="m", mode=9), "mode"),  # type: ignore[arg-type]
        ("Top", pb.TopRequest(board="b"), "limit"),
        ("Top", pb.TopRequest(board="b", limit=1_001), "limit"),
        ("Around", pb.AroundRequest(board="b", member="m", radius=501), "radius"),
        ("Remove", pb.RemoveRequest(board="b"), "members"),
        ("Remove", pb.RemoveRequest(board="b", members=["m"] * 1_001), "members"),
        ("Remove", pb.RemoveRequest(board="b", members=["m", ""]), "members[1]"),
        (
            "Size",
            pb.SizeRequest(board="b", period=pb.PERIOD_DAILY, period_offset=-2),
            "period_offset",
        ),
        ("Size", pb.SizeRequest(board="b", period_offset=-1), "period_offset"),
        ("Size", pb.SizeRequest(board="b", order=7), "order"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_refused(board: Stub, call: str, request_: Any, field: str) -> None:
    assert_invalid(lambda: getattr(board, call)(request_), field)


def test_the_largest_requests_are_accepted(board: Stub, new_key: Callable[[], str]) -> None:
    name = new_key()
    members = [f"{n:04d}" + "m" * 508 for n in range(1_000)]
    for member in members[:10]:
        submit(board, name, member, 1)
    assert len(top(board, name, limit=1_000)) == 10
    assert board.Remove(pb.RemoveRequest(board=name, members=members)).removed == 10


def test_redis_outage_is_unavailable_then_recovers(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    with grpc.insecure_channel(server_on_own_redis().address) as channel:
        stub = Stub(channel)
        submit(stub, "b", "m", 1)
        own_redis.stop()
        assert_unavailable(lambda: submit(stub, "b", "m", 2))
        own_redis.start()
        assert once_answered(lambda: submit(stub, "b", "m", 3)).rank == 1


def test_grpcurl_submits(
    grpcurl_path: str, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    name = new_key()
    submitted = grpcurl_call(
        grpcurl_path,
        server,
        "patterns.leaderboard.v1.Leaderboard/Submit",
        {"board": name, "member": "ann", "score": 42, "mode": "MODE_BEST"},
    )
    assert submitted == {"score": 42, "rank": "1", "updated": True}
