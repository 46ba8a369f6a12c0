"""Leaderboards over Redis sorted sets, one script per call.

Scores are stored so that better always sorts first in ascending order (negated on a
HIGH_FIRST board): pages list the members of a tie in member order, and a rank is one more
than the number of strictly better scores, so ties share it (1, 2, 2, 4) and Top, Around
and GetRank agree. A periodic board is a key per period, named by the script from the
Redis clock (no cron job: a new period is a new key), that expires a period after its own
ends, so the previous period can still be read. A board without a period is kept until its
members are removed.
"""

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from patterns_server.core.errors import InvalidArgument
from patterns_server.core.validation import check_name, check_names
from patterns_server.storage import LuaScript, RedisBackend

MAX_PAGE = 1_000
MAX_RADIUS = 500
MAX_MEMBERS = 1_000
MAX_BOARD = 2**32  # members a Redis sorted set can hold


class Order(enum.Enum):
    HIGH_FIRST = "h"
    LOW_FIRST = "l"


class Period(enum.Enum):
    NONE = "none"
    DAILY = "day"
    WEEKLY = "week"
    MONTHLY = "month"


class Mode(enum.Enum):
    SET = "set"
    INCREMENT = "increment"
    BEST = "best"


@dataclass(frozen=True)
class Board:
    """Which board: its name, order, period, and which period (0 current, -1 previous)."""

    name: str
    order: Order = Order.HIGH_FIRST
    period: Period = Period.NONE
    offset: int = 0


@dataclass(frozen=True)
class Standing:
    member: str
    score: float
    rank: int


SUBMIT = LuaScript.load(__file__, "submit", clock=True)
RANK = LuaScript.load(__file__, "rank", clock=True)
TOP = LuaScript.load(__file__, "top", clock=True)
AROUND = LuaScript.load(__file__, "around", clock=True)
REMOVE = LuaScript.load(__file__, "remove", clock=True)
SIZE = LuaScript.load(__file__, "size", clock=True)


class Leaderboard:
    def __init__(self, redis: RedisBackend) -> None:
        self._redis = redis
        self._keys = redis.keys("leaderboard")

    async def submit(
        self, board: Board, member: str, score: float, mode: Mode = Mode.SET
    ) -> tuple[Standing, bool]:
        """Record `score` for `member`; its standing after the write, and whether its
        score changed."""
        check_name("member", member)
        if not math.isfinite(score):
            raise InvalidArgument("score", "must be a finite number (not NaN or infinite)")
        if board.offset != 0:
            raise InvalidArgument("period_offset", "submissions go to the current period")
        written, *reply = await self._run(
            SUBMIT, board, member, mode.value, _stored(board.order, score)
        )
        if not written:
            raise InvalidArgument(
                "score", "the increment would make the member's score infinite: nothing written"
            )
        stored, rank, changed = reply
        return Standing(member, _score(board.order, stored), rank), bool(changed)

    async def rank(self, board: Board, member: str) -> Standing | None:
        check_name("member", member)
        reply = await self._run(RANK, board, member)
        if not reply:
            return None
        return Standing(member, _score(board.order, reply[0]), reply[1])

    async def top(self, board: Board, limit: int, offset: int = 0) -> tuple[list[Standing], int]:
        """A page, best first, and the board's size."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument("limit", f"must be 1 to {MAX_PAGE:,}, got {limit:,}")
        if offset < 0:
            raise InvalidArgument("offset", f"must be 0 or more, got {offset:,}")
        # A sorted set holds fewer than 2^32 members: any offset beyond is an empty page.
        reply = await self._run(TOP, board, min(offset, MAX_BOARD), limit)
        return _standings(board.order, reply[1:]), int(reply[0])

    async def around(self, board: Board, member: str, radius: int) -> list[Standing]:
        """`member` and up to `radius` on each side; empty when it is not on the board."""
        check_name("member", member)
        if not 0 <= radius <= MAX_RADIUS:
            raise InvalidArgument("radius", f"must be 0 to {MAX_RADIUS}, got {radius:,}")
        return _standings(board.order, await self._run(AROUND, board, member, radius))

    async def remove(self, board: Board, members: Sequence[str]) -> int:
        check_names("members", members, 1, MAX_MEMBERS)
        return int(await self._run(REMOVE, board, *members))

    async def size(self, board: Board) -> int:
        return int(await self._run(SIZE, board))

    async def _run(self, script: LuaScript, board: Board, *args: object) -> Any:
        check_name("board", board.name)
        if board.offset not in (0, -1):
            raise InvalidArgument("period_offset", f"must be 0 or -1, got {board.offset}")
        if board.offset and board.period is Period.NONE:
            raise InvalidArgument("period_offset", "applies to boards with a period")
        base = self._keys(board.name, board.order.value)
        return await self._redis.eval(script, [base], [board.period.value, board.offset, *args])


def _stored(order: Order, score: float) -> str:
    """What Redis stores for `score` on a board of `order` (exact: repr of a double)."""
    return repr(-score if order is Order.HIGH_FIRST else score)


def _score(order: Order, stored: Any) -> float:
    value = float(stored)
    # + 0.0 turns -0.0 into 0.0: a HIGH_FIRST board stores 0 negated, as -0.
    return (-value if order is Order.HIGH_FIRST else value) + 0.0


def _standings(order: Order, flat: Sequence[Any]) -> list[Standing]:
    """Standings from a script's flat reply: member, stored score, rank, member, ..."""
    return [
        Standing(flat[i].decode(), _score(order, flat[i + 1]), int(flat[i + 2]))
        for i in range(0, len(flat), 3)
    ]
