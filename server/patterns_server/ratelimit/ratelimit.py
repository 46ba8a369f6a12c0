"""Rate limiting over Redis: five algorithms, decided by one Lua script on the Redis clock.

Every decision is one script run (`lua/`), so concurrent callers can never both take the
last unit, and time comes from Redis `TIME`, so any number of server replicas agree. The
state of a key lives under a name that includes the policy, so two policies on one key
never collide, and it expires as soon as it carries no information.
"""

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from datetime import timedelta
from typing import NamedTuple, TypeVar

from patterns_server.core.errors import InvalidArgument, PatternError, Unavailable
from patterns_server.core.telemetry import record
from patterns_server.core.units import MICROSECOND, from_us, length, seconds_text, span
from patterns_server.core.validation import check_name
from patterns_server.storage import Command, LuaScript, RedisBackend

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_LIMIT = 1_000_000_000_000
MIN_PERIOD = timedelta(milliseconds=1)
MAX_PERIOD = timedelta(days=366)
MAX_PERIOD_US = MAX_PERIOD // MICROSECOND
# The sliding log keeps an entry per admission for a period: its limit bounds its memory.
MAX_LOG_LIMIT = 100_000
MAX_CHECKS = 1_000
# Checks decided by one script run: its worst case (every check a long sliding log that
# refuses, ~70 µs each) stays within a few milliseconds, during which Redis serves no one.
CHECKS_PER_SCRIPT = 50
# All or nothing decides every check in one script run: at most one run's worth.
MAX_CHECKS_ALL_OR_NOTHING = CHECKS_PER_SCRIPT
FAIL_OPEN_REPORT_SECONDS = 10.0

CHECK = LuaScript.load(
    __file__,
    "fixed_window",
    "sliding_window_log",
    "sliding_window_counter",
    "token_bucket",
    "gcra",
    "check",
    clock=True,
)


class Algorithm(enum.Enum):
    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW_LOG = "sliding_log"  # the name of its state's format (see the .lua)
    SLIDING_WINDOW_COUNTER = "sliding_window_counter"
    TOKEN_BUCKET = "token_bucket"
    GCRA = "gcra"

    @property
    def is_bucket(self) -> bool:
        """Buckets have a capacity (`burst`) apart from their rate."""
        return self in (Algorithm.TOKEN_BUCKET, Algorithm.GCRA)


# Each algorithm as metrics name it: its name in the contract, in lower case.
LABELS: dict[object, str] = {algorithm.value: algorithm.name.lower() for algorithm in Algorithm}


class Policy(NamedTuple):
    """`limit` units per `period`, counted by `algorithm`; `burst` is a bucket's capacity
    (0 means `limit`). `algorithm` None stands for a request that named none."""

    algorithm: Algorithm | None
    limit: int
    period: timedelta
    burst: int = 0


class Check(NamedTuple):
    """Does `key` get `cost` units under `policy`? `peek` answers without consuming."""

    key: str
    policy: Policy
    cost: int = 1
    peek: bool = False


class Decision(NamedTuple):
    """A check's answer. Its times are whole microseconds (`reset_after`/`retry_after`
    give them as timedelta): decisions are the hottest path of the server, and building
    two timedeltas each would cost a CheckMany of 100 about a twentieth of its time."""

    allowed: bool
    limit: int
    remaining: int
    reset_after_us: int
    retry_after_us: int

    @property
    def reset_after(self) -> timedelta:
        return from_us(self.reset_after_us)

    @property
    def retry_after(self) -> timedelta:
        return from_us(self.retry_after_us)


# A place in `check_each`'s outcomes until the round trip fills it.
_UNDECIDED = Decision(False, 0, 0, 0, 0)


class _Terms(NamedTuple):
    """What a valid policy means for the script: its capacity, the parts of its state's
    key, and its script arguments."""

    capacity: int
    key_parts: tuple[str, ...]
    args: tuple[str | int, ...]


