"""Rate-limit checks of the blocking client sent over one shared RateLimiter.CheckStream.

Many threads check at once; each check is one message on the client's one stream, matched
to its answer by id, so the server coalesces them into its Redis round trips instead of
serving a unary Check each.

The threads: a check puts its request on a queue and waits on a future of its own; gRPC's
sync API sends a stream's requests from an iterator, consumed by a thread of its own (the
only writer of the call), and one reader thread per stream resolves the futures. So no
two threads ever write or read the call at once (gRPC's sync streams allow neither), and a
check that gives up never touches the call: it only forgets its id, under the stream's
lock, and its late answer is dropped.

What a check answers is exactly what a unary Check would have: its decision, the same
exception for its error (errors.from_check_error), DeadlineExceeded when no answer came
within its timeout, and the stream's own status for the checks in progress when the
stream ends (UNAVAILABLE when the connection broke, say). The next check then opens a new
stream: lazily, once for all the checks that arrive meanwhile, never in a loop of its own
(gRPC's channel paces reconnections with its backoff). A stream refused before it began
(an older server: UNIMPLEMENTED; the server's or the tenant's share of streams:
RESOURCE_EXHAUSTED) decided nothing, so its checks are sent as unary Checks instead, and
so are the next ones (for good after UNIMPLEMENTED, for the refusal's retry_after else).
grpc.aio sometimes reports such a refusal as its own INTERNAL (lost_status): a stream
that answered nothing is then treated as refused, one that had answered as UNAVAILABLE.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta

import grpc
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from patterns_client._calls import Calls
from patterns_client.errors import (
    DeadlineExceeded,
    PatternsError,
    Unavailable,
    copy_error,
    from_check_error,
    from_rpc_error,
)

# The contract's limit of checks in progress on one stream; a check beyond it goes unary
# (the server would refuse it OVERLOADED). The requests not yet written are held to it
# too: while the server is paused, the checks that gave up would otherwise pile up there,
# unsent; beyond it, checks go unary, which then fall back as they do.
MAX_IN_PROGRESS = 1_000
# How long checks go unary after a stream was refused for want of a stream slot, when the
# refusal names no retry_after.
REFUSED_FOR = timedelta(seconds=1)


class StreamRefused(Exception):
    """The stream was refused before it began: its checks were not decided."""

    def __init__(self, error: PatternsError) -> None:
        super().__init__(str(error))
        self.error = error


def answer_of(response: pb.CheckStreamResponse) -> pb.CheckResponse | PatternsError:
    """A response's decision, or the exception its check fails with."""
    if response.HasField("result"):
        return response.result
    error = response.error
    retry_after = error.retry_after.ToTimedelta() if error.HasField("retry_after") else None
    return from_check_error(error.code, error.message, error.reason, error.field, retry_after)


def ended_error(error: grpc.RpcError | None, answered: bool) -> PatternsError | StreamRefused:
    """What the checks in progress fail with when their stream ended with `error` (None:
    the stream ended OK, which the server does only once the client stopped sending);
    `answered`: whether the stream had answered any check."""
    if error is None:
        return Unavailable(
            "the check stream ended before answering", code=grpc.StatusCode.UNAVAILABLE
        )
    failure = from_rpc_error(error)
    if lost_status(failure):
        if not answered:  # refused at its start, most likely: let a unary Check say why
            return StreamRefused(failure)
        return Unavailable(
            "the check stream ended (its status was lost)", code=grpc.StatusCode.UNAVAILABLE
        )
    if not answered and failure.code in REFUSALS:
        return StreamRefused(failure)
    return failure


# The statuses of a stream refused before it decided anything.
REFUSALS = frozenset({grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED})


def lost_status(failure: PatternsError) -> bool:
    """Whether `failure` is grpc.aio's own INTERNAL for a write that met an ended call (the
    stream refused, or ended SHUTTING_DOWN, as a check was being sent): it replaces the
    server's status, which is lost. (The server's INTERNAL says "internal error
    (incident ...)".)"""
    return failure.code is grpc.StatusCode.INTERNAL and failure.message == LOST_STATUS


LOST_STATUS = "Internal error from Core"


def deadline_exceeded() -> DeadlineExceeded:
    """What a check not answered within its timeout raises: as a unary call's deadline."""
    return DeadlineExceeded("Deadline Exceeded", code=grpc.StatusCode.DEADLINE_EXCEEDED)


def unary_for(refused: PatternsError) -> float:
    """Seconds to send checks unary after `refused` (the stream's refusal): for good from
    an older server (UNIMPLEMENTED), else the refusal's retry_after, or REFUSED_FOR."""
    if refused.code is grpc.StatusCode.UNIMPLEMENTED:
        return float("inf")
    return (refused.retry_after or REFUSED_FOR).total_seconds()


