"""The RateLimiter gRPC servicer: request messages in, RateLimiter calls, responses out."""

import functools

import grpc
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from patterns_server.config import Settings
from patterns_server.proto_types import to_timedelta
from patterns_server.ratelimit.limiter import Algorithm, Check, Decision, Policy, RateLimiter
from patterns_server.redis import RedisBackend
from patterns_server.rpc_errors import guard

ALGORITHMS: dict[int, Algorithm] = {
    pb.ALGORITHM_FIXED_WINDOW: Algorithm.FIXED_WINDOW,
    pb.ALGORITHM_SLIDING_WINDOW_LOG: Algorithm.SLIDING_WINDOW_LOG,
    pb.ALGORITHM_SLIDING_WINDOW_COUNTER: Algorithm.SLIDING_WINDOW_COUNTER,
    pb.ALGORITHM_TOKEN_BUCKET: Algorithm.TOKEN_BUCKET,
    pb.ALGORITHM_GCRA: Algorithm.GCRA,
}


class RateLimiterService(ratelimit_pb2_grpc.RateLimiterServicer):
    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def Check(
        self, request: pb.CheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckResponse:
        return _response(await self._limiter.check(_check(request)))

    async def CheckMany(
        self, request: pb.CheckManyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckManyResponse:
        checks = [_check(check) for check in request.checks]
        decisions = await self._limiter.check_many(checks, request.all_or_nothing)
        return pb.CheckManyResponse(
            results=[_response(decision) for decision in decisions],
            allowed=all(decision.allowed for decision in decisions),
        )

    async def Reset(
        self, request: pb.ResetRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetResponse:
        await self._limiter.reset(request.key, _policy(request.policy))
        return pb.ResetResponse()


def _policy(policy: pb.Policy) -> Policy:
    period = policy.period
    return _cached_policy(
        policy.algorithm, policy.limit, period.seconds, period.nanos, policy.burst
    )


@functools.lru_cache(maxsize=4096)
def _cached_policy(algorithm: int, limit: int, seconds: int, nanos: int, burst: int) -> Policy:
    """Callers reuse a few policies: convert each once. An unset period reads as zero."""
    return Policy(ALGORITHMS.get(algorithm), limit, to_timedelta(seconds, nanos), burst)


def _check(request: pb.CheckRequest) -> Check:
    return Check(request.key, _policy(request.policy), request.cost, request.peek)


def _response(decision: Decision) -> pb.CheckResponse:
    response = pb.CheckResponse(
        allowed=decision.allowed, limit=decision.limit, remaining=decision.remaining
    )
    # Setting the durations' fields in place is twice as fast as building Duration messages.
    response.reset_after.seconds, microseconds = divmod(decision.reset_after_us, 1_000_000)
    response.reset_after.nanos = microseconds * 1000
    response.retry_after.seconds, microseconds = divmod(decision.retry_after_us, 1_000_000)
    response.retry_after.nanos = microseconds * 1000
    return response


def register(server: grpc.aio.Server, redis: RedisBackend, settings: Settings) -> str:
    """Serve RateLimiter on `server`; returns the service's full name."""
    service = pb.DESCRIPTOR.services_by_name["RateLimiter"]
    limiter = RateLimiter(redis, fail_open=settings.ratelimit_failure_mode == "open")
    servicer = guard(RateLimiterService(limiter), service)
    ratelimit_pb2_grpc.add_RateLimiterServicer_to_server(servicer, server)
    return str(service.full_name)
