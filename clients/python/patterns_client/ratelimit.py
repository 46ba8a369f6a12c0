"""RateLimiter: checks against policies, and a decorator that refuses calls beyond them."""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from patterns_client._calls import FALLBACK_AFTER, AsyncCalls, Calls
from patterns_client._check_stream import CheckStream
from patterns_client._check_stream_aio import AsyncCheckStream
from patterns_client._convert import duration, seconds
from patterns_client.errors import PatternsError, RateLimited, falls_back

__all__ = ["Algorithm", "AsyncRateLimiter", "Decision", "OnUnavailable", "Policy", "RateLimiter"]

F = TypeVar("F", bound=Callable[..., Any])
# What a check answers when the server cannot answer in time (it or its Redis unavailable,
# paused or overloaded, or no connection): raise the error, admit ("allow", failing open),
# or refuse ("deny", failing closed).
OnUnavailable = Literal["raise", "allow", "deny"]


class Algorithm(enum.Enum):
    """How units are counted over time (see the contract for each one's trade-offs)."""

    FIXED_WINDOW = pb.ALGORITHM_FIXED_WINDOW
    SLIDING_WINDOW_LOG = pb.ALGORITHM_SLIDING_WINDOW_LOG
    SLIDING_WINDOW_COUNTER = pb.ALGORITHM_SLIDING_WINDOW_COUNTER
    TOKEN_BUCKET = pb.ALGORITHM_TOKEN_BUCKET
    GCRA = pb.ALGORITHM_GCRA


@dataclass(frozen=True)
class Policy:
    """`limit` units per `period`, counted by `algorithm`; `burst` (buckets only) is the
    most admitted at once after a quiet spell (0: `limit`)."""

    algorithm: Algorithm
    limit: int
    period: timedelta
    burst: int = 0

    @classmethod
    def fixed_window(cls, limit: int, period: timedelta) -> Policy:
        """Windows aligned on the clock; cheapest; up to 2x `limit` around a boundary."""
        return cls(Algorithm.FIXED_WINDOW, limit, period)

    @classmethod
    def sliding_window_log(cls, limit: int, period: timedelta) -> Policy:
        """Exact: at most `limit` in any `period` (limit at most 100,000)."""
        return cls(Algorithm.SLIDING_WINDOW_LOG, limit, period)

    @classmethod
    def sliding_window_counter(cls, limit: int, period: timedelta) -> Policy:
        """Approximate rolling window in constant memory."""
        return cls(Algorithm.SLIDING_WINDOW_COUNTER, limit, period)

    @classmethod
    def token_bucket(cls, limit: int, period: timedelta, burst: int = 0) -> Policy:
        """A bucket of `burst` tokens refilled at `limit` per `period`."""
        return cls(Algorithm.TOKEN_BUCKET, limit, period, burst)

    @classmethod
    def gcra(cls, limit: int, period: timedelta, burst: int = 0) -> Policy:
        """The token bucket's decisions, stored as one timestamp per key."""
        return cls(Algorithm.GCRA, limit, period, burst)

    def message(self) -> pb.Policy:
        """The policy as the contract's message."""
        return pb.Policy(
            algorithm=self.algorithm.value,
            limit=self.limit,
            period=duration(self.period),
            burst=self.burst,
        )


