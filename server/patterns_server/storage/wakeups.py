"""Waiting without polling: try, and try again when woken by a message on a channel.

A lock's release and a cache fill publish on the name's channel; a caller that must wait
subscribes (through the backend's shared Pub/Sub connection) and tries again when woken.
Expiry publishes nothing, so it also tries again when its last attempt said the obstacle
would be gone, and at least every FALLBACK_SECONDS in case a wake-up was lost.

At shutdown the process's waits end at once (`Waits.end`): a caller waiting, or about to
wait, is answered with the shutdown's error instead of holding the shutdown for as long
as it would wait.
"""

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from patterns_server.core.errors import PatternError, ResourceExhausted
from patterns_server.storage.pubsub import Subscription

if TYPE_CHECKING:  # the backend holds the process's Waits
    from patterns_server.storage.backend import RedisBackend

T = TypeVar("T")
FALLBACK_SECONDS = 2.0
WAKEUP_BUFFER = 64  # wake-ups left unread before the subscription is made anew

# Subscriptions left after a successful attempt, unsubscribing in the background.
_leaving: set["asyncio.Task[None]"] = set()


class Waits:
    """The waits of one process (for a lock, for a cache fill), so that shutdown can end
    them: once `end(error)` is called, every wait in progress, and every one that would
    start, raises `error` (a copy each) instead of waiting. An attempt in flight is
    finished first, since it may be granted: its caller then has what it waited for."""

    def __init__(self) -> None:
        self._ending: PatternError | None = None
        self._parked: set[Subscription] = set()

    def end(self, error: PatternError) -> None:
        """End every wait, now and from now on, with `error`."""
        self._ending = error
        for wakeups in self._parked:
            wakeups.end(copy.copy(error))

    def check(self) -> None:
        """Raise the error that ended the waits, if they are ended."""
        if self._ending is not None:
            raise copy.copy(self._ending)

    def park(self, wakeups: Subscription) -> None:
        """Count in a wait, woken by `wakeups`: `end` ends it."""
        if self._ending is not None:
            wakeups.end(copy.copy(self._ending))
        self._parked.add(wakeups)

    def unpark(self, wakeups: Subscription) -> None:
        self._parked.discard(wakeups)


async def until_woken(
    redis: "RedisBackend",
    channel: bytes,
    attempt: Callable[[], Awaitable[tuple[T, int | None]]],
    deadline: float,
) -> T:
    """The result of `attempt()` once it succeeds, or of its last try at `deadline` (loop
    time). `attempt` answers (result, None) on success, else (result, ms until the
    obstacle would go of itself). An attempt in flight is never cut short: it might hold
    a grant; and its result goes to the caller with no pause in between, in which the
    caller could be cancelled and lose it. Raises the shutdown's error once `redis.waits`
    are ended."""
    loop = asyncio.get_running_loop()
    waits = redis.waits
    while True:  # subscribed anew only if the wake-ups overflowed
        waits.check()
        wakeups = await redis.subscribe([channel], [], WAKEUP_BUFFER, WAKEUP_BUFFER)
        waits.park(wakeups)
        answered = False
        try:
            while True:
                # Tried after subscribing: a wake-up just before is not missed.
                result, retry_ms = await attempt()
                remaining = deadline - loop.time()
                if retry_ms is None or remaining <= 0:
                    answered = True
                    return result
                pause = min(remaining, FALLBACK_SECONDS, max(0.001, retry_ms / 1000))
                try:
                    async with asyncio.timeout(pause):
                        await anext(wakeups)  # raises the shutdown's error (Waits.end)
                except TimeoutError:
                    pass  # the obstacle may have gone of itself: try again
                except ResourceExhausted:
                    break  # too many wake-ups unread: subscribe again
        finally:
            waits.unpark(wakeups)
            if answered:
                _leave_later(wakeups)
            else:
                await wakeups.close()


def _leave_later(wakeups: Subscription) -> None:
    """Unsubscribe without keeping the caller: leaving awaits Redis, and a caller
    cancelled then would lose the result it already has (a lease)."""
    leaving = asyncio.ensure_future(wakeups.close())
    _leaving.add(leaving)
    leaving.add_done_callback(_leaving.discard)
