"""How the services' methods make calls: one deadline and metadata for every call, and
every failure raised as a PatternsError."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import grpc

from patterns_client.errors import from_rpc_error

Metadata = Sequence["tuple[str, str | bytes]"]

# How long a recipe with a fallback (a rate-limit check that admits or refuses on its own,
# a cache read that goes to the source) waits for the server before it falls back.
FALLBACK_AFTER = timedelta(milliseconds=200)


class Calls:
    """Unary calls of the blocking client."""

    def __init__(self, timeout: float, metadata: Metadata) -> None:
        self.timeout = timeout
        self.metadata = tuple(metadata)

    def unary(
        self, method: Any, request: Any, *, longer_by: float = 0.0, timeout: float | None = None
    ) -> Any:
        """`method(request)` with the client's deadline, `longer_by` seconds more for a call
        that waits on the server (a lock's wait, say); `timeout`, when given, in place of
        the client's (a recipe's fallback budget)."""
        limit = (self.timeout if timeout is None else timeout) + longer_by
        try:
            return method(request, timeout=limit, metadata=self.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


class AsyncCalls:
    """Unary calls of the asyncio client."""

    def __init__(self, timeout: float, metadata: Metadata) -> None:
        self.timeout = timeout
        self.metadata = tuple(metadata)

    async def unary(
        self, method: Any, request: Any, *, longer_by: float = 0.0, timeout: float | None = None
    ) -> Any:
        """`method(request)` awaited, with the deadline that Calls.unary gives."""
        limit = (self.timeout if timeout is None else timeout) + longer_by
        try:
            return await method(request, timeout=limit, metadata=self.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


class Budget:
    """The time a recipe may spend on the server's calls before it falls back (the
    caller's `fallback_after`): spent only while a call is in progress, not while the
    caller's own code (a cache's `compute()`) runs."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    def grow(self, seconds: float) -> None:
        """Allow `seconds` more (a wait the server said is worth it)."""
        self.left += seconds

    @contextmanager
    def spending(self) -> Iterator[float]:
        """Around one call: yields the seconds left for it (its deadline), and counts
        what the call took, however it ends."""
        started = time.monotonic()
        try:
            yield max(self.left, 0.0)
        finally:
            self.left -= time.monotonic() - started
