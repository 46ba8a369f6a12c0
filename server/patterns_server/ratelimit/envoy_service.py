"""Envoy's rate limit service, `envoy.service.ratelimit.v3.RateLimitService`: requests in,
the configured limits (`envoy_config`) decided by RateLimiter, responses out.

What envoyproxy/ratelimit's `src/service/ratelimit.go` does, decided by RateLimiter's
scripts on the Redis clock: every descriptor of a request is one check, all of them in one
round trip (per Cluster node), each consumed when it admits, whatever the others decide
(as envoyproxy/ratelimit counts each descriptor). Counters live under their own key
pattern, `envoy`, in the caller's namespace: RateLimiter's keys are never touched.
"""

import asyncio
import functools
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2 as pb
from envoy.service.ratelimit.v3 import rls_pb2_grpc

from patterns_server.core.errors import InvalidArgument, Unavailable
from patterns_server.ratelimit.envoy_config import (
    MAX_UINT32,
    UNIT_SECONDS,
    EnvoyConfig,
    EnvoyConfigSource,
    Limit,
)
from patterns_server.ratelimit.ratelimit import (
    MAX_CHECKS,
    Algorithm,
    Check,
    Decision,
    Policy,
    RateLimiter,
    capacity,
)
from patterns_server.rpc.convert import set_duration_us, time_left
from patterns_server.rpc.service import Runtime, Service

logger = logging.getLogger(__name__)

OK = pb.RateLimitResponse.OK
OVER_LIMIT = pb.RateLimitResponse.OVER_LIMIT
# Envoy's filter waits 20 ms by default: RateLimiter's usual 20 ms margin would leave it
# none. A sidecar's answer travels in far less than 2 ms.
MIN_DEADLINE_MARGIN = 0.002
# Counter names longer than this are hashed: RateLimiter's keys are at most 512 bytes.
MAX_COUNTER_NAME_BYTES = 480
HEADERS = {
    "ratelimit": ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"),
    "x-ratelimit": ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
}
# envoy.type.v3.RateLimitUnit (a descriptor's `limit` override) by number; its numbers are
# those of the response's Unit, which adds WEEK.
OVERRIDE_UNITS = {1: "SECOND", 2: "MINUTE", 3: "HOUR", 4: "DAY", 5: "MONTH", 6: "YEAR"}
CONFIG_CHECK_SECONDS = 2.0


class EnvoyRateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(
        self,
        limiter: RateLimiter,
        source: EnvoyConfigSource | None,
        headers: tuple[str, str, str] | None = None,
        fail_open: bool = False,
    ) -> None:
        self._limiter = limiter
        self._fail_open = fail_open
        self._source = source
        self._headers = headers

    @property
    def config(self) -> EnvoyConfig:
        return self._source.config if self._source is not None else EnvoyConfig()

    async def ShouldRateLimit(
        self, request: pb.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> pb.RateLimitResponse:
        if not request.domain:
            raise InvalidArgument("domain", "rate limit domain must not be empty")
        count = len(request.descriptors)
        if not 1 <= count <= MAX_CHECKS:
            raise InvalidArgument("descriptors", f"must hold 1 to {MAX_CHECKS:,} descriptors")
        limits = _limits(self.config, request)
        response = pb.RateLimitResponse()
        statuses = [response.statuses.add(code=OK) for _ in limits]  # filled in place
        checks: list[Check] = []
        checked: list[tuple[int, Limit, bool]] = []  # index, limit, beyond its capacity
        request_addend = request.hits_addend or 1
        for index, (descriptor, found) in enumerate(zip(request.descriptors, limits, strict=True)):
            if found is None:
                continue
            limit, counter = found
            status = statuses[index]
            if limit.unlimited:
                status.limit_remaining = MAX_UINT32
                continue
            status.current_limit.CopyFrom(_current_limit(limit))
            if limit.policy is None:  # requests_per_unit: 0, every request over it
                status.code = OK if limit.shadow_mode else OVER_LIMIT
                continue
            addend = request_addend
            peek = False
            if descriptor.HasField("hits_addend"):  # 0 here checks without counting
                addend = descriptor.hits_addend.value
                peek = addend == 0
            most = capacity(limit.policy)
            beyond = addend > most  # can never pass: asked as a peek, answered OVER_LIMIT
            cost = most if beyond else max(addend, 1)
            name = _counter_name(request.domain, counter)
            checks.append(Check(name, limit.policy, cost, peek or beyond))
            checked.append((index, limit, beyond))
        if checks:
            decisions = await self._decide(checks, context)
            for (index, limit, beyond), decision in zip(checked, decisions, strict=True):
                _fill(statuses[index], limit, decision, beyond)
        response.overall_code = OVER_LIMIT if any(s.code == OVER_LIMIT for s in statuses) else OK
        if self._headers is not None:
            response.response_headers_to_add.extend(_headers(self._headers, statuses))
        return response

    async def _decide(
        self, checks: list[Check], context: grpc.aio.ServicerContext
    ) -> list[Decision]:
        """The checks decided together (RateLimiter.check_many), within the caller's
        deadline: failing open, RateLimiter admits them when Redis has not answered by then;
        failing closed, the call fails UNAVAILABLE, so that Envoy applies its own failure
        mode (failure_mode_deny) at once rather than after its timeout."""
        within = time_left(context, MIN_DEADLINE_MARGIN)
        decision = (
            self._limiter.check_many(checks, all_or_nothing=False, within=within)
            if len(checks) > 1
            else self._single(checks[0], within)
        )
        if within is None or self._fail_open:
            return await decision
        try:
            async with asyncio.timeout(within):
                return await decision
        except TimeoutError:
            raise Unavailable(
                "Redis did not decide within the call's deadline", "REDIS_TIMEOUT"
            ) from None

    async def _single(self, check: Check, within: float | None) -> list[Decision]:
        """One descriptor: RateLimiter.check, a lighter path than check_many's."""
        return [await self._limiter.check(check, within)]


def _limits(
    config: EnvoyConfig, request: pb.RateLimitRequest
) -> list[tuple[Limit, tuple[tuple[str, str], ...]] | None]:
    """Each descriptor's limit and counter, or None: the configured limit it meets (or the
    override it carries, in a known domain), less the limits that another descriptor's
    limit `replaces` (by name)."""
    found: list[tuple[Limit, tuple[tuple[str, str], ...]] | None] = []
    replaced: set[str] = set()
    for index, descriptor in enumerate(request.descriptors):
        entries = tuple((entry.key, entry.value) for entry in descriptor.entries)
        if not entries:
            raise InvalidArgument(f"descriptors[{index}].entries", "must hold at least one entry")
        # An override without a unit (UNKNOWN, 0) overrides nothing.
        if descriptor.limit.unit and config.knows(request.domain):
            found.append((_override(descriptor.limit, index), entries))
            continue
        match = config.limit_for(request.domain, entries)
        if match is None:
            found.append(None)
            continue
        replaced.update(match.limit.replaces)
        found.append((match.limit, match.counter))
    return [
        None if item is not None and item[0].name and item[0].name in replaced else item
        for item in found
    ]


def _override(override: ratelimit_pb2.RateLimitDescriptor.RateLimitOverride, index: int) -> Limit:
    """The limit a descriptor carries (Envoy's `limit` override): a fixed window."""
    unit = OVERRIDE_UNITS.get(override.unit)
    if unit is None:
        raise InvalidArgument(f"descriptors[{index}].limit.unit", "must be SECOND to YEAR")
    requests = override.requests_per_unit
    if requests == 0:
        return Limit(0, unit)
    policy = Policy(Algorithm.FIXED_WINDOW, requests, _period(unit, 1))
    return Limit(requests, unit, policy=policy)


def _period(unit: str, multiplier: int) -> timedelta:
    return timedelta(seconds=UNIT_SECONDS[unit] * multiplier)


def _counter_name(domain: str, entries: Sequence[tuple[str, str]]) -> str:
    """The counter's name for RateLimiter: injective in (domain, entries) (JSON), hashed
    when long (a JSON name starts with `[`, a hashed one never does)."""
    name = json.dumps([domain, *entries], ensure_ascii=False, separators=(",", ":"))
    if len(name.encode()) > MAX_COUNTER_NAME_BYTES:
        return "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return name


@functools.lru_cache(maxsize=4096)
def _current_limit(limit: Limit) -> pb.RateLimitResponse.RateLimit:
    """Made once per limit (a configuration has few): each status copies it."""
    return pb.RateLimitResponse.RateLimit(
        name=limit.name,
        requests_per_unit=limit.requests_per_unit,
        unit=limit.unit,
    )


def _fill(
    status: pb.RateLimitResponse.DescriptorStatus, limit: Limit, decision: Decision, beyond: bool
) -> None:
    """A decided descriptor's status: over its limit, none remaining (as envoyproxy/ratelimit
    says); in shadow mode, over its limit yet OK."""
    over = beyond or not decision.allowed
    status.code = OK if limit.shadow_mode or not over else OVER_LIMIT
    status.limit_remaining = 0 if over else min(decision.remaining, MAX_UINT32)
    set_duration_us(status.duration_until_reset, decision.reset_after_us)


def _headers(
    names: tuple[str, str, str], statuses: Sequence[pb.RateLimitResponse.DescriptorStatus]
) -> list[base_pb2.HeaderValue]:
    """The limit, remaining and seconds to reset of the descriptor nearest its limit (the
    last one over it, if any): envoyproxy/ratelimit's choice."""
    nearest = None
    least = MAX_UINT32
    for status in statuses:
        if status.HasField("current_limit") and status.limit_remaining < least:
            nearest, least = status, status.limit_remaining
        if status.code == OVER_LIMIT:
            nearest, least = status, 0
    if nearest is None:
        return []
    reset = nearest.duration_until_reset
    values = (
        nearest.current_limit.requests_per_unit,
        nearest.limit_remaining,
        math.ceil(reset.seconds + reset.nanos / 1e9),
    )
    return [
        base_pb2.HeaderValue(key=name, value=str(value))
        for name, value in zip(names, values, strict=True)
    ]


class EnvoyRateLimitService(Service):
    """With a configuration, watches its files for changes while serving."""

    def __init__(self, servicer: EnvoyRateLimitServicer, source: EnvoyConfigSource | None):
        super().__init__(servicer, pb.DESCRIPTOR.services_by_name["RateLimitService"])
        self._source = source
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._source is not None:
            self._watch = asyncio.create_task(self._source.watch(CONFIG_CHECK_SECONDS))

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    def reload(self) -> None:
        if self._source is not None:
            self._source.reload()


def build(runtime: Runtime) -> Service:
    """The service, its configuration read now (EnvoyConfigError: the server does not
    start), failing open or closed as RateLimiter does."""
    settings = runtime.settings
    source = None
    if settings.envoy_config:
        source = EnvoyConfigSource(Path(settings.envoy_config))
        config = source.load()
        logger.info(
            "Envoy rate limit config %s: %d files, domains %s",
            settings.envoy_config,
            config.files,
            ", ".join(config.domains) or "none",
        )
    fail_open = settings.ratelimit_failure_mode == "open"
    limiter = RateLimiter(runtime.redis, fail_open=fail_open, pattern="envoy")
    headers = HEADERS.get(settings.envoy_response_headers)
    servicer = EnvoyRateLimitServicer(limiter, source, headers, fail_open)
    return EnvoyRateLimitService(servicer, source)
