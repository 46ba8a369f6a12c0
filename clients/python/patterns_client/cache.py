"""Cache: values with expiry and tags, and cache-aside done right (`get_or_compute`).

`get_or_compute` asks the server for the value or, on a miss, for the lease to compute it:
one caller of the whole fleet computes a cold key while the others wait for its value. If
the cache cannot serve (the server or its Redis unavailable), the value is computed
directly: a cache outage is not an outage of what it speeds up.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from patterns.cache.v1 import cache_pb2 as pb
from patterns.cache.v1 import cache_pb2_grpc

from patterns_client._calls import AsyncCalls, Calls
from patterns_client._convert import duration, one_or_many, seconds, timestamp
from patterns_client.errors import Unavailable

__all__ = ["AsyncCache", "Cache", "Entry"]

logger = logging.getLogger("patterns_client.cache")
F = TypeVar("F", bound=Callable[..., Any])
LEASE_TTL = timedelta(seconds=10)
WAIT = timedelta(seconds=5)


@dataclass(frozen=True)
class Entry:
    """A key's value and how long it has left."""

    value: bytes
    ttl_remaining: timedelta


def _set_request(
    key: str,
    value: bytes,
    ttl: timedelta | None,
    expire_at: datetime | None,
    tags: Sequence[str],
    only_if_absent: bool,
    lease_token: str = "",
) -> pb.SetRequest:
    return pb.SetRequest(
        key=key,
        value=value,
        ttl=duration(ttl),
        expire_at=timestamp(expire_at),
        tags=list(tags),
        only_if_absent=only_if_absent,
        lease_token=lease_token,
    )


def _lease_request(key: str, lease_ttl: timedelta, wait: timedelta) -> pb.GetOrLeaseRequest:
    return pb.GetOrLeaseRequest(key=key, lease_ttl=duration(lease_ttl), wait_timeout=duration(wait))


def _entry(found: bool, value: bytes, ttl_remaining: Any) -> Entry | None:
    return Entry(value, ttl_remaining.ToTimedelta()) if found else None


class Cache:
    """`client.cache` of the blocking client."""

    def __init__(self, calls: Calls, stub: cache_pb2_grpc.CacheStub) -> None:
        self._calls = calls
        self._stub = stub

    def get(self, key: str) -> Entry | None:
        """The key's value, or None on a miss."""
        response = self._calls.unary(self._stub.Get, pb.GetRequest(key=key))
        return _entry(response.found, response.value, response.ttl_remaining)

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """The values of `keys`, in order (None for a miss)."""
        response = self._calls.unary(self._stub.GetMany, pb.GetManyRequest(keys=list(keys)))
        return [_entry(e.found, e.value, e.ttl_remaining) for e in response.entries]

    def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: timedelta | None = None,
        expire_at: datetime | None = None,
        tags: Sequence[str] = (),
        only_if_absent: bool = False,
    ) -> bool:
        """Store `value` (for `ttl`, until `expire_at`, or the server's default); whether
        it was stored."""
        request = _set_request(key, value, ttl, expire_at, tags, only_if_absent)
        return bool(self._calls.unary(self._stub.Set, request).stored)

    def delete(self, keys: str | Sequence[str]) -> int:
        """Delete keys; how many held a value."""
        request = pb.DeleteRequest(keys=one_or_many(keys))
        return int(self._calls.unary(self._stub.Delete, request).deleted)

    def invalidate_tags(self, tags: Sequence[str]) -> int:
        """Delete every entry that carries one of `tags` now; how many."""
        request = pb.InvalidateTagsRequest(tags=list(tags))
        return int(self._calls.unary(self._stub.InvalidateTags, request).deleted)

    def invalidate_prefix(self, prefix: str) -> int:
        """Delete every entry whose key starts with `prefix`; how many."""
        request = pb.InvalidatePrefixRequest(prefix=prefix)
        return int(self._calls.unary(self._stub.InvalidatePrefix, request).deleted)

    def get_or_compute(
        self,
        key: str,
        compute: Callable[[], bytes],
        *,
        ttl: timedelta | None = None,
        tags: Sequence[str] = (),
        lease_ttl: timedelta = LEASE_TTL,
        wait: timedelta = WAIT,
    ) -> bytes:
        """The value of `key`; on a miss, `compute()`'s, stored for `ttl` under `tags`.
        Across the fleet one caller computes a cold key while the others wait up to `wait`
        for its value (then compute it themselves, without storing). `lease_ttl` is the
        time one computation may take: if it takes longer, or raises, another caller
        computes after it. When the cache is unavailable, `compute()` is called directly."""
        try:
            response = self._calls.unary(
                self._stub.GetOrLease,
                _lease_request(key, lease_ttl, wait),
                longer_by=seconds(wait),
            )
        except Unavailable as error:
            logger.warning("cache unavailable, computing %r directly: %s", key, error)
            return compute()
        kind = response.WhichOneof("result")
        if kind == "hit":
            return bytes(response.hit.value)
        value = compute()
        if kind == "lease":
            request = _set_request(key, value, ttl, None, tags, False, response.lease.token)
            try:
                self._calls.unary(self._stub.Set, request)
            except Unavailable as error:
                logger.warning("cache unavailable, %r not stored: %s", key, error)
        return value

    def cached(
        self,
        *,
        key: Callable[..., str],
        ttl: timedelta | None = None,
        tags: Sequence[str] = (),
        lease_ttl: timedelta = LEASE_TTL,
        wait: timedelta = WAIT,
    ) -> Callable[[F], F]:
        """A decorator for a function that returns bytes: its result is cached under the
        key `key(*args, **kwargs)` names, through `get_or_compute`."""

        def decorate(function: F) -> F:
            @functools.wraps(function)
            def cached_call(*args: Any, **kwargs: Any) -> bytes:
                return self.get_or_compute(
                    key(*args, **kwargs),
                    lambda: function(*args, **kwargs),
                    ttl=ttl,
                    tags=tags,
                    lease_ttl=lease_ttl,
                    wait=wait,
                )

            return cached_call  # type: ignore[return-value]

        return decorate


