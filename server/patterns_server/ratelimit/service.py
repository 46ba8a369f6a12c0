"""The RateLimiter gRPC servicer: request messages in, RateLimiter calls, responses out."""

import asyncio
import functools
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import grpc
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from patterns_server.core.errors import PatternError, ResourceExhausted
from patterns_server.ratelimit.ratelimit import (
    Algorithm,
    Check,
    Decision,
    Policy,
    RateLimiter,
    check_many_count,
)
from patterns_server.rpc.convert import set_duration_us, time_left, to_timedelta
from patterns_server.rpc.errors import OVERLOAD_RETRY, failure_of
from patterns_server.rpc.service import Runtime, Service

CHECK_STREAM = "/patterns.ratelimit.v1.RateLimiter/CheckStream"
# Checks read from one stream and not yet answered; beyond, a check is answered OVERLOADED.
MAX_IN_PROGRESS = 1_000
STREAM_OVERLOADED = ResourceExhausted(
    f"this stream has {MAX_IN_PROGRESS:,} checks in progress: wait for their answers",
    "OVERLOADED",
    OVERLOAD_RETRY,
)

ALGORITHMS: dict[int, Algorithm] = {
    pb.ALGORITHM_FIXED_WINDOW: Algorithm.FIXED_WINDOW,
    pb.ALGORITHM_SLIDING_WINDOW_LOG: Algorithm.SLIDING_WINDOW_LOG,
    pb.ALGORITHM_SLIDING_WINDOW_COUNTER: Algorithm.SLIDING_WINDOW_COUNTER,
    pb.ALGORITHM_TOKEN_BUCKET: Algorithm.TOKEN_BUCKET,
    pb.ALGORITHM_GCRA: Algorithm.GCRA,
}


