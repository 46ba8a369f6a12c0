"""The Locker gRPC servicer: leases in and out, and Hold as a server stream."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from patterns.lock.v1 import lock_pb2 as pb
from patterns.lock.v1 import lock_pb2_grpc

from patterns_server.core.errors import Aborted
from patterns_server.lock.lock import MIN_HOLD_TTL, Locker, ReleaseStatus
from patterns_server.rpc.convert import optional_timedelta, time_left, timestamp
from patterns_server.rpc.service import Runtime, Service

RELEASE_STATUSES = {
    ReleaseStatus.RELEASED: pb.RELEASE_STATUS_RELEASED,
    ReleaseStatus.NOT_HELD: pb.RELEASE_STATUS_NOT_HELD,
    ReleaseStatus.HELD_BY_OTHER: pb.RELEASE_STATUS_HELD_BY_OTHER,
}


class LockerServicer(lock_pb2_grpc.LockerServicer):
    def __init__(self, locker: Locker) -> None:
        self._locker = locker

    async def Acquire(
        self, request: pb.AcquireRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcquireResponse:
        lease = await self._locker.acquire(
            request.name,
            optional_timedelta(request, "ttl"),
            optional_timedelta(request, "wait_timeout"),
            time_left(context),
        )
        if lease is None:
            return pb.AcquireResponse(acquired=False)
        return pb.AcquireResponse(
            acquired=True,
            token=lease.token,
            fencing_token=lease.number,
            expires_at=timestamp(lease.expires_at),
        )

    async def Release(
        self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseResponse:
        status = await self._locker.release(request.name, request.token)
        return pb.ReleaseResponse(status=RELEASE_STATUSES[status])

    async def Extend(
        self, request: pb.ExtendRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExtendResponse:
        expires_at = await self._locker.extend(
            request.name, request.token, optional_timedelta(request, "ttl")
        )
        if expires_at is None:
            return pb.ExtendResponse(extended=False)
        return pb.ExtendResponse(extended=True, expires_at=timestamp(expires_at))

    async def Hold(
        self, request: pb.HoldRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.HoldResponse]:
        ttl = optional_timedelta(request, "ttl")
        lease = await self._locker.acquire(
            request.name,
            ttl,
            optional_timedelta(request, "wait_timeout"),
            time_left(context),
            ttl_floor=MIN_HOLD_TTL,
        )
        if lease is None:
            yield pb.HoldResponse(not_acquired=pb.NotAcquired())
            return
        assert ttl is not None  # acquire refuses a missing ttl
        try:
            acquired = pb.Acquired(token=lease.token, fencing_token=lease.number)
            yield pb.HoldResponse(acquired=acquired)
            try:
                await self._locker.keep(request.name, lease.token, ttl)
            except Aborted:
                yield pb.HoldResponse(lost=pb.Lost())
                raise
        finally:
            await self._let_go(request.name, lease.token)

    async def _let_go(self, name: str, token: str) -> None:
        """Release a Hold's lease as its stream ends, however it ends: shielded from the
        stream's cancellation (a client gone is the usual way a Hold ends). If Redis is
        unreachable, the lease expires on its own within its ttl."""
        with contextlib.suppress(Exception):  # nothing more to do: it expires by itself
            await asyncio.shield(self._locker.release(name, token))

    async def Inspect(
        self, request: pb.InspectRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectResponse:
        state = await self._locker.inspect(request.name)
        response = pb.InspectResponse(held=state.held, fencing_token=state.fencing_token)
        if state.held:
            response.ttl_remaining.FromTimedelta(state.ttl_remaining)
        return response

    async def ForceRelease(
        self, request: pb.ForceReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ForceReleaseResponse:
        return pb.ForceReleaseResponse(released=await self._locker.force_release(request.name))


def build(runtime: Runtime) -> Service:
    descriptor = pb.DESCRIPTOR.services_by_name["Locker"]
    return Service(LockerServicer(Locker(runtime.redis)), descriptor)