def whole_seconds(length: timedelta) -> int:
    """`length` in whole seconds, rounded up (exactly: no float on the way)."""
    return -(-length // _SECOND)


_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Decision:
    """A check's answer. `limit` is the policy's capacity, `remaining` what is left of it,
    `reset_after` the time until it is whole again, `retry_after` (zero when allowed) the
    wait until the same cost would be admitted. `policy` is the policy checked (None for a
    Decision made by hand). `fallback` is True when it was not Redis's but the client's
    `on_unavailable` choice, the server having no answer within `fallback_after`: then
    `limit` is the policy's capacity (`burst`, or `limit`) and `remaining` is capacity -
    cost when admitted (as the server's own fail-open mode answers), 0 when refused.

    `headers()` gives the HTTP headers of the answer, so a 429 is one line::

        decision = await client.ratelimit.check(f"ip:{ip}", policy)
        if not decision.allowed:
            return Response("slow down", 429, headers=decision.headers())
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: timedelta
    retry_after: timedelta
    fallback: bool = False
    policy: Policy | None = None

    @property
    def retry_after_seconds(self) -> int:
        """`retry_after` in whole seconds, rounded up, at least 1 when refused (0 when
        allowed): what HTTP's `Retry-After` takes."""
        if self.allowed:
            return 0
        return max(1, whole_seconds(self.retry_after))

    @property
    def reset_seconds(self) -> int:
        """`reset_after` in whole seconds, rounded up, at least 1 when refused."""
        reset = whole_seconds(self.reset_after)
        return reset if self.allowed else max(1, reset, self.retry_after_seconds)

    def headers(self) -> dict[str, str]:
        """The IETF rate-limit headers of this answer (draft-ietf-httpapi-ratelimit-headers):
        `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds, rounded up),
        `RateLimit-Policy` (`<limit>;w=<period in seconds>`, with `;burst=<burst>` for a
        bucket that has one; only when `policy` is known) and, when refused, `Retry-After`
        (seconds, rounded up, never 0)."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if self.policy is not None:
            policy = f"{self.policy.limit};w={whole_seconds(self.policy.period)}"
            if self.policy.burst:
                policy += f";burst={self.policy.burst}"
            headers["RateLimit-Policy"] = policy
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


def _check_request(key: str, policy: Policy, cost: int, peek: bool) -> pb.CheckRequest:
    return pb.CheckRequest(key=key, policy=policy.message(), cost=cost, peek=peek)


def _decision(response: pb.CheckResponse, policy: Policy) -> Decision:
    return Decision(
        response.allowed,
        response.limit,
        response.remaining,
        response.reset_after.ToTimedelta(),
        response.retry_after.ToTimedelta(),
        policy=policy,
    )


def _check_many_request(
    checks: Sequence[tuple[str, Policy]], all_or_nothing: bool
) -> pb.CheckManyRequest:
    return pb.CheckManyRequest(
        checks=[_check_request(key, policy, 1, False) for key, policy in checks],
        all_or_nothing=all_or_nothing,
    )


def _decisions(
    response: pb.CheckManyResponse, checks: Sequence[tuple[str, Policy]]
) -> tuple[bool, list[Decision]]:
    decisions = [
        _decision(result, policy)
        for result, (_, policy) in zip(response.results, checks, strict=True)
    ]
    return response.allowed, decisions


def _fallback(
    policy: Policy, cost: int, error: PatternsError, on_unavailable: OnUnavailable
) -> Decision:
    """The decision `on_unavailable` makes when the check failed with `error`; `error`
    itself when no fallback covers it (errors.falls_back) or the caller chose "raise"."""
    if on_unavailable == "raise" or not falls_back(error):
        raise error
    allowed = on_unavailable == "allow"
    capacity = policy.burst or policy.limit
    wait = error.retry_after or timedelta(seconds=1)
    return Decision(
        allowed,
        capacity,
        max(capacity - cost, 0) if allowed else 0,
        timedelta(0) if allowed else wait,
        timedelta(0) if allowed else wait,
        fallback=True,
        policy=policy,
    )


class RateLimiter:
    """`client.ratelimit` of the blocking client. With `check_stream` (the client's
    `stream_checks`, on by default), `check` sends its checks over that one shared
    CheckStream rather than a unary Check each: the same answers, for less of the
    server's time."""

    def __init__(
        self,
        calls: Calls,
        stub: ratelimit_pb2_grpc.RateLimiterStub,
        check_stream: CheckStream | None = None,
    ) -> None:
        self._calls = calls
        self._stub = stub
        self._check_stream = check_stream

    def _decide(self, request: pb.CheckRequest, timeout: float) -> pb.CheckResponse:
        """`request`'s answer within `timeout` seconds, over the stream or unary."""
        if self._check_stream is not None:
            return self._check_stream.check(request, timeout)
        response: pb.CheckResponse = self._calls.unary(self._stub.Check, request, timeout=timeout)
        return response

    def check(
        self,
        key: str,
        policy: Policy,
        *,
        cost: int = 1,
        peek: bool = False,
        on_unavailable: OnUnavailable = "raise",
        fallback_after: timedelta = FALLBACK_AFTER,
    ) -> Decision:
        """Whether `cost` units for `key` are admitted under `policy` (consumed if so).

        With `on_unavailable="raise"` (the default) a failure raises, after the client's
        timeout at most. With "allow" or "deny" the check waits `fallback_after` (200 ms)
        at most, and when the server has not answered by then, or answered that it or
        its Redis is unavailable or that it is overloaded (errors.falls_back), the
        decision is the client's own (`fallback=True`): admitted, or refused for the
        error's `retry_after` (else a second). Other errors (a wrong argument or API key)
        raise whatever `on_unavailable` says."""
        request = _check_request(key, policy, cost, peek)
        if on_unavailable == "raise":
            return _decision(self._decide(request, self._calls.timeout), policy)
        try:
            response = self._decide(request, seconds(fallback_after))
        except PatternsError as error:
            return _fallback(policy, cost, error, on_unavailable)
        return _decision(response, policy)

    def check_many(
        self,
        checks: Sequence[tuple[str, Policy]],
        *,
        all_or_nothing: bool = False,
    ) -> tuple[bool, list[Decision]]:
        """Several (key, policy) checks of cost 1 at once: whether all were admitted, and
        each decision in order. With `all_or_nothing` nothing is consumed unless all are."""
        request = _check_many_request(checks, all_or_nothing)
        return _decisions(self._calls.unary(self._stub.CheckMany, request), checks)

    def reset(self, key: str, policy: Policy) -> None:
        """Forget what `key` has consumed under `policy`."""
        self._calls.unary(self._stub.Reset, pb.ResetRequest(key=key, policy=policy.message()))

    def limited(
        self,
        *,
        key: Callable[..., str],
        policy: Policy,
        cost: int = 1,
        on_unavailable: OnUnavailable = "allow",
        fallback_after: timedelta = FALLBACK_AFTER,
    ) -> Callable[[F], F]:
        """A decorator: each call of the function is checked first, under the key that
        `key(*args, **kwargs)` names, and raises RateLimited (carrying the Decision) when refused.

        When the server has no answer within `fallback_after` (200 ms), or answers that
        it or its Redis is unavailable or that it is overloaded, calls pass by default
        (`on_unavailable="allow"`: an outage of the limiter is not an outage of what it
        protects; `check` raises by default instead, as a plain call that the caller
        handles); "deny" refuses them with RateLimited, "raise" raises the error."""

        def decorate(function: F) -> F:
            @functools.wraps(function)
            def limited_call(*args: Any, **kwargs: Any) -> Any:
                name = key(*args, **kwargs)
                decision = self.check(
                    name,
                    policy,
                    cost=cost,
                    on_unavailable=on_unavailable,
                    fallback_after=fallback_after,
                )
                if not decision.allowed:
                    raise RateLimited(name, decision)
                return function(*args, **kwargs)

            return limited_call  # type: ignore[return-value]

        return decorate


class AsyncRateLimiter:
    """`client.ratelimit` of the asyncio client: RateLimiter's methods as coroutines, and
    its `check_stream` (one shared CheckStream per event loop) likewise."""

    def __init__(
        self,
        calls: AsyncCalls,
        stub: ratelimit_pb2_grpc.RateLimiterStub,
        check_stream: AsyncCheckStream | None = None,
    ) -> None:
        self._calls = calls
        self._stub = stub
        self._check_stream = check_stream

    async def _decide(self, request: pb.CheckRequest, timeout: float) -> pb.CheckResponse:
        """`request`'s answer within `timeout` seconds, over the stream or unary."""
        if self._check_stream is not None:
            return await self._check_stream.check(request, timeout)
        response: pb.CheckResponse = await self._calls.unary(
            self._stub.Check, request, timeout=timeout
        )
        return response

    async def check(
        self,
        key: str,
        policy: Policy,
        *,
        cost: int = 1,
        peek: bool = False,
        on_unavailable: OnUnavailable = "raise",
        fallback_after: timedelta = FALLBACK_AFTER,
    ) -> Decision:
        """Whether `cost` units for `key` are admitted under `policy` (consumed if so).
        `on_unavailable` and `fallback_after` decide what a check answers when the server
        cannot answer in time, exactly as for RateLimiter.check: "raise" (the default)
        raises; "allow" or "deny" waits `fallback_after` (200 ms) at most, then admits or
        refuses on its own (`fallback=True`)."""
        request = _check_request(key, policy, cost, peek)
        if on_unavailable == "raise":
            return _decision(await self._decide(request, self._calls.timeout), policy)
        try:
            response = await self._decide(request, seconds(fallback_after))
        except PatternsError as error:
            return _fallback(policy, cost, error, on_unavailable)
        return _decision(response, policy)

    async def check_many(
        self,
        checks: Sequence[tuple[str, Policy]],
        *,
        all_or_nothing: bool = False,
    ) -> tuple[bool, list[Decision]]:
        """Several (key, policy) checks of cost 1 at once: whether all were admitted, and
        each decision in order. With `all_or_nothing` nothing is consumed unless all are."""
        request = _check_many_request(checks, all_or_nothing)
        return _decisions(await self._calls.unary(self._stub.CheckMany, request), checks)

    async def reset(self, key: str, policy: Policy) -> None:
        """Forget what `key` has consumed under `policy`."""
        await self._calls.unary(self._stub.Reset, pb.ResetRequest(key=key, policy=policy.message()))

    def limited(
        self,
        *,
        key: Callable[..., str],
        policy: Policy,
        cost: int = 1,
        on_unavailable: OnUnavailable = "allow",
        fallback_after: timedelta = FALLBACK_AFTER,
    ) -> Callable[[F], F]:
        """A decorator for a coroutine function: each call is checked first, under the
        key that `key(*args, **kwargs)` names, and raises RateLimited when refused. When
        the server cannot answer within `fallback_after` (200 ms), calls pass by default
        (`on_unavailable="allow"`), as RateLimiter.limited explains; "deny" refuses them,
        "raise" raises the error."""

        def decorate(function: F) -> F:
            @functools.wraps(function)
            async def limited_call(*args: Any, **kwargs: Any) -> Any:
                name = key(*args, **kwargs)
                decision = await self.check(
                    name,
                    policy,
                    cost=cost,
                    on_unavailable=on_unavailable,
                    fallback_after=fallback_after,
                )
                if not decision.allowed:
                    raise RateLimited(name, decision)
                result: Awaitable[Any] = function(*args, **kwargs)
                return await result

            return limited_call  # type: ignore[return-value]

        return decorate