class RateLimiterServicer(ratelimit_pb2_grpc.RateLimiterServicer):
    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def Check(
        self, request: pb.CheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckResponse:
        return _response(await self._limiter.check(_check(request), time_left(context)))

    async def CheckMany(
        self, request: pb.CheckManyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckManyResponse:
        check_many_count(len(request.checks), request.all_or_nothing)
        checks = [_check(check, f"checks[{i}].") for i, check in enumerate(request.checks)]
        decisions = await self._limiter.check_many(
            checks, request.all_or_nothing, time_left(context)
        )
        return pb.CheckManyResponse(
            results=[_response(decision) for decision in decisions],
            allowed=all(decision.allowed for decision in decisions),
        )

    async def CheckStream(
        self, requests: AsyncIterator[pb.CheckStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[pb.CheckStreamResponse, None]:
        """Reads checks as they come, and decides those read while a batch is in flight as
        the next batch (`RateLimiter.check_each`): a stream carrying many checks costs a
        few script runs per round trip, not one call per check. Each answer is sent as soon
        as its batch is decided. An invalid check is answered by its own error. When the
        client ends its half, the checks in progress are answered, then the stream ends.
        Cancelled (deadline, client gone, shutdown), it ends its reader and its batch."""
        checks = _StreamChecks(self._limiter, context)
        reader = asyncio.create_task(checks.read(requests))
        answers = checks.answers
        try:
            while True:
                checks.ready.clear()
                while answers:
                    answer = answers.popleft()
                    checks.in_progress -= 1
                    yield answer
                checks.room.set()
                if checks.failure is not None:
                    raise checks.failure
                if not checks.reading and checks.batch is None and not answers:
                    return
                await checks.ready.wait()
        finally:
            await checks.stop(reader)

    async def Reset(
        self, request: pb.ResetRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetResponse:
        await self._limiter.reset(request.key, _policy(request.policy))
        return pb.ResetResponse()


class _StreamChecks:
    """The checks of one CheckStream between their reading and their answer."""

    def __init__(self, limiter: RateLimiter, context: grpc.aio.ServicerContext) -> None:
        self._limiter = limiter
        self._context = context
        self.waiting: list[tuple[int, Check]] = []  # read, for the next batch
        self.batch: asyncio.Task[None] | None = None  # the batch in flight
        self.answers: deque[pb.CheckStreamResponse] = deque()  # decided, to send
        self.in_progress = 0  # read, not yet handed to gRPC to send
        self.reading = True
        self.failure: Exception | None = None  # reading it failed: the stream ends
        self.ready = asyncio.Event()  # answers to send, or the end
        self.room = asyncio.Event()  # the answers to send are few enough to read on

    async def read(self, requests: AsyncIterator[pb.CheckStreamRequest]) -> None:
        """Take every check of the stream until the client ends its half. A client that
        sends without reading its answers is not read further while MAX_IN_PROGRESS
        answers wait to be sent (gRPC's flow control then holds it back): memory stays
        bounded either way."""
        try:
            async for request in requests:
                while len(self.answers) >= MAX_IN_PROGRESS:
                    self.room.clear()
                    await self.room.wait()
                self._take(request)
        except Exception as error:  # a malformed message
            self.failure = error
        finally:
            self.reading = False
            self.ready.set()

    def _take(self, request: pb.CheckStreamRequest) -> None:
        self.in_progress += 1
        if self.in_progress > MAX_IN_PROGRESS:
            self.answers.append(_error(request.id, _check_error(STREAM_OVERLOADED)))
            self.ready.set()
            return
        try:
            check = _check(request.check)
        except PatternError as error:
            self.answers.append(_error(request.id, _check_error(error)))
            self.ready.set()
            return
        self.waiting.append((request.id, check))
        if self.batch is None:
            self._next_batch()

    def _next_batch(self) -> None:
        batch, self.waiting = self.waiting, []
        self.batch = asyncio.create_task(self._decide(batch))

    async def _decide(self, batch: list[tuple[int, Check]]) -> None:
        outcomes: Sequence[Decision | Exception]
        try:
            outcomes = await self._limiter.check_each(
                [check for _, check in batch], time_left(self._context)
            )
        except Exception as error:  # a bug: INTERNAL for each check
            outcomes = [error] * len(batch)
        errors: dict[int, pb.CheckError] = {}  # one per error (one is often shared)
        answers = self.answers
        for (check_id, _), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Decision):
                answers.append(pb.CheckStreamResponse(id=check_id, result=_response(outcome)))
            else:
                answer = errors.get(id(outcome))
                if answer is None:
                    answer = errors[id(outcome)] = _check_error(outcome)
                answers.append(_error(check_id, answer))
        self.ready.set()
        self.batch = None
        if self.waiting:
            self._next_batch()

    async def stop(self, reader: "asyncio.Task[None]") -> None:
        """End the reader and the batch in flight, if any: nothing outlives the stream."""
        tasks = [reader] if self.batch is None else [reader, self.batch]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _check_error(error: Exception) -> pb.CheckError:
    """A check's error as a unary Check's status would tell it (`rpc.errors.failure_of`)."""
    failure = failure_of(error, CHECK_STREAM)
    answer = pb.CheckError(
        code=failure.code, reason=failure.reason, message=failure.message, field=failure.field
    )
    if failure.retry_after is not None:
        answer.retry_after.FromTimedelta(failure.retry_after)
    return answer


def _error(check_id: int, error: pb.CheckError) -> pb.CheckStreamResponse:
    return pb.CheckStreamResponse(id=check_id, error=error)


def _policy(policy: pb.Policy, path: str = "") -> Policy:
    """An unset period reads as zero (refused by the limiter's checks)."""
    period = policy.period
    return _policy_of(
        policy.algorithm, policy.limit, period.seconds, period.nanos, policy.burst, path
    )


@functools.lru_cache(maxsize=4096)
def _policy_of(
    algorithm: int, limit: int, seconds: int, nanos: int, burst: int, path: str
) -> Policy:
    """Callers reuse a few policies: each is converted once (a valid one; an invalid one
    raises every time)."""
    return Policy(
        ALGORITHMS.get(algorithm),
        limit,
        to_timedelta(seconds, nanos, f"{path}policy.period"),
        burst,
    )


def _check(request: pb.CheckRequest, path: str = "") -> Check:
    """`path` is where the check sits in the request (`checks[3].`), for errors."""
    return Check(request.key, _policy(request.policy, path), request.cost, request.peek)


def _response(decision: Decision) -> pb.CheckResponse:
    response = pb.CheckResponse(
        allowed=decision.allowed, limit=decision.limit, remaining=decision.remaining
    )
    set_duration_us(response.reset_after, decision.reset_after_us)
    set_duration_us(response.retry_after, decision.retry_after_us)
    return response


def build(runtime: Runtime) -> Service:
    """RateLimiter, failing open or closed as configured."""
    fail_open = runtime.settings.ratelimit_failure_mode == "open"
    servicer = RateLimiterServicer(RateLimiter(runtime.redis, fail_open=fail_open))
    descriptor = pb.DESCRIPTOR.services_by_name["RateLimiter"]
    return Service(servicer, descriptor)
