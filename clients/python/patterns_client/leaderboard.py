"""Leaderboard: scores, fair ranks for ties, pages, neighbours, and periodic boards."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from patterns.leaderboard.v1 import leaderboard_pb2 as pb
from patterns.leaderboard.v1 import leaderboard_pb2_grpc

from patterns_client._calls import AsyncCalls, Calls

__all__ = [
    "AsyncLeaderboard",
    "Board",
    "Leaderboard",
    "Mode",
    "Order",
    "Page",
    "Period",
    "Standing",
    "Submitted",
]


class Order(enum.Enum):
    """Which scores rank first: the highest (points) or the lowest (times, strokes)."""

    HIGH_FIRST = pb.ORDER_HIGH_FIRST
    LOW_FIRST = pb.ORDER_LOW_FIRST


class Period(enum.Enum):
    """A periodic board starts afresh each UTC day, ISO week or month (Redis clock)."""

    NONE = pb.PERIOD_NONE
    DAILY = pb.PERIOD_DAILY
    WEEKLY = pb.PERIOD_WEEKLY
    MONTHLY = pb.PERIOD_MONTHLY


class Mode(enum.Enum):
    """How a submitted score combines with the member's score."""

    SET = pb.MODE_SET
    INCREMENT = pb.MODE_INCREMENT
    BEST = pb.MODE_BEST


@dataclass(frozen=True)
class Board:
    """A board: its name, order and period. `previous=True` reads the period before the
    current one (a submission to it raises ValueError)."""

    name: str
    order: Order = Order.HIGH_FIRST
    period: Period = Period.NONE
    previous: bool = False

    def fields(self) -> dict[str, Any]:
        """The request fields that name this board."""
        return {
            "board": self.name,
            "order": self.order.value,
            "period": self.period.value,
            "period_offset": -1 if self.previous else 0,
        }


@dataclass(frozen=True)
class Standing:
    """A member's place on a board: ties share a rank (1, 2, 2, 4)."""

    member: str
    score: float
    rank: int


@dataclass(frozen=True)
class Submitted:
    """A submission's result: the member's score and rank after it, and whether the score
    changed."""

    score: float
    rank: int
    updated: bool


@dataclass(frozen=True)
class Page:
    """A page of standings, best first, and how many members the board has."""

    standings: list[Standing]
    total: int


def _board(board: str | Board) -> Board:
    return Board(board) if isinstance(board, str) else board


def _standings(entries: Any) -> list[Standing]:
    return [Standing(e.member, e.score, int(e.rank)) for e in entries]


def _write_fields(board: Board) -> dict[str, Any]:
    """The request fields of a submission, which goes to the current period."""
    if board.previous:
        raise ValueError("submissions go to the current period: Board(previous=True) is read-only")
    fields = board.fields()
    del fields["period_offset"]
    return fields


def _submitted(response: pb.SubmitResponse) -> Submitted:
    return Submitted(response.score, int(response.rank), response.updated)


def _rank(member: str, response: pb.GetRankResponse) -> Standing | None:
    return Standing(member, response.score, int(response.rank)) if response.found else None


class Leaderboard:
    """`client.leaderboard` of the blocking client. `board` is a name (a HIGH_FIRST board
    without a period) or a Board."""

    def __init__(self, calls: Calls, stub: leaderboard_pb2_grpc.LeaderboardStub) -> None:
        self._calls = calls
        self._stub = stub

    def submit(
        self, board: str | Board, member: str, score: float, *, mode: Mode = Mode.SET
    ) -> Submitted:
        """Record `score` for `member` (SET replaces, INCREMENT adds, BEST keeps the better)."""
        request = pb.SubmitRequest(
            member=member, score=score, mode=mode.value, **_write_fields(_board(board))
        )
        return _submitted(self._calls.unary(self._stub.Submit, request))

    def rank(self, board: str | Board, member: str) -> Standing | None:
        """The member's standing; None when it is not on the board."""
        request = pb.GetRankRequest(member=member, **_board(board).fields())
        return _rank(member, self._calls.unary(self._stub.GetRank, request))

    def top(self, board: str | Board, limit: int = 10, *, offset: int = 0) -> Page:
        """A page of the board, best first, and the board's size."""
        request = pb.TopRequest(limit=limit, offset=offset, **_board(board).fields())
        response = self._calls.unary(self._stub.Top, request)
        return Page(_standings(response.entries), int(response.total))

    def around(self, board: str | Board, member: str, radius: int = 5) -> list[Standing]:
        """The member and up to `radius` standings on each side; empty when it is absent."""
        request = pb.AroundRequest(member=member, radius=radius, **_board(board).fields())
        return _standings(self._calls.unary(self._stub.Around, request).entries)

    def remove(self, board: str | Board, members: Sequence[str]) -> int:
        """Take members off; how many were on."""
        request = pb.RemoveRequest(members=list(members), **_board(board).fields())
        return int(self._calls.unary(self._stub.Remove, request).removed)

    def size(self, board: str | Board) -> int:
        """How many members the board has."""
        request = pb.SizeRequest(**_board(board).fields())
        return int(self._calls.unary(self._stub.Size, request).count)


class AsyncLeaderboard:
    """`client.leaderboard` of the asyncio client: Leaderboard's methods as coroutines."""

    def __init__(self, calls: AsyncCalls, stub: leaderboard_pb2_grpc.LeaderboardStub) -> None:
        self._calls = calls
        self._stub = stub

    async def submit(
        self, board: str | Board, member: str, score: float, *, mode: Mode = Mode.SET
    ) -> Submitted:
        """Record `score` for `member` (SET replaces, INCREMENT adds, BEST keeps the better);
        the member's score and rank after. ValueError for a Board(previous=True)."""
        request = pb.SubmitRequest(
            member=member, score=score, mode=mode.value, **_write_fields(_board(board))
        )
        return _submitted(await self._calls.unary(self._stub.Submit, request))

    async def rank(self, board: str | Board, member: str) -> Standing | None:
        """The member's standing; None when it is not on the board."""
        request = pb.GetRankRequest(member=member, **_board(board).fields())
        return _rank(member, await self._calls.unary(self._stub.GetRank, request))

    async def top(self, board: str | Board, limit: int = 10, *, offset: int = 0) -> Page:
        """A page of the board, best first, and the board's size."""
        request = pb.TopRequest(limit=limit, offset=offset, **_board(board).fields())
        response = await self._calls.unary(self._stub.Top, request)
        return Page(_standings(response.entries), int(response.total))

    async def around(self, board: str | Board, member: str, radius: int = 5) -> list[Standing]:
        """The member and up to `radius` standings on each side; empty when it is absent."""
        request = pb.AroundRequest(member=member, radius=radius, **_board(board).fields())
        return _standings((await self._calls.unary(self._stub.Around, request)).entries)

    async def remove(self, board: str | Board, members: Sequence[str]) -> int:
        """Take members off; how many were on."""
        request = pb.RemoveRequest(members=list(members), **_board(board).fields())
        return int((await self._calls.unary(self._stub.Remove, request)).removed)

    async def size(self, board: str | Board) -> int:
        """How many members the board has."""
        request = pb.SizeRequest(**_board(board).fields())
        return int((await self._calls.unary(self._stub.Size, request)).count)
