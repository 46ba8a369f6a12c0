"""Locks as leases over Redis: one holder per name, a fencing token, waiting without polling.

A lock is one key holding "<token>:<fencing token>" that expires with the lease; granting
it and taking the next fencing token of its name are one script, so tokens strictly grow
with every grant, across expiries and restarts (the counter never expires: one small key
per name ever locked). A token is max(last + 1, the Redis clock in µs): should Redis lose
the counter, the next token starts again above every earlier one, unless the Redis clock
has gone back. Release and extend check the token in the same script that acts.

Waiting: the callers of one server that wait for one lock stand in line, in arrival
order, and only the first of them is awake. It subscribes, through the backend's shared
Pub/Sub connection, to the lock's channel, on which every release and forced release
publishes; it tries again when woken, and otherwise when the holder's lease would run out
(expiry publishes nothing), and at least every 2 s in case a wake-up was lost
(`storage.wakeups`).
Once it has the lock, or gives up, the next in line takes its place. So a release costs
one attempt per server with waiters, not one per waiter; across servers, the first to try
wins.

A caller that goes away (client gone, deadline passed, shutdown) while its attempt is in
Redis may be granted the lock as it leaves: the lock is then released at once
(`leases.granted_or_given_back`), not left held for its ttl. At shutdown, a waiting caller
is answered at once with the shutdown's error (`wakeups.Waits`).
"""

import asyncio
import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from patterns_server.core.errors import Aborted, Unavailable
from patterns_server.core.telemetry import record
from patterns_server.core.units import instant_us
from patterns_server.core.validation import check_name, checked_ms
from patterns_server.storage import LuaScript, RedisBackend
from patterns_server.storage.leases import (
    Lease,
    check_token,
    deadline_after,
    granted,
    granted_or_given_back,
    new_token,
)
from patterns_server.storage.wakeups import until_woken

MIN_TTL = timedelta(milliseconds=1)
MAX_TTL = timedelta(days=1)
MIN_HOLD_TTL = timedelta(milliseconds=100)  # a Hold renews every ttl/3
MAX_WAIT = timedelta(days=1)

ACQUIRE = LuaScript.load(__file__, "acquire", lease=True)
RELEASE = LuaScript.load(__file__, "release", lease=True)
EXTEND = LuaScript.load(__file__, "extend", lease=True)
INSPECT = LuaScript.load(__file__, "inspect", lease=True)
FORCE_RELEASE = LuaScript.load(__file__, "force_release", lease=True)


class ReleaseStatus(enum.Enum):
    """Release's reply (release.lua)."""

    RELEASED = 1
    NOT_HELD = 2
    HELD_BY_OTHER = 3


@dataclass
class _Line:
    """The callers of this server waiting for one lock: `turn` lets them through one at a
    time, first come first served (asyncio's Lock is fair)."""

    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


@dataclass(frozen=True)
class LockState:
    """What Inspect shows: whether a lock is held, its fencing token, its time left."""

    held: bool
    fencing_token: int
    ttl_remaining: timedelta


