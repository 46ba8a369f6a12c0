"""Waiting without polling: try, and try again when woken by a message on a channel.

A lock's release and a cache fill publish on the name's channel; a caller that must wait
subscribes (through the backend's shared Pub/Sub connection) and tries again when woken.
Expiry publishes nothing, so it also tries again when its last attempt said the obstacle
would be gone, and at least every FALLBACK_SECONDS in case a wake-up was lost.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from patterns_server.core.errors import ResourceExhausted
from patterns_server.storage.backend import RedisBackend

T = TypeVar("T")
FALLBACK_SECONDS = 2.0
WAKEUP_BUFFER = 64  # wake-ups left unread before the subscription is made anew


async def until_woken(
    redis: RedisBackend,
    channel: bytes,
    attempt: Callable[[], Awaitable[tuple[T, int | None]]],
    deadline: float,
) -> T:
    """The result of `attempt()` once it succeeds, or of its last try at `deadline` (loop
    time). `attempt` answers (result, None) on success, else (result, ms until the
    obstacle would go of itself). An attempt in flight is never cut short: it might hold
    a grant."""
    loop = asyncio.get_running_loop()
    while True:  # subscribed anew only if the wake-ups overflowed
        async with await redis.subscribe([channel], [], WAKEUP_BUFFER, WAKEUP_BUFFER) as wakeups:
            while True:
                # Tried after subscribing: a wake-up just before is not missed.
                result, retry_ms = await attempt()
                remaining = deadline - loop.time()
                if retry_ms is None or remaining <= 0:
                    return result
                pause = min(remaining, FALLBACK_SECONDS, max(0.001, retry_ms / 1000))
                try:
                    async with asyncio.timeout(pause):
                        await anext(wakeups)
                except TimeoutError:
                    pass  # the obstacle may have gone of itself: try again
                except ResourceExhausted:
                    break  # too many wake-ups unread: subscribe again
