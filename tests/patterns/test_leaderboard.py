"""Leaderboard used directly: submit modes, shared ranks for ties, pages and neighbours
that agree, boards per period (read on the Redis clock, so at any hour), and increments
that lose nothing under concurrency."""

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from patterns_server.core.errors import InvalidArgument
from patterns_server.leaderboard.leaderboard import (
    Board,
    Leaderboard,
    Mode,
    Order,
    Period,
    Standing,
)
from patterns_server.storage import RedisBackend
from tests.patterns import WithRedis

T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_submit_sets_increments_or_keeps_the_best(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    board = Board(new_key())

    async def scenario(redis: RedisBackend) -> None:
        leaderboard = Leaderboard(redis)
        assert await leaderboard.submit(board, "ann", 10) == (Standing("ann", 10, 1), True)
        assert await leaderboard.submit(board, "ann", 10) == (Standing("ann", 10, 1), False)
        assert await leaderboard.submit(board, "ann", 5, Mode.INCREMENT) == (
            Standing("ann", 15, 1),
            True,
        )
        assert (await leaderboard.submit(board, "ann", 0, Mode.INCREMENT))[1] is False
        assert await leaderboard.submit(board, "ann", 12, Mode.BEST) == (
            Standing("ann", 15, 1),
            False,  # worse than 15: kept
        )
        assert await leaderboard.submit(board, "ann", 20, Mode.BEST) == (
            Standing("ann", 20, 1),
            True,
        )
        assert await leaderboard.submit(board, "bob", 7.5, Mode.BEST) == (
            Standing("bob", 7.5, 2),  # new: stored as it is
            True,
        )
        assert await leaderboard.submit(board, "bob", 3, Mode.SET) == (Standing("bob", 3, 2), True)

    with_redis(scenario)


def test_a_low_first_board_ranks_and_keeps_the_lowest(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    name = new_key()
    golf = Board(name, Order.LOW_FIRST)

    async def scenario(redis: RedisBackend) -> None:
        leaderboard = Leaderboard(redis)
        for member, strokes in [("ann", 72), ("bob", 68), ("cy", 75)]:
            await leaderboard.submit(golf, member, strokes)
        assert (await leaderboard.submit(golf, "ann", 70, Mode.BEST))[0].score == 70
        assert (await leaderboard.submit(golf, "ann", 74, Mode.BEST))[0].score == 70
        page, total = await leaderboard.top(golf, 10)
        assert (page, total) == (
            [Standing("bob", 68, 1), Standing("ann", 70, 2), Standing("cy", 75, 3)],
            3,
        )
        assert await leaderboard.size(Board(name)) == 0  # the other order is another board

    with_redis(scenario)


def test_ties_share_a_rank_and_top_rank_and_around_agree(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    board = Board(new_key())
    # Ranks 1, 2, 2, 4: a rank is one more than the number of strictly better scores.
    expected = [
        Standing("dan", 90, 1),
        Standing("ali", 80, 2),
        Standing("bea", 80, 2),  # a tie lists its members in member order
        Standing("cat", 70, 4),
        Standing("eve", 10, 5),
    ]

    async def scenario(redis: RedisBackend) -> None:
        leaderboard = Leaderboard(redis)
        for standing in reversed(expected):
            await leaderboard.submit(board, standing.member, standing.score)
        assert await leaderboard.top(board, 1_000) == (expected, 5)
        for offset in range(6):  # pages agree wherever they start
            assert await leaderboard.top(board, 2, offset) == (expected[offset : offset + 2], 5)
        for standing in expected:
            assert await leaderboard.rank(board, standing.member) == standing
        assert await leaderboard.around(board, "bea", 1) == expected[1:4]
        assert await leaderboard.around(board, "dan", 2) == expected[:3]  # clipped at the top
        assert await leaderboard.around(board, "eve", 0) == expected[4:]

    with_redis(scenario)


def test_absent_members_removal_and_size(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    board = Board(new_key())

    async def scenario(redis: RedisBackend) -> None:
        leaderboard = Leaderboard(redis)
        assert await leaderboard.rank(board, "x") is None
        assert await leaderboard.around(board, "x", 3) == []
        assert await leaderboard.top(board, 10) == ([], 0)
        for n in range(5):
            await leaderboard.submit(board, f"m{n}", n)
        assert await leaderboard.remove(board, ["m1", "m2", "nobody", "m1"]) == 2
        assert await leaderboard.size(board) == 3
        page, _ = await leaderboard.top(board, 10)
        assert [s.member for s in page] == ["m4", "m3", "m0"]

    with_redis(scenario)


def test_scores_are_exact_doubles(with_redis: WithRedis, new_key: Callable[[], str]) -> None:
    board = Board(new_key())
    scores = {"a": 2.0**53, "b": -1.5e-300, "c": 0.1, "d": -7.25}

    async def scenario(redis: RedisBackend) -> dict[str, float]:
        leaderboard = Leaderboard(redis)
        for member, score in scores.items():
            await leaderboard.submit(board, member, score)
        page, _ = await leaderboard.top(board, 10)
        return {s.member: s.score for s in page}

    assert with_redis(scenario) == scores


def test_a_score_of_zero_reads_back_as_zero_not_minus_zero(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    board = Board(new_key())

    async def scenario(redis: RedisBackend) -> list[float]:
        leaderboard = Leaderboard(redis)
        submitted, _ = await leaderboard.submit(board, "ann", 0)
        ranked = await leaderboard.rank(board, "ann")
        page, _ = await leaderboard.top(board, 1)
        assert ranked is not None
        return [submitted.score, ranked.score, page[0].score]

    # -0.0 == 0.0 in Python: the sign is what shows.
    assert [math.copysign(1, score) for score in with_redis(scenario)] == [1, 1, 1]


def test_an_increment_never_makes_a_score_infinite(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    board = Board(new_key())

    async def scenario(redis: RedisBackend) -> Standing | None:
        leaderboard = Leaderboard(redis)
        await leaderboard.submit(board, "ann", 1.7e308)
        with pytest.raises(InvalidArgument) as refused:
            await leaderboard.submit(board, "ann", 1.7e308, Mode.INCREMENT)
        assert refused.value.field == "score"
        return await leaderboard.rank(board, "ann")

    assert with_redis(scenario) == Standing("ann", 1.7e308, 1)


def test_a_negative_page_offset_is_refused(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    board = Board(new_key())

    async def scenario(redis: RedisBackend) -> None:
        leaderboard = Leaderboard(redis)
        for n in range(5):
            await leaderboard.submit(board, f"m{n}", n)
        with pytest.raises(InvalidArgument) as refused:
            await leaderboard.top(board, 2, -2)
        assert refused.value.field == "offset"

    with_redis(scenario)


# Periods: a board per day, week or month of the Redis clock. A test's calls take a few
# milliseconds, but one may straddle midnight: `within_one_period` then runs it again
# on a fresh board (two boundaries never pass in one test).


def period_number(now: datetime, period: Period) -> int:
    """Which day, week (from Monday) or month `now` is in, counted as the scripts count."""
    day = (now - EPOCH).days
    if period is Period.DAILY:
        return day
    if period is Period.WEEKLY:
        return (day + 3) // 7  # 1970-01-01 was a Thursday
    return now.year * 12 + now.month - 1


async def within_one_period(
    redis: RedisBackend,
    period: Period,
    new_key: Callable[[], str],
    observe: Callable[[str], Awaitable[T]],
) -> T:
    """What `observe(board name)` saw in a run that began and ended in one period."""
    for _ in range(2):
        began = period_number(await redis.now(), period)
        seen = await observe(new_key())
        if period_number(await redis.now(), period) == began:
            return seen
    raise AssertionError("two period boundaries passed during one test")


@pytest.mark.parametrize("period", [Period.DAILY, Period.WEEKLY, Period.MONTHLY])
def test_a_periodic_board_is_a_board_of_its_own(
    with_redis: WithRedis, new_key: Callable[[], str], period: Period
) -> None:
    async def scenario(redis: RedisBackend) -> tuple[object, ...]:
        leaderboard = Leaderboard(redis)

        async def observe(name: str) -> tuple[object, ...]:
            board = Board(name, period=period)
            await leaderboard.submit(board, "ann", 5)
            await leaderboard.submit(board, "bob", 7)
            others = [Board(name, period=p) for p in Period if p is not period]
            return (
                await leaderboard.top(board, 10),
                await leaderboard.size(Board(name, period=period, offset=-1)),
                [await leaderboard.size(other) for other in others],
            )

        return await within_one_period(redis, period, new_key, observe)

    page, previous, others = with_redis(scenario)
    assert page == ([Standing("bob", 7, 1), Standing("ann", 5, 2)], 2)
    assert previous == 0  # nothing was submitted in the previous period
    assert others == [0, 0, 0]  # the all-time board and the other periods' are apart


def test_the_previous_day_is_read_with_offset_minus_one(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    async def scenario(redis: RedisBackend) -> tuple[Standing | None, Standing | None]:
        leaderboard = Leaderboard(redis)

        async def observe(name: str) -> tuple[Standing | None, Standing | None]:
            # Yesterday's board as yesterday's submissions left it, written directly (the
            # layout of common.lua: the base key, then the day's number; high-first boards
            # store the negated score).
            yesterday = period_number(await redis.now(), Period.DAILY) - 1
            base = redis.keys("leaderboard")(name, Order.HIGH_FIRST.value)
            await redis.call("ZADD", f"{base}:day{yesterday}", -42, "ann")
            return (
                await leaderboard.rank(Board(name, period=Period.DAILY, offset=-1), "ann"),
                await leaderboard.rank(Board(name, period=Period.DAILY), "ann"),
            )

        return await within_one_period(redis, Period.DAILY, new_key, observe)

    assert with_redis(scenario) == (Standing("ann", 42, 1), None)


# Concurrency


def test_a_hundred_increments_of_one_at_once_score_exactly_a_hundred(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    board = Board(new_key())

    async def scenario(redis: RedisBackend) -> tuple[list[float], Standing | None]:
        leaderboards = [Leaderboard(redis) for _ in range(4)]  # as if from four servers
        results = await asyncio.gather(
            *(leaderboards[n % 4].submit(board, "pot", 1, Mode.INCREMENT) for n in range(100))
        )
        return sorted(standing.score for standing, _ in results), await leaderboards[0].rank(
            board, "pot"
        )

    scores, final = with_redis(scenario)
    assert final == Standing("pot", 100, 1)
    # Each increment read its own result: 1 to 100, none seen twice.
    assert scores == [float(n) for n in range(1, 101)]


def test_best_keeps_the_highest_of_submissions_at_once(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    board = Board(new_key())
    scores = list(range(200))
    random.shuffle(scores)

    async def scenario(redis: RedisBackend) -> Standing | None:
        leaderboard = Leaderboard(redis)
        await asyncio.gather(*(leaderboard.submit(board, "top", s, Mode.BEST) for s in scores))
        return await leaderboard.rank(board, "top")

    assert with_redis(scenario) == Standing("top", 199, 1)


def test_a_hundred_members_submitted_at_once_get_ranks_one_to_a_hundred(
    with_redis: WithRedis, new_key: Callable[[], str]
) -> None:
    board = Board(new_key())

    async def scenario(redis: RedisBackend) -> tuple[list[Standing], int]:
        leaderboard = Leaderboard(redis)
        await asyncio.gather(*(leaderboard.submit(board, f"m{n:03}", n) for n in range(100)))
        return await leaderboard.top(board, 1_000)

    page, total = with_redis(scenario)
    assert total == 100
    assert page == [Standing(f"m{99 - i:03}", 99 - i, i + 1) for i in range(100)]


# Limits


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda lb: lb.submit(Board(""), "m", 1), "board"),
        (lambda lb: lb.submit(Board("b" * 513), "m", 1), "board"),
        (lambda lb: lb.submit(Board("b"), "", 1), "member"),
        (lambda lb: lb.submit(Board("b"), "m", math.nan), "score"),
        (lambda lb: lb.submit(Board("b"), "m", -math.inf), "score"),
        (lambda lb: lb.submit(Board("b", period=Period.DAILY, offset=-1), "m", 1), "period_offset"),
        (lambda lb: lb.size(Board("b", period=Period.DAILY, offset=-2)), "period_offset"),
        (lambda lb: lb.size(Board("b", offset=-1)), "period_offset"),  # no period
        (lambda lb: lb.top(Board("b"), 0), "limit"),
        (lambda lb: lb.top(Board("b"), 1_001), "limit"),
        (lambda lb: lb.around(Board("b"), "m", 501), "radius"),
        (lambda lb: lb.around(Board("b"), "m", -1), "radius"),
        (lambda lb: lb.remove(Board("b"), []), "members"),
        (lambda lb: lb.remove(Board("b"), ["m"] * 1_001), "members"),
        (lambda lb: lb.remove(Board("b"), ["m", ""]), "members[1]"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    with_redis: WithRedis, call: Callable[[Leaderboard], Awaitable[object]], field: str
) -> None:
    async def scenario(redis: RedisBackend) -> None:
        with pytest.raises(InvalidArgument) as refused:
            await call(Leaderboard(redis))
        assert refused.value.field == field

    with_redis(scenario)