class Locker:
    def __init__(self, redis: RedisBackend) -> None:
        self._redis = redis
        self._keys = redis.keys("lock")
        self._lines: dict[str, _Line] = {}  # by the lock's key: tenants share names

    async def acquire(
        self,
        name: str,
        ttl: timedelta | None,
        wait: timedelta | None = None,
        time_left: float | None = None,
        ttl_floor: timedelta = MIN_TTL,
    ) -> Lease | None:
        """Take the lock `name` for `ttl`, waiting up to `wait` (and `time_left` seconds,
        what the caller's deadline leaves) for it to be free: its lease (whose number is
        the fencing token), or None when another holds it."""
        check_name("name", name)
        ttl_ms = checked_ms("ttl", ttl, ttl_floor, MAX_TTL, required=True)
        wait_ms = checked_ms("wait_timeout", wait, timedelta(0), MAX_WAIT)
        token = new_token()
        lease, _ = await self._try(name, token, ttl_ms)
        if lease is not None:
            record().lock_granted(waited=False)
        if lease is not None or wait_ms == 0:
            return lease
        record().lock_wait()
        deadline = deadline_after(timedelta(milliseconds=wait_ms), time_left)
        return await self._wait(name, token, ttl_ms, deadline)

    async def release(self, name: str, token: str) -> ReleaseStatus:
        """Give up `name` if `token` holds it; never touches anyone else's lease."""
        check_name("name", name)
        check_token("token", token)
        status = await self._redis.eval(RELEASE, [self._keys(name)], [token, self._wakeups(name)])
        return ReleaseStatus(status)

    async def extend(self, name: str, token: str, ttl: timedelta | None) -> datetime | None:
        """Renew `token`'s lease on `name` to `ttl` from now: its new end, or None when
        `token` no longer holds the lock."""
        check_name("name", name)
        check_token("token", token)
        ttl_ms = checked_ms("ttl", ttl, MIN_TTL, MAX_TTL, required=True)
        extended, ends_us = await self._redis.eval(EXTEND, [self._keys(name)], [token, ttl_ms])
        return instant_us(int(ends_us)) if extended else None

    async def keep(self, name: str, token: str, ttl: timedelta) -> None:
        """Renew `token`'s lease every ttl/3 until cancelled; raises `Aborted` (LEASE_LOST) once
        it is gone: taken away, or expired while Redis could not be reached."""
        loop = asyncio.get_running_loop()
        interval = ttl.total_seconds() / 3
        ends_at = loop.time() + ttl.total_seconds()  # as far as this server knows
        while True:
            await asyncio.sleep(interval)
            try:
                extended = await self.extend(name, token, ttl)
            except Unavailable:
                if loop.time() >= ends_at:
                    raise Aborted(
                        "the lease ran out while Redis could not be reached", "LEASE_LOST"
                    ) from None
                continue  # try again at the next interval, while the lease may last
            if extended is None:
                raise Aborted("the lease was lost (expired or force-released)", "LEASE_LOST")
            ends_at = loop.time() + ttl.total_seconds()

    async def inspect(self, name: str) -> LockState:
        check_name("name", name)
        held, fencing_token, left_ms = await self._redis.eval(INSPECT, [self._keys(name)], [])
        return LockState(bool(held), int(fencing_token), timedelta(milliseconds=max(0, left_ms)))

    async def force_release(self, name: str) -> bool:
        """End whoever's lease on `name`; whether there was one."""
        check_name("name", name)
        released = await self._redis.eval(FORCE_RELEASE, [self._keys(name)], [self._wakeups(name)])
        return bool(released)

    async def _try(self, name: str, token: str, ttl_ms: int) -> tuple[Lease | None, int]:
        """One attempt: the lease, or None and the ms left of the holder's lease. A lease
        granted to a caller gone meanwhile is released (`granted_or_given_back`)."""

        async def attempt() -> tuple[Lease | None, int]:
            keys = [self._keys(name), self._keys(name, "fence")]
            was_granted, fencing_token, value = await self._redis.eval(
                ACQUIRE, keys, [token, ttl_ms]
            )
            if was_granted:
                return granted(token, fencing_token, value), 0
            return None, int(value)

        async def give_back(lease: Lease) -> None:
            await self.release(name, lease.token)

        return await granted_or_given_back(attempt(), lambda reply: reply[0], give_back)

    async def _wait(self, name: str, token: str, ttl_ms: int, deadline: float) -> Lease | None:
        loop = asyncio.get_running_loop()
        lock = self._keys(name)
        line = self._lines.setdefault(lock, _Line())
        line.waiting += 1
        try:
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    await line.turn.acquire()
            except TimeoutError:
                return None
            try:
                lease = await self._wait_first_in_line(name, token, ttl_ms, deadline)
            finally:
                line.turn.release()
            if lease is not None:
                record().lock_granted(waited=True)
            return lease
        finally:
            line.waiting -= 1
            if not line.waiting:
                del self._lines[lock]

    async def _wait_first_in_line(
        self, name: str, token: str, ttl_ms: int, deadline: float
    ) -> Lease | None:
        """Try whenever the lock may be free (released, or the holder's lease run out),
        until `deadline` (loop time)."""

        async def attempt() -> tuple[Lease | None, int | None]:
            lease, holder_left_ms = await self._try(name, token, ttl_ms)
            return lease, None if lease is not None else holder_left_ms

        return await until_woken(self._redis, self._wakeups(name), attempt, deadline)

    def _wakeups(self, name: str) -> bytes:
        return self._keys.channel(name)
