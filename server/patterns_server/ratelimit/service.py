"""The RateLimiter gRPC servicer: request messages in, RateLimiter calls, responses out."""

import functools

import grpc
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from patterns_server.ratelimit.ratelimit import (
    Algorithm,
    Check,
    Decision,
    Policy,
    RateLimiter,
    check_many_count,
)
from patterns_server.rpc.convert import set_duration_us, time_left, to_timedelta
from patterns_server.rpc.service import Runtime, Service

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

    async def Reset(
        self, request: pb.ResetRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetResponse:
        await self._limiter.reset(request.key, _policy(request.policy))
        return pb.ResetResponse()


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
