"""Waiting for a condition to hold, in plain code and inside an event loop: polled, with
a deadline that fails the test."""

import asyncio
import time
from collections.abc import Awaitable, Callable


def eventually(
    condition: Callable[[], bool], within: float = 10.0, step: float = 0.05, what: str = ""
) -> None:
    """Wait until `condition()` holds; fail after `within` seconds, saying `what` was
    awaited."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not met in {within} s: {what or 'the condition'}"
        time.sleep(step)


async def eventually_async(
    condition: Callable[[], bool | Awaitable[bool]], within: float = 10.0, step: float = 0.01
) -> None:
    """Wait, without blocking the loop, until `condition()` (or its awaited answer) holds."""
    deadline = time.monotonic() + within
    while True:
        held = condition()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        assert time.monotonic() < deadline, f"not met in {within} s: the condition"
        await asyncio.sleep(step)
