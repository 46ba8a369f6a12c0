"""Locker: leases with fencing tokens, and a lock held for the length of a `with` block.

`hold` keeps a Hold stream open for the block: the server renews the lease while the
stream lasts and releases it when the stream ends, whether the block ends, raises, or the
process dies. If the server reports the lease lost (force-released, or Redis unreachable
past the ttl), `lost` is set: a holder doing long work should check it, and always pass
`fencing_token` to what it protects.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc
from patterns.lock.v1 import lock_pb2 as pb
from patterns.lock.v1 import lock_pb2_grpc

from patterns_client._calls import AsyncCalls, Calls
from patterns_client._convert import duration, seconds, to_datetime
from patterns_client.errors import (
    DeadlineExceeded,
    Internal,
    LockNotAcquired,
    PatternsError,
    from_rpc_error,
)

__all__ = [
    "AsyncHeldLock",
    "AsyncLocks",
    "HeldLock",
    "Lease",
    "LockState",
    "Locks",
    "ReleaseStatus",
]


@dataclass(frozen=True)
class Lease:
    """A granted lease: `token` proves it (keep it secret), `fencing_token` is greater
    than every earlier grant's of the name (compare tokens: they have gaps), `expires_at`
    is its end unless extended or released."""

    name: str
    token: str
    fencing_token: int
    expires_at: datetime


class ReleaseStatus(enum.Enum):
    """What a release found: released, nobody holding the lock, or someone else."""

    RELEASED = pb.RELEASE_STATUS_RELEASED
    NOT_HELD = pb.RELEASE_STATUS_NOT_HELD
    HELD_BY_OTHER = pb.RELEASE_STATUS_HELD_BY_OTHER


@dataclass(frozen=True)
class LockState:
    """What Inspect says of a lock (never its token)."""

    held: bool
    fencing_token: int
    ttl_remaining: timedelta


@dataclass
class HeldLock:
    """A lock held by `Locks.hold` for the length of its block. `lost` is set when the
    lease was lost before the block ended; `error` then says why, when the server did."""

    name: str
    token: str
    fencing_token: int
    lost: threading.Event
    error: PatternsError | None = None


@dataclass
class AsyncHeldLock:
    """HeldLock of the asyncio client (`lost` is an asyncio.Event)."""

    name: str
    token: str
    fencing_token: int
    lost: asyncio.Event
    error: PatternsError | None = None


def _acquire_request(name: str, ttl: timedelta, wait: timedelta | None) -> pb.AcquireRequest:
    return pb.AcquireRequest(name=name, ttl=duration(ttl), wait_timeout=duration(wait))


def _lease(name: str, response: pb.AcquireResponse) -> Lease | None:
    if not response.acquired:
        return None
    return Lease(name, response.token, response.fencing_token, to_datetime(response.expires_at))


def _extend_request(lease: Lease, ttl: timedelta) -> pb.ExtendRequest:
    return pb.ExtendRequest(name=lease.name, token=lease.token, ttl=duration(ttl))


def _extended(lease: Lease, response: pb.ExtendResponse) -> Lease | None:
    """The lease with its new end; None when it no longer held the lock."""
    if not response.extended:
        return None
    return Lease(lease.name, lease.token, lease.fencing_token, to_datetime(response.expires_at))


def _state(response: pb.InspectResponse) -> LockState:
    return LockState(response.held, response.fencing_token, response.ttl_remaining.ToTimedelta())


def _waited(wait: timedelta | None) -> float:
    return seconds(wait) if wait is not None else 0.0


def _hold_request(name: str, ttl: timedelta, wait: timedelta | None) -> pb.HoldRequest:
    return pb.HoldRequest(name=name, ttl=duration(ttl), wait_timeout=duration(wait))


def _acquired(name: str, call: Any, first: pb.HoldResponse | None) -> pb.Acquired:
    """The grant a Hold stream opened with; else the stream is ended, and the reason raised."""
    if first is None:
        call.cancel()
        raise Internal("the Hold stream ended without an answer")
    if first.WhichOneof("kind") != "acquired":
        call.cancel()
        raise LockNotAcquired(name)
    return first.acquired


def _no_answer(patience: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"Hold gave no first answer within {patience:.1f}s",
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
    )


def _lost_for(error: grpc.RpcError) -> PatternsError | None:
    """Why a Hold stream failed; None when it was cancelled (by the holder)."""
    if error.code() == grpc.StatusCode.CANCELLED:
        return None
    return from_rpc_error(error)


class Locks:
    """`client.locks` of the blocking client."""

    def __init__(self, calls: Calls, stub: lock_pb2_grpc.LockerStub) -> None:
        self._calls = calls
        self._stub = stub

    def acquire(self, name: str, *, ttl: timedelta, wait: timedelta | None = None) -> Lease | None:
        """The lock for `ttl`, waiting up to `wait` for it; None when not granted."""
        response = self._calls.unary(
            self._stub.Acquire, _acquire_request(name, ttl, wait), longer_by=_waited(wait)
        )
        return _lease(name, response)

    def release(self, lease: Lease) -> ReleaseStatus:
        """Give the lock up, if the lease still holds it."""
        request = pb.ReleaseRequest(name=lease.name, token=lease.token)
        return ReleaseStatus(self._calls.unary(self._stub.Release, request).status)

    def extend(self, lease: Lease, *, ttl: timedelta) -> Lease | None:
        """The lease with `ttl` left from now; None when it no longer holds the lock."""
        request = _extend_request(lease, ttl)
        return _extended(lease, self._calls.unary(self._stub.Extend, request))

    def inspect(self, name: str) -> LockState:
        """Whether the lock is held, its fencing token and time left (never its token)."""
        return _state(self._calls.unary(self._stub.Inspect, pb.InspectRequest(name=name)))

    def force_release(self, name: str) -> bool:
        """End whoever's lease on the name (an operator's tool); whether there was one."""
        request = pb.ForceReleaseRequest(name=name)
        return bool(self._calls.unary(self._stub.ForceRelease, request).released)

    @contextlib.contextmanager
    def hold(
        self, name: str, *, ttl: timedelta, wait: timedelta | None = None
    ) -> Iterator[HeldLock]:
        """Hold the lock for the block (waiting up to `wait` for it, else LockNotAcquired);
        the server renews it every ttl/3 and releases it when the block ends."""
        call: Any = self._stub.Hold(_hold_request(name, ttl, wait), metadata=self._calls.metadata)
        # The stream has no deadline (it lasts as long as the block), but its first answer
        # does: the client's timeout, and the wait.
        patience = self._calls.timeout + _waited(wait)
        gave_up = threading.Event()

        def give_up() -> None:
            gave_up.set()
            call.cancel()

        answer_due = threading.Timer(patience, give_up)
        answer_due.start()
        try:
            first = next(call, None)
        except grpc.RpcError as error:
            if gave_up.is_set():
                raise _no_answer(patience) from None
            raise from_rpc_error(error) from None
        except BaseException:  # KeyboardInterrupt, say: the server must not keep the lock
            call.cancel()
            raise
        finally:
            answer_due.cancel()
        acquired = _acquired(name, call, first)
        held = HeldLock(name, acquired.token, acquired.fencing_token, threading.Event())
        watcher = threading.Thread(target=self._watch, args=(call, held), daemon=True)
        watcher.start()
        try:
            yield held
        finally:
            call.cancel()  # the server releases the lock
            watcher.join()

    @staticmethod
    def _watch(call: Any, held: HeldLock) -> None:
        """Read the rest of the stream: anything but a cancellation means the lease is lost."""
        try:
            for _ in call:
                pass  # only `lost` can follow `acquired`; the error that ends the stream says why
        except grpc.RpcError as error:
            held.error = _lost_for(error)
            if held.error is None:
                return
        held.lost.set()


class AsyncLocks:
    """`client.locks` of the asyncio client: Locks' methods as coroutines, `hold` as an
    async context manager."""

    def __init__(self, calls: AsyncCalls, stub: lock_pb2_grpc.LockerStub) -> None:
        self._calls = calls
        self._stub = stub

    async def acquire(
        self, name: str, *, ttl: timedelta, wait: timedelta | None = None
    ) -> Lease | None:
        """The lock for `ttl`, waiting up to `wait` for it; the Lease, or None when not
        granted."""
        response = await self._calls.unary(
            self._stub.Acquire, _acquire_request(name, ttl, wait), longer_by=_waited(wait)
        )
        return _lease(name, response)

    async def release(self, lease: Lease) -> ReleaseStatus:
        """Give the lock up, if the lease still holds it; what the release found."""
        request = pb.ReleaseRequest(name=lease.name, token=lease.token)
        return ReleaseStatus((await self._calls.unary(self._stub.Release, request)).status)

    async def extend(self, lease: Lease, *, ttl: timedelta) -> Lease | None:
        """The lease with `ttl` left from now; None when it no longer holds the lock."""
        request = _extend_request(lease, ttl)
        return _extended(lease, await self._calls.unary(self._stub.Extend, request))

    async def inspect(self, name: str) -> LockState:
        """Whether the lock is held, its fencing token and time left (never its token)."""
        request = pb.InspectRequest(name=name)
        return _state(await self._calls.unary(self._stub.Inspect, request))

    async def force_release(self, name: str) -> bool:
        """End whoever's lease on the name (an operator's tool); whether there was one."""
        request = pb.ForceReleaseRequest(name=name)
        return bool((await self._calls.unary(self._stub.ForceRelease, request)).released)

    @contextlib.asynccontextmanager
    async def hold(
        self, name: str, *, ttl: timedelta, wait: timedelta | None = None
    ) -> AsyncIterator[AsyncHeldLock]:
        """`async with` it to hold the lock for the block, as an AsyncHeldLock (waiting up
        to `wait` for it, else LockNotAcquired; DeadlineExceeded when the server gives no
        first answer in time); the server renews it every ttl/3 and releases it when the
        block ends or raises. `lost` is set if the lease is lost meanwhile."""
        call: Any = self._stub.Hold(_hold_request(name, ttl, wait), metadata=self._calls.metadata)
        patience = self._calls.timeout + _waited(wait)  # for the first answer, as in Locks
        try:
            first = await asyncio.wait_for(call.read(), patience)
        except asyncio.TimeoutError:
            call.cancel()
            raise _no_answer(patience) from None
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        except BaseException:
            call.cancel()
            raise
        acquired = _acquired(name, call, None if first is grpc.aio.EOF else first)
        held = AsyncHeldLock(name, acquired.token, acquired.fencing_token, asyncio.Event())
        watcher = asyncio.ensure_future(self._watch(call, held))
        try:
            yield held
        finally:
            call.cancel()  # the server releases the lock
            await watcher  # it ends of itself once the call is cancelled

    @staticmethod
    async def _watch(call: Any, held: AsyncHeldLock) -> None:
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
        except asyncio.CancelledError:
            return
        except grpc.RpcError as error:
            held.error = _lost_for(error)
            if held.error is None:
                return
        held.lost.set()