class _Plan(NamedTuple):
    """A validated check, ready for the script."""

    capacity: int
    cost: int
    key: str
    args: list[str | int]


class RateLimiter:
    """Decisions over Redis. With `fail_open`, a check that Redis cannot decide (down,
    or slower than the `within` seconds the caller can wait) is admitted."""

    def __init__(
        self, redis: RedisBackend, fail_open: bool = False, pattern: str = "ratelimit"
    ) -> None:
        """`pattern` names the keys' part after the namespace: callers that must never share
        state with RateLimiter's (Envoy's rate limit service) take their own."""
        self._redis = redis
        self._key = redis.keys(pattern)
        self._fail_open = fail_open
        self._failed_open = 0
        self._failed_open_reported = 0.0

    async def check(self, check: Check, within: float | None = None) -> Decision:
        plan = self._plan(check)
        try:
            reply = await self._decided_within(
                within, self._redis.eval(CHECK, [plan.key], ["0", *plan.args])
            )
        except Exception as error:
            return self._failed(error, [plan])[0]
        decision = _decisions([plan], reply)[0]
        allowed = decision.allowed
        record().decisions(LABELS[plan.args[0]], int(allowed), int(not allowed))
        return decision

    async def check_many(
        self, checks: Sequence[Check], all_or_nothing: bool, within: float | None = None
    ) -> list[Decision]:
        """Decide `checks` in one round trip (per Cluster node); in order."""
        check_many_count(len(checks), all_or_nothing)
        plans = [self._plan(check, f"checks[{i}]") for i, check in enumerate(checks)]
        if all_or_nothing:
            _check_one_group(checks, plans)
        groups = [plans] if all_or_nothing else self._script_groups(plans)
        return await self._decide(plans, groups, "1" if all_or_nothing else "0", within)

    async def check_each(
        self, checks: Sequence[Check], within: float | None = None
    ) -> list[Decision | PatternError]:
        """Decide `checks`, independent of one another, as `check_many` does (one round
        trip per Cluster node), except that each has its own outcome, in order: its
        decision, or the error of that check alone: an `InvalidArgument` for an invalid
        check; for a valid one, unless failing open, the error of its script run (on a
        Cluster, a node that cannot serve fails its own checks only). Any number of
        checks: they go by CHECKS_PER_SCRIPT per script run."""
        outcomes: list[Decision | PatternError] = []
        plans: list[_Plan] = []
        positions: list[int] = []
        for check in checks:
            try:
                plans.append(self._plan(check))
            except InvalidArgument as error:
                outcomes.append(error)
            else:
                positions.append(len(outcomes))
                outcomes.append(_UNDECIDED)
        if not plans:
            return outcomes
        groups = self._script_groups(plans)
        decided: dict[int, Decision | PatternError] = {}
        for group, reply in zip(groups, await self._replies(groups, "0", within), strict=True):
            if isinstance(reply, Exception):
                try:
                    decided.update(zip(map(id, group), self._failed(reply, group), strict=True))
                except PatternError as error:  # this group's node, this group's checks
                    decided.update((id(plan), error) for plan in group)
            else:
                decided.update(zip(map(id, group), _decisions(group, reply), strict=True))
        _record(plans, decided)
        for position, plan in zip(positions, plans, strict=True):
            outcomes[position] = decided[id(plan)]
        return outcomes

    async def _decide(
        self, plans: list[_Plan], groups: list[list[_Plan]], mode: str, within: float | None
    ) -> list[Decision]:
        """The decisions of `plans`, in order, each of `groups` decided by one script run
        (all of them in one round trip per node); if any fails, every one fails (or, failing
        open, is admitted)."""
        decided: dict[int, Decision] = {}
        for group, reply in zip(groups, await self._replies(groups, mode, within), strict=True):
            if isinstance(reply, Exception):
                return self._failed(reply, plans)
            decided.update(zip(map(id, group), _decisions(group, reply), strict=True))
        _record(plans, decided)
        return [decided[id(plan)] for plan in plans]

    async def _replies(
        self, groups: list[list[_Plan]], mode: str, within: float | None
    ) -> list[list[int] | Exception]:
        """The reply of each group's script run, or its error (all sent in one round trip
        per node); every one the error when the round trip as a whole fails (its time is
        up while failing open)."""
        try:
            return await self._decided_within(
                within, self._redis.run_settled(*(_command(mode, group) for group in groups))
            )
        except Exception as error:
            return [error] * len(groups)

    def _script_groups(self, plans: list[_Plan]) -> list[list[_Plan]]:
        """Checks that one script run can decide together: the same Cluster slot (all of
        them on standalone Redis), in request order, at most CHECKS_PER_SCRIPT each so
        that no run blocks Redis for long."""
        by_slot: dict[int | None, list[_Plan]] = {}
        for plan in plans:
            by_slot.setdefault(self._redis.slot(plan.key), []).append(plan)
        return [
            group[start : start + CHECKS_PER_SCRIPT]
            for group in by_slot.values()
            for start in range(0, len(group), CHECKS_PER_SCRIPT)
        ]

    async def reset(self, key: str, policy: Policy) -> None:
        """Forget what `key` consumed under `policy`."""
        plan = self._plan(Check(key, policy))
        await self._redis.call("DEL", plan.key)

    def _plan(self, check: Check, parent: str = "") -> _Plan:
        try:
            return self._validated_plan(check)
        except InvalidArgument as error:
            raise error.under(parent) if parent else error from None

    def _validated_plan(self, check: Check) -> _Plan:
        check_name("key", check.key)
        terms = _terms(check.policy)
        cost = check.cost or 1
        if cost > terms.capacity:
            raise InvalidArgument(
                "cost", f"exceeds what the policy can ever admit ({terms.capacity:,})"
            )
        key = self._key(check.key, *terms.key_parts)
        return _Plan(terms.capacity, cost, key, [*terms.args, cost, int(check.peek)])

    async def _decided_within(self, within: float | None, decision: Awaitable[T]) -> T:
        """`decision`, which in the fail-open mode may take `within` seconds at most: an
        answer the caller gets after its deadline would be no answer at all."""
        if not self._fail_open or within is None:
            return await decision
        try:
            async with asyncio.timeout(within):
                return await decision
        except TimeoutError:
            raise Unavailable(
                "Redis did not decide within the call's deadline", "REDIS_TIMEOUT"
            ) from None

    def _failed(self, error: Exception, plans: list[_Plan]) -> list[Decision]:
        """With the fail-open mode and Redis unavailable: admit all. Otherwise raise."""
        if not (self._fail_open and isinstance(error, Unavailable)):
            raise error
        self._failed_open += len(plans)
        record().failed_open(len(plans))
        now = time.monotonic()
        if now - self._failed_open_reported >= FAIL_OPEN_REPORT_SECONDS:
            logger.warning(
                "Redis unavailable (%s): admitted %d checks unchecked so far (failure mode open)",
                type(error).__name__,
                self._failed_open,
            )
            self._failed_open_reported = now
        return [Decision(True, plan.capacity, plan.capacity - plan.cost, 0, 0) for plan in plans]


