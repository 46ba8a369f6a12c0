"""Rate-limit checks of the asyncio client sent over one shared RateLimiter.CheckStream
per event loop: the counterpart of `_check_stream` (which says what a check answers, and
when a stream is opened again), with tasks for threads.

A check puts its request on a queue and awaits a future of its own. gRPC's task consumes
the queue as the call's request iterator, so a check never awaits a write itself: a
cancelled write cancels the whole call in grpc.aio, and a check that gives up (its
timeout, its caller's cancellation) must leave the stream to the others. One reader task
per stream resolves the futures. A stream belongs to the loop it was opened in: a check
from a later loop (the first one ended, and its tasks with it) opens another.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from patterns.ratelimit.v1 import ratelimit_pb2 as pb

from patterns_client._calls import AsyncCalls
from patterns_client._check_stream import (
    MAX_IN_PROGRESS,
    StreamRefused,
    answer_of,
    deadline_exceeded,
    ended_error,
    unary_for,
)
from patterns_client.errors import Cancelled, PatternsError, copy_error


class _AsyncStream:
    """One CheckStream call in one event loop, its reader task, and the checks waiting
    for its answers."""

    def __init__(self, stub: Any, calls: AsyncCalls, ids: Iterator[int], owner: AsyncCheckStream):
        self.loop = asyncio.get_running_loop()
        self._ids = ids
        self._owner = owner
        self._waiting: dict[int, asyncio.Future[pb.CheckResponse]] = {}
        self._outgoing: asyncio.Queue[pb.CheckStreamRequest | None] = asyncio.Queue()
        self.ended = False
        self._answered = False
        self._call = stub.CheckStream(self._requests(), metadata=calls.metadata)
        self._reader = self.loop.create_task(self._read())

    def send(self, request: pb.CheckRequest) -> tuple[int, asyncio.Future[pb.CheckResponse]]:
        """Queue `request` for the stream: its id and the future of its answer."""
        number = next(self._ids)
        answer: asyncio.Future[pb.CheckResponse] = self.loop.create_future()
        self._waiting[number] = answer
        self._outgoing.put_nowait(pb.CheckStreamRequest(id=number, check=request))
        return number, answer

    def forget(self, number: int) -> None:
        """Stop waiting for check `number`: its answer, if one comes, is dropped."""
        self._waiting.pop(number, None)

    def full(self) -> bool:
        """Whether the stream takes no more checks now: MAX_IN_PROGRESS waiting, or as
        many unwritten."""
        return max(len(self._waiting), self._outgoing.qsize()) >= MAX_IN_PROGRESS

    async def close(self) -> None:
        """Cancel the call and wait for the reader task to end (the checks in progress
        fail CANCELLED, as a unary call's when its channel closes)."""
        self._call.cancel()
        await asyncio.wait([self._reader])

    async def _requests(self) -> AsyncIterator[pb.CheckStreamRequest]:
        """The requests, for gRPC's task that writes them; a check that gave up before its
        turn is left out (nobody would read its answer)."""
        while True:
            request = await self._outgoing.get()
            if request is None:
                return
            if request.id in self._waiting:
                yield request

    async def _read(self) -> None:
        failure: grpc.RpcError | None = None
        try:
            async for response in self._call:
                self._answered = True
                answer = self._waiting.pop(response.id, None)
                if answer is not None and not answer.done():
                    outcome = answer_of(response)
                    if isinstance(outcome, PatternsError):
                        answer.set_exception(outcome)
                    else:
                        answer.set_result(outcome)
        except grpc.RpcError as error:
            failure = error
        except asyncio.CancelledError:
            # The call cancelled (close()), or this task (its loop ending): either way
            # the checks in progress end as a unary call's would, CANCELLED.
            self._end(Cancelled("Locally cancelled", code=grpc.StatusCode.CANCELLED))
            raise
        self._end(ended_error(failure, self._answered))

    def _end(self, error: PatternsError | StreamRefused) -> None:
        if self.ended:
            return
        if isinstance(error, StreamRefused):
            self._owner.refused(error.error)
        self.ended = True
        waiting, self._waiting = self._waiting, {}
        self._outgoing.put_nowait(None)  # gRPC's writer task stops there
        for answer in waiting.values():
            if answer.done():
                continue
            if isinstance(error, StreamRefused):
                answer.set_exception(StreamRefused(error.error))
            else:
                answer.set_exception(copy_error(error))


def _expire(answer: asyncio.Future[pb.CheckResponse]) -> None:
    """No answer in time: the check raises as a unary call past its deadline."""
    if not answer.done():
        answer.set_exception(deadline_exceeded())


class AsyncCheckStream:
    """The checks of one asyncio client, over one shared CheckStream in the running event
    loop (opened on its first check, again on the first check after it ended)."""

    def __init__(self, calls: AsyncCalls, stub: Any) -> None:
        self._calls = calls
        self._stub = stub  # the client's lazy stub: the running loop's channel
        self._stream: _AsyncStream | None = None
        self._ids = itertools.count(1)
        self._unary_until = 0.0

    async def check(self, request: pb.CheckRequest, timeout: float) -> pb.CheckResponse:
        """The answer to `request` within `timeout` seconds, or the PatternsError a unary
        Check with that deadline would have raised."""
        deadline = time.monotonic() + timeout
        stream = self._open()
        if stream is None:
            return await self._unary(request, timeout)
        number, answer = stream.send(request)
        # A timer rather than asyncio.wait_for: no task or future more per check.
        timer = stream.loop.call_later(timeout, _expire, answer)
        try:
            return await answer
        except StreamRefused:  # nothing decided: as a unary Check, in the time left
            return await self._unary(request, max(deadline - time.monotonic(), 0.0))
        finally:
            timer.cancel()
            stream.forget(number)  # answered, given up or cancelled: never answered twice

    def refused(self, error: PatternsError) -> None:
        """The stream was refused with `error`: checks go unary for a while (unary_for)."""
        self._unary_until = time.monotonic() + unary_for(error)

    async def close(self) -> None:
        """End the stream of the running loop (the checks in progress fail CANCELLED); a
        later check opens another. A stream of an ended loop went with its loop."""
        stream, self._stream = self._stream, None
        if stream is not None and stream.loop is asyncio.get_running_loop():
            await stream.close()

    def _open(self) -> _AsyncStream | None:
        """The running loop's stream, opened now if there is none (or it ended); None
        when checks go unary for now, or the stream is full."""
        if time.monotonic() < self._unary_until:
            return None
        stream = self._stream
        if stream is None or stream.ended or stream.loop is not asyncio.get_running_loop():
            stream = self._stream = _AsyncStream(self._stub, self._calls, self._ids, self)
        return None if stream.full() else stream

    async def _unary(self, request: pb.CheckRequest, timeout: float) -> pb.CheckResponse:
        response: pb.CheckResponse = await self._calls.unary(
            self._stub.Check, request, timeout=timeout
        )
        return response
