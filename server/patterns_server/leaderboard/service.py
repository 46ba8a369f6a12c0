"""The Leaderboard gRPC servicer: request messages in, Leaderboard calls, responses out."""

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import grpc
from patterns.leaderboard.v1 import leaderboard_pb2 as pb
from patterns.leaderboard.v1 import leaderboard_pb2_grpc

from patterns_server.core.errors import InvalidArgument
from patterns_server.leaderboard.leaderboard import (
    Board,
    Leaderboard,
    Mode,
    Order,
    Period,
    Standing,
)
from patterns_server.rpc.service import Runtime, Service

ORDERS = {
    pb.ORDER_UNSPECIFIED: Order.HIGH_FIRST,
    pb.ORDER_HIGH_FIRST: Order.HIGH_FIRST,
    pb.ORDER_LOW_FIRST: Order.LOW_FIRST,
}
PERIODS = {
    pb.PERIOD_UNSPECIFIED: Period.NONE,
    pb.PERIOD_NONE: Period.NONE,
    pb.PERIOD_DAILY: Period.DAILY,
    pb.PERIOD_WEEKLY: Period.WEEKLY,
    pb.PERIOD_MONTHLY: Period.MONTHLY,
}
T = TypeVar("T")
MODES = {
    pb.MODE_UNSPECIFIED: Mode.SET,
    pb.MODE_SET: Mode.SET,
    pb.MODE_INCREMENT: Mode.INCREMENT,
    pb.MODE_BEST: Mode.BEST,
}


class LeaderboardServicer(leaderboard_pb2_grpc.LeaderboardServicer):
    def __init__(self, leaderboard: Leaderboard) -> None:
        self._leaderboard = leaderboard

    async def Submit(
        self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitResponse:
        mode = _choice(MODES, request.mode, "mode")
        standing, updated = await self._leaderboard.submit(
            _board(request), request.member, request.score, mode
        )
        return pb.SubmitResponse(score=standing.score, rank=standing.rank, updated=updated)

    async def GetRank(
        self, request: pb.GetRankRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRankResponse:
        standing = await self._leaderboard.rank(_board(request), request.member)
        if standing is None:
            return pb.GetRankResponse()
        return pb.GetRankResponse(found=True, rank=standing.rank, score=standing.score)

    async def Top(
        self, request: pb.TopRequest, context: grpc.aio.ServicerContext
    ) -> pb.TopResponse:
        standings, total = await self._leaderboard.top(
            _board(request), request.limit, request.offset
        )
        return pb.TopResponse(entries=_entries(standings), total=total)

    async def Around(
        self, request: pb.AroundRequest, context: grpc.aio.ServicerContext
    ) -> pb.AroundResponse:
        standings = await self._leaderboard.around(_board(request), request.member, request.radius)
        return pb.AroundResponse(entries=_entries(standings))

    async def Remove(
        self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        removed = await self._leaderboard.remove(_board(request), request.members)
        return pb.RemoveResponse(removed=removed)

    async def Size(
        self, request: pb.SizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SizeResponse:
        return pb.SizeResponse(count=await self._leaderboard.size(_board(request)))


def _board(request: Any) -> Board:
    """The board a request names (every request has board, order and period fields)."""
    offset = getattr(request, "period_offset", 0)
    return Board(
        request.board,
        _choice(ORDERS, request.order, "order"),
        _choice(PERIODS, request.period, "period"),
        offset,
    )


def _choice(choices: Mapping[Any, T], value: int, field: str) -> T:
    if value not in choices:
        raise InvalidArgument(field, f"is not a known value ({value})")
    return choices[value]


def _entries(standings: Sequence[Standing]) -> list[pb.Entry]:
    return [pb.Entry(member=s.member, score=s.score, rank=s.rank) for s in standings]


def build(runtime: Runtime) -> Service:
    descriptor = pb.DESCRIPTOR.services_by_name["Leaderboard"]
    servicer = LeaderboardServicer(Leaderboard(runtime.redis))
    return Service(servicer, descriptor)
