"""Leases: the right to something for a while (a lock, the fill of a cache entry), held by
whoever has its token, given back by its holder or ended by expiry, and waited for without
polling.

A lease is one key holding "<token>:<number>" that expires when the lease ends. Its
number is the lease's own: a lock's fencing token, the Redis time a cache fill was
granted. The Lua side (`lua/lease.lua`: grant, holder, extend, end) runs inside each
pattern's own scripts, so that granting or ending a lease is one atomic step with the rest
of the pattern's state. Ending a lease publishes on the channel of its name; a caller that
waits for one is woken by that, and otherwise tries again when the holder's lease would
have run out (`wakeups.until_woken`).

A lease is granted to a caller that may go away at any moment (its client gone, its
deadline passed, the server shutting down), and the script that grants it may run in
Redis while its reply is still on the way. Every grant goes through
`granted_or_given_back`, so a lease whose caller will never see it is given back at once,
not left to its ttl.
"""

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from patterns_server.core.errors import InvalidArgument
from patterns_server.core.units import instant_us
from patterns_server.storage.backend import RedisBackend
from patterns_server.storage.wakeups import until_woken

T = TypeVar("T")

TOKEN_BYTES = 16  # 128 random bits: 22 URL-safe characters
MAX_TOKEN_CHARS = 64  # what a caller may send back as a token


@dataclass(frozen=True)
class Lease:
    """A granted lease: its token (a secret of the holder's), its number, and its end."""

    token: str
    number: int
    expires_at: datetime


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def check_token(field: str, token: str, *, required: bool = True) -> None:
    """A token a caller sends back: 1 to MAX_TOKEN_CHARS characters (or empty, when not
    `required`). Tokens are never echoed in errors: they are secrets."""
    low = 1 if required else 0
    if not low <= len(token) <= MAX_TOKEN_CHARS:
        raise InvalidArgument(field, f"must be {low} to {MAX_TOKEN_CHARS} characters")


def granted(token: str, number: int, ends_us: int) -> Lease:
    """The Lease a script granted: `lease_grant`'s number and end (µs since the epoch)."""
    return Lease(token, int(number), instant_us(int(ends_us)))


async def granted_or_given_back(
    grant: Awaitable[T],
    lease_in: Callable[[T], Lease | None],
    give_back: Callable[[Lease], Awaitable[object]],
) -> T:
    """The answer of `grant` (a script that may grant a lease), awaited shielded from the
    caller's cancellation. Once a script is sent, Redis may grant the lease while the reply
    is on its way; a caller cancelled then would never learn the token, and the lease would
    live out its ttl. So when the caller is cancelled meanwhile, the reply is awaited all
    the same, the lease in it (`lease_in`) is given back (`give_back`), and only then does
    the cancellation go on. (A lease that Redis could not be asked to give back ends with
    its ttl.)"""
    reply = asyncio.ensure_future(grant)
    try:
        return await asyncio.shield(reply)
    except asyncio.CancelledError:
        await _give_back_once_granted(reply, lease_in, give_back)
        raise


async def _give_back_once_granted(
    reply: "asyncio.Future[T]",
    lease_in: Callable[[T], Lease | None],
    give_back: Callable[[Lease], Awaitable[object]],
) -> None:
    while not reply.done():  # within the Redis timeout; a caller cancelled again waits too
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([reply])
    if reply.cancelled() or reply.exception() is not None:
        return  # nothing was granted, or nothing is known of it
    lease = lease_in(reply.result())
    if lease is not None:
        with contextlib.suppress(Exception):  # unreachable: it ends with its ttl
            await asyncio.shield(give_back(lease))


async def wait_for(
    redis: RedisBackend,
    channel: bytes,
    attempt: Callable[[], Awaitable[tuple[T, int | None]]],
    wait: timedelta,
    time_left: float | None,
) -> T:
    """The result of `attempt()` once it succeeds, or of its last try when the wait is
    over: `wait`, or less when the caller's deadline leaves only `time_left` seconds.
    `attempt` answers (result, None) on success, else (result, ms until the holder's lease
    would run out); it is tried again whenever a lease on `channel` ends."""
    return await until_woken(redis, channel, attempt, deadline_after(wait, time_left))


def deadline_after(wait: timedelta, time_left: float | None) -> float:
    """The event loop's time at which a wait of `wait` ends, sooner when the caller's
    deadline leaves only `time_left` seconds."""
    patience = wait.total_seconds()
    if time_left is not None:
        patience = min(patience, time_left)
    return asyncio.get_running_loop().time() + patience