class _Stream:
    """One CheckStream call, its reader thread, and the checks waiting for its answers."""

    def __init__(
        self,
        stub: ratelimit_pb2_grpc.RateLimiterStub,
        calls: Calls,
        ids: Iterator[int],
        on_refused: Callable[[PatternsError], None],
    ) -> None:
        self._lock = threading.Lock()
        self._ids = ids
        self._on_refused = on_refused
        self._waiting: dict[int, Future[pb.CheckResponse]] = {}
        self._outgoing: queue.SimpleQueue[pb.CheckStreamRequest | None] = queue.SimpleQueue()
        self.ended = False
        self._answered = False
        self._call = stub.CheckStream(self._requests(), metadata=calls.metadata)
        self._reader = threading.Thread(
            target=self._read, name="patterns-client-check-stream", daemon=True
        )
        self._reader.start()

    def send(self, request: pb.CheckRequest) -> tuple[int, Future[pb.CheckResponse]] | None:
        """Send `request`: its id and the future of its answer; None when the stream has
        ended (or is full) and will not take it."""
        with self._lock:
            if self.ended or self._full():
                return None
            number = next(self._ids)
            answer: Future[pb.CheckResponse] = Future()
            self._waiting[number] = answer
        self._outgoing.put(pb.CheckStreamRequest(id=number, check=request))
        return number, answer

    def forget(self, number: int) -> bool:
        """Stop waiting for check `number`: True when it was still unanswered (its answer,
        if one comes, is dropped), False when its answer is in hand (or on its way)."""
        with self._lock:
            return self._waiting.pop(number, None) is not None

    def full(self) -> bool:
        """Whether the stream takes no more checks now: MAX_IN_PROGRESS waiting, or as
        many unwritten."""
        with self._lock:
            return self._full()

    def waiting(self) -> int:
        """How many checks wait for their answer."""
        with self._lock:
            return len(self._waiting)

    def _full(self) -> bool:
        waiting = len(self._waiting)
        return max(waiting, self._outgoing.qsize()) >= MAX_IN_PROGRESS

    def close(self) -> None:
        """Cancel the call; the reader thread ends, and with it the checks in progress
        (CANCELLED, as a unary call's when its channel closes)."""
        self._call.cancel()
        self._reader.join()

    def _requests(self) -> Iterator[pb.CheckStreamRequest]:
        """The requests, for gRPC's thread that writes them; a check that gave up before
        its turn is left out (nobody would read its answer)."""
        while True:
            request = self._outgoing.get()
            if request is None:
                return
            if request.id in self._waiting:  # a racy look is fine: at worst sent in vain
                yield request

    def _read(self) -> None:
        failure: grpc.RpcError | None = None
        try:
            for response in self._call:
                self._answered = True
                with self._lock:
                    answer = self._waiting.pop(response.id, None)
                if answer is not None:
                    outcome = answer_of(response)
                    if isinstance(outcome, PatternsError):
                        answer.set_exception(outcome)
                    else:
                        answer.set_result(outcome)
        except grpc.RpcError as error:
            failure = error
        self._end(ended_error(failure, self._answered))

    def _end(self, error: PatternsError | StreamRefused) -> None:
        if isinstance(error, StreamRefused):
            self._on_refused(error.error)  # before a check can open the next stream
        with self._lock:
            self.ended = True
            waiting, self._waiting = self._waiting, {}
        self._outgoing.put(None)  # gRPC's writer thread stops there
        for answer in waiting.values():
            if isinstance(error, StreamRefused):
                answer.set_exception(StreamRefused(error.error))
            else:
                answer.set_exception(copy_error(error))


class CheckStream:
    """The checks of one blocking client, over one shared CheckStream (opened on the first
    check, again on the first check after it ended)."""

    def __init__(self, calls: Calls, stub: ratelimit_pb2_grpc.RateLimiterStub) -> None:
        self._calls = calls
        self._stub = stub
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self._ids = itertools.count(1)  # unique across the client's streams
        self._unary_until = 0.0  # time.monotonic() until which checks go unary

    def check(self, request: pb.CheckRequest, timeout: float) -> pb.CheckResponse:
        """The answer to `request` within `timeout` seconds, or the PatternsError a unary
        Check with that deadline would have raised."""
        deadline = time.monotonic() + timeout
        sent = self._send(request)
        if sent is None:
            return self._unary(request, timeout)
        stream, number, answer = sent
        try:
            return answer.result(timeout)
        except FutureTimeout:
            if stream.forget(number):
                raise deadline_exceeded() from None
            return answer.result()  # answered just as the wait ran out
        except StreamRefused:  # nothing decided: as a unary Check, in the time left
            return self._unary(request, max(deadline - time.monotonic(), 0.0))

    def in_progress(self) -> int:
        """How many checks wait for the stream's answer now (for tests and diagnostics)."""
        with self._lock:
            stream = self._stream
        return 0 if stream is None else stream.waiting()

    def close(self) -> None:
        """End the stream (the checks in progress fail CANCELLED); a later check opens
        another (or fails as a unary call would, on a closed channel)."""
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _send(
        self, request: pb.CheckRequest
    ) -> tuple[_Stream, int, Future[pb.CheckResponse]] | None:
        """Send `request` on the open stream, opened now if there is none (or it ended);
        None when checks go unary for now, or the stream is full."""
        with self._lock:
            if time.monotonic() < self._unary_until:
                return None
            for _ in range(2):  # the stream may end between the look and the send
                stream = self._stream
                if stream is None or stream.ended:
                    stream = self._stream = _Stream(
                        self._stub, self._calls, self._ids, self._refused
                    )
                sent = stream.send(request)
                if sent is not None:
                    return stream, *sent
                if stream.full():
                    return None
        return None

    def _refused(self, error: PatternsError) -> None:
        with self._lock:
            self._unary_until = time.monotonic() + unary_for(error)

    def _unary(self, request: pb.CheckRequest, timeout: float) -> pb.CheckResponse:
        response: pb.CheckResponse = self._calls.unary(self._stub.Check, request, timeout=timeout)
        return response