class AsyncCache:
    """`client.cache` of the asyncio client: Cache's methods as coroutines, computing with
    coroutine functions."""

    def __init__(self, calls: AsyncCalls, stub: cache_pb2_grpc.CacheStub) -> None:
        self._calls = calls
        self._stub = stub

    async def get(self, key: str) -> Entry | None:
        """As Cache.get."""
        response = await self._calls.unary(self._stub.Get, pb.GetRequest(key=key))
        return _entry(response.found, response.value, response.ttl_remaining)

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """As Cache.get_many."""
        request = pb.GetManyRequest(keys=list(keys))
        response = await self._calls.unary(self._stub.GetMany, request)
        return [_entry(e.found, e.value, e.ttl_remaining) for e in response.entries]

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: timedelta | None = None,
        expire_at: datetime | None = None,
        tags: Sequence[str] = (),
        only_if_absent: bool = False,
    ) -> bool:
        """As Cache.set."""
        request = _set_request(key, value, ttl, expire_at, tags, only_if_absent)
        return bool((await self._calls.unary(self._stub.Set, request)).stored)

    async def delete(self, keys: str | Sequence[str]) -> int:
        """As Cache.delete."""
        request = pb.DeleteRequest(keys=one_or_many(keys))
        return int((await self._calls.unary(self._stub.Delete, request)).deleted)

    async def invalidate_tags(self, tags: Sequence[str]) -> int:
        """As Cache.invalidate_tags."""
        request = pb.InvalidateTagsRequest(tags=list(tags))
        return int((await self._calls.unary(self._stub.InvalidateTags, request)).deleted)

    async def invalidate_prefix(self, prefix: str) -> int:
        """As Cache.invalidate_prefix."""
        request = pb.InvalidatePrefixRequest(prefix=prefix)
        return int((await self._calls.unary(self._stub.InvalidatePrefix, request)).deleted)

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
        *,
        ttl: timedelta | None = None,
        tags: Sequence[str] = (),
        lease_ttl: timedelta = LEASE_TTL,
        wait: timedelta = WAIT,
    ) -> bytes:
        """As Cache.get_or_compute, with a coroutine function `compute`."""
        try:
            response = await self._calls.unary(
                self._stub.GetOrLease,
                _lease_request(key, lease_ttl, wait),
                longer_by=seconds(wait),
            )
        except Unavailable as error:
            logger.warning("cache unavailable, computing %r directly: %s", key, error)
            return await compute()
        kind = response.WhichOneof("result")
        if kind == "hit":
            return bytes(response.hit.value)
        value = await compute()
        if kind == "lease":
            request = _set_request(key, value, ttl, None, tags, False, response.lease.token)
            try:
                await self._calls.unary(self._stub.Set, request)
            except Unavailable as error:
                logger.warning("cache unavailable, %r not stored: %s", key, error)
        return value

    def cached(
        self,
        *,
        key: Callable[..., str],
        ttl: timedelta | None = None,
        tags: Sequence[str] = (),
        lease_ttl: timedelta = LEASE_TTL,
        wait: timedelta = WAIT,
    ) -> Callable[[F], F]:
        """As Cache.cached, for coroutine functions."""

        def decorate(function: F) -> F:
            @functools.wraps(function)
            async def cached_call(*args: Any, **kwargs: Any) -> bytes:
                return await self.get_or_compute(
                    key(*args, **kwargs),
                    lambda: function(*args, **kwargs),
                    ttl=ttl,
                    tags=tags,
                    lease_ttl=lease_ttl,
                    wait=wait,
                )

            return cached_call  # type: ignore[return-value]

        return decorate