def capacity(policy: Policy) -> int:
    """The most units `policy` ever admits at once (its `limit`, or a bucket's `burst`);
    InvalidArgument when a check could not use it."""
    return _terms(policy).capacity


@functools.lru_cache(maxsize=4096)
def _terms(policy: Policy) -> _Terms:
    """Validates `policy` (once per distinct policy: callers reuse a few)."""
    algorithm = policy.algorithm
    if algorithm is None:
        names = ", ".join(a.name for a in Algorithm)
        raise InvalidArgument("policy.algorithm", f"must be one of {names}")
    if not 1 <= policy.limit <= MAX_LIMIT:
        raise InvalidArgument("policy.limit", f"must be 1 to {MAX_LIMIT:,}")
    if algorithm is Algorithm.SLIDING_WINDOW_LOG and policy.limit > MAX_LOG_LIMIT:
        raise InvalidArgument(
            "policy.limit",
            f"must be at most {MAX_LOG_LIMIT:,} for SLIDING_WINDOW_LOG, which keeps an entry "
            "per admission (SLIDING_WINDOW_COUNTER approximates it in constant memory)",
        )
    if not MIN_PERIOD <= policy.period <= MAX_PERIOD:
        raise InvalidArgument(
            "policy.period",
            f"must be {span(MIN_PERIOD, MAX_PERIOD)}; got {seconds_text(policy.period)}",
        )
    period_us = policy.period // MICROSECOND
    if algorithm.is_bucket:
        if not 0 <= policy.burst <= MAX_LIMIT:
            raise InvalidArgument("policy.burst", f"must be 0 to {MAX_LIMIT:,}")
        if policy.limit > period_us:
            raise InvalidArgument(
                "policy.limit", "refills at most 1 unit per microsecond: raise the period"
            )
        if (policy.burst or policy.limit) * period_us > policy.limit * MAX_PERIOD_US:
            refill = from_us((policy.burst or policy.limit) * period_us // policy.limit)
            raise InvalidArgument(
                "policy.burst",
                f"must refill in at most {length(MAX_PERIOD)} (burst * period / limit); "
                f"got {seconds_text(refill)}",
            )
    elif policy.burst:
        raise InvalidArgument("policy.burst", "applies to TOKEN_BUCKET and GCRA only")
    capacity = policy.burst or policy.limit
    key_parts = (algorithm.value, str(policy.limit), str(period_us), str(capacity))
    return _Terms(capacity, key_parts, (algorithm.value, policy.limit, period_us, capacity))


def _check_one_group(checks: Sequence[Check], plans: list[_Plan]) -> None:
    """all_or_nothing needs one key (one atomic script) and no policy twice."""
    seen: dict[str, int] = {}
    for index, (check, plan) in enumerate(zip(checks, plans, strict=True)):
        if check.key != checks[0].key:
            raise InvalidArgument(
                f"checks[{index}].key", "must equal checks[0].key when all_or_nothing is set"
            )
        state = plan.key
        if state in seen:
            raise InvalidArgument(
                f"checks[{index}].policy", f"repeats checks[{seen[state]}].policy"
            )
        seen[state] = index


def check_many_count(count: int, all_or_nothing: bool) -> None:
    """A CheckMany's number of checks is within its limits (checked before anything else:
    an oversized request must cost nothing but its refusal)."""
    most = MAX_CHECKS_ALL_OR_NOTHING if all_or_nothing else MAX_CHECKS
    if not 1 <= count <= most:
        mode = " with all_or_nothing" if all_or_nothing else ""
        raise InvalidArgument("checks", f"must hold 1 to {most:,} entries{mode}, got {count:,}")


def _record(plans: list[_Plan], decided: Mapping[int, Decision | PatternError]) -> None:
    """Count the decisions of a batch of checks, by algorithm (one call per algorithm in
    it); a check that failed is none."""
    counts: dict[str, list[int]] = {}
    for plan in plans:
        outcome = decided[id(plan)]
        if not isinstance(outcome, Decision):
            continue
        allowed = outcome.allowed
        counts.setdefault(LABELS[plan.args[0]], [0, 0])[0 if allowed else 1] += 1
    for algorithm, (allowed_count, refused_count) in counts.items():
        record().decisions(algorithm, allowed_count, refused_count)


def _command(mode: str, plans: list[_Plan]) -> Command:
    keys = [plan.key for plan in plans]
    args = [arg for plan in plans for arg in plan.args]
    return Command.eval(CHECK, keys, [mode, *args])


def _decisions(plans: list[_Plan], reply: list[int]) -> list[Decision]:
    return [
        Decision(
            bool(reply[i * 4]), plan.capacity, reply[i * 4 + 1], reply[i * 4 + 2], reply[i * 4 + 3]
        )
        for i, plan in enumerate(plans)
    ]
