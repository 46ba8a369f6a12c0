"""UniqueCounter: approximate distinct counts (HyperLogLog, 0.81% standard error)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from patterns.counter.v1 import counter_pb2 as pb
from patterns.counter.v1 import counter_pb2_grpc

from patterns_client._calls import AsyncCalls, Calls
from patterns_client._convert import duration, one_or_many

__all__ = ["AsyncUniqueCounter", "UniqueCounter"]


class UniqueCounter:
    """`client.counter` of the blocking client."""

    def __init__(self, calls: Calls, stub: counter_pb2_grpc.UniqueCounterStub) -> None:
        self._calls = calls
        self._stub = stub

    def add(self, key: str, items: Sequence[str], *, ttl: timedelta | None = None) -> bool:
        """Record `items` under `key` (the key then expires `ttl` after this call, when
        given); whether the estimate moved."""
        request = pb.AddRequest(key=key, items=list(items), ttl=duration(ttl))
        return bool(self._calls.unary(self._stub.Add, request).changed)

    def count(self, keys: str | Sequence[str]) -> int:
        """The estimated number of distinct items in the union of `keys`."""
        request = pb.CountRequest(keys=one_or_many(keys))
        return int(self._calls.unary(self._stub.Count, request).count)

    def merge(
        self, destination: str, sources: Sequence[str], *, ttl: timedelta | None = None
    ) -> int:
        """Store the union of `sources` into `destination`; its count after."""
        request = pb.MergeRequest(destination=destination, sources=list(sources), ttl=duration(ttl))
        return int(self._calls.unary(self._stub.Merge, request).count)


class AsyncUniqueCounter:
    """`client.counter` of the asyncio client: UniqueCounter's methods as coroutines."""

    def __init__(self, calls: AsyncCalls, stub: counter_pb2_grpc.UniqueCounterStub) -> None:
        self._calls = calls
        self._stub = stub

    async def add(self, key: str, items: Sequence[str], *, ttl: timedelta | None = None) -> bool:
        """Record `items` under `key` (the key then expires `ttl` after this call, when
        given); whether the estimate moved."""
        request = pb.AddRequest(key=key, items=list(items), ttl=duration(ttl))
        return bool((await self._calls.unary(self._stub.Add, request)).changed)

    async def count(self, keys: str | Sequence[str]) -> int:
        """The estimated number of distinct items in the union of `keys`."""
        request = pb.CountRequest(keys=one_or_many(keys))
        return int((await self._calls.unary(self._stub.Count, request)).count)

    async def merge(
        self, destination: str, sources: Sequence[str], *, ttl: timedelta | None = None
    ) -> int:
        """Store the union of `sources` into `destination`; its count after."""
        request = pb.MergeRequest(destination=destination, sources=list(sources), ttl=duration(ttl))
        return int((await self._calls.unary(self._stub.Merge, request)).count)
