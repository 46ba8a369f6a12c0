"""Cache: values with expiry and tags, and cache-aside done right (`get_or_compute`).

`get_or_compute` asks the server for the value or, on a miss, for the lease to compute it:
one caller of the whole fleet computes a cold key while the others wait for its value. If
the cache cannot serve within the caller's `fallback_after` (the server or its Redis
unavailable, paused or overloaded, or no connection), the value is computed directly: a
cache outage is not an outage of what it speeds up. A holder whose `compute()` raises
gives its lease back (ReleaseLease), so the next caller computes at once.

The recipe is written once, as the steps of `_fill` (calls to make, and when to compute),
which the blocking and the asyncio client each run with their own calls.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from patterns.cache.v1 import cache_pb2 as pb
from patterns.cache.v1 import cache_pb2_grpc

from patterns_client._calls import FALLBACK_AFTER, AsyncCalls, Budget, Calls
from patterns_client._convert import duration, one_or_many, seconds, timestamp
from patterns_client.errors import PatternsError, falls_back

__all__ = ["MISSING", "AsyncCache", "Cache", "Entry"]

logger = logging.getLogger("patterns_client.cache")
F = TypeVar("F", bound=Callable[..., Any])
# What get_or_compute returns: bytes, or None for "not found" when `compute` may say so.
V = TypeVar("V", bytes, "bytes | None")
LEASE_TTL = timedelta(seconds=10)
WAIT = timedelta(seconds=5)
# The value get_or_compute stores for "not found" when asked to (`cache_misses_for`): a
# reader of the key elsewhere (`get`, another language) sees these bytes.
MISSING = b"\x00patterns-client:not-found\x00"


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


def _lease_request(key: str, lease_ttl: timedelta, wait: timedelta | None) -> pb.GetOrLeaseRequest:
    return pb.GetOrLeaseRequest(key=key, lease_ttl=duration(lease_ttl), wait_timeout=duration(wait))


def _entry(found: bool, value: bytes, ttl_remaining: Any) -> Entry | None:
    return Entry(value, ttl_remaining.ToTimedelta()) if found else None


@dataclass(frozen=True)
class _Call:
    """A step of `_fill`: call the Cache RPC `rpc` with `request`, within `timeout` s."""

    rpc: str
    request: Any
    timeout: float


# A step of `_fill`: call the Cache RPC (its answer is sent back), or None: call
# `compute()` (its value is sent back). A failure of either is thrown back instead.
_Step = _Call | None


@dataclass(frozen=True)
class _Fill:
    """get_or_compute's options."""

    key: str
    ttl: timedelta | None
    tags: Sequence[str]
    lease_ttl: timedelta
    wait: timedelta
    fallback_after: timedelta
    cache_misses_for: timedelta | None


def _fill(fill: _Fill) -> Generator[_Step, Any, bytes | None]:
    """get_or_compute, as steps. The cache's calls share one budget, `fallback_after`,
    grown by `wait` only once the server said another caller is filling the key; when
    the cache cannot answer within it (errors.falls_back), compute() answers directly."""
    key, budget = fill.key, Budget(seconds(fill.fallback_after))
    try:
        with budget.spending() as left:  # no wait here: a paused server costs `left` only
            response = yield _Call("GetOrLease", _lease_request(key, fill.lease_ttl, None), left)
        if response.WhichOneof("result") == "pending" and fill.wait > timedelta(0):
            budget.grow(seconds(fill.wait))
            with budget.spending() as left:
                request = _lease_request(key, fill.lease_ttl, fill.wait)
                response = yield _Call("GetOrLease", request, left)
    except PatternsError as error:
        if not falls_back(error):
            raise
        logger.warning("cache unavailable, computing %r directly: %s", key, error)
        return cast("bytes | None", (yield None))
    kind = response.WhichOneof("result")
    if kind == "hit":
        value = bytes(response.hit.value)
        return None if fill.cache_misses_for is not None and value == MISSING else value
    if kind != "lease":  # pending: another caller still fills; ours is not stored
        return cast("bytes | None", (yield None))
    token = response.lease.token
    try:
        computed: bytes | None = yield None
    except BaseException as error:
        if not isinstance(error, GeneratorExit):
            yield from _give_back(key, token, budget)
        raise
    if computed is None and fill.cache_misses_for is None:
        yield from _give_back(key, token, budget)  # nothing to store: the next one computes
        return None
    if computed is None:
        store = _set_request(key, MISSING, fill.cache_misses_for, None, fill.tags, False, token)
    else:
        store = _set_request(key, computed, fill.ttl, None, fill.tags, False, token)
    try:
        with budget.spending() as left:
            yield _Call("Set", store, left)
    except PatternsError as error:
        if not falls_back(error):
            yield from _give_back(key, token, budget)
            raise
        logger.warning("cache unavailable, %r not stored: %s", key, error)
    return computed


def _give_back(key: str, token: str, budget: Budget) -> Generator[_Step, Any, None]:
    """Release the fill lease `token` of `key`, so that a waiter takes the next one at
    once; if the cache cannot, the lease ends after its lease_ttl."""
    try:
        with budget.spending() as left:
            request = pb.ReleaseLeaseRequest(key=key, lease_token=token)
            yield _Call("ReleaseLease", request, left)
    except PatternsError as error:
        logger.warning("lease on %r not given back (it ends after lease_ttl): %s", key, error)


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
        it was stored (not when `only_if_absent` found a value)."""
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
        compute: Callable[[], V],
        *,
        ttl: timedelta | None = None,
        tags: Sequence[str] = (),
        lease_ttl: timedelta = LEASE_TTL,
        wait: timedelta = WAIT,
        fallback_after: timedelta = FALLBACK_AFTER,
        cache_misses_for: timedelta | None = None,
    ) -> V:
        """The value of `key`; on a miss, `compute()`'s, stored for `ttl` under `tags`.

        Across the fleet one caller computes a cold key (it holds the key's fill lease
        for `lease_ttl` at most) while the others wait up to `wait` for its value, then
        compute it themselves, without storing. If `compute()` raises, the lease is
        given back (the next caller computes at once) and the error raised.

        The cache costs `fallback_after` (200 ms) at most, all its calls together, plus
        `wait` when the server said another caller is filling the key: when it cannot
        answer within that (the server or its Redis unavailable, paused or overloaded,
        or no connection), `compute()` is called directly. So this never takes longer
        than `fallback_after` (+ `wait`) plus `compute()` itself.

        `compute` may return None for "not found": then None is returned, and with
        `cache_misses_for` the miss is cached for that long (as the value MISSING, under
        `tags`), so that a hot missing key does not reach the source on every call;
        without it, nothing is stored and the next caller computes again."""
        options = _Fill(key, ttl, tags, lease_ttl, wait, fallback_after, cache_misses_for)
        return cast(V, self._run(_fill(options), compute))

    def _run(self, steps: Generator[_Step, Any, bytes | None], compute: Callable[[], V]) -> Any:
        """Take `steps` to their end, making their calls and computing when they ask."""
        answer: Any = None
        failure: BaseException | None = None
        while True:
            try:
                step = steps.send(answer) if failure is None else steps.throw(failure)
            except StopIteration as done:
                return done.value
            answer, failure = None, None
            try:
                if step is None:
                    answer = compute()
                else:
                    method = getattr(self._stub, step.rpc)
                    answer = self._calls.unary(method, step.request, timeout=step.timeout)
            except BaseException as error:  # thrown back into the steps, which decide
                failure = error

    def cached(
        self,
        *,
        key: Callable[..., str],
        ttl: timedelta | None = None,
        tags: Sequence[str] = (),
        lease_ttl: timedelta = LEASE_TTL,
        wait: timedelta = WAIT,
        fallback_after: timedelta = FALLBACK_AFTER,
        cache_misses_for: timedelta | None = None,
    ) -> Callable[[F], F]:
        """A decorator for a function that returns bytes (or None for "not found"): its
        result is cached under the key `key(*args, **kwargs)` names, through
        `get_or_compute` with these options (the cache costs `fallback_after` at most,
        then the function is called directly)."""

        def decorate(function: F) -> F:
            @functools.wraps(function)
            def cached_call(*args: Any, **kwargs: Any) -> bytes | None:
                return self.get_or_compute(
                    key(*args, **kwargs),
                    lambda: cast("bytes | None", function(*args, **kwargs)),
                    ttl=ttl,
                    tags=tags,
                    lease_ttl=lease_ttl,
                    wait=wait,
                    fallback_after=fallback_after,
                    cache_misses_for=cache_misses_for,
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
        """The key's value, or None on a miss."""
        response = await self._calls.unary(self._stub.Get, pb.GetRequest(key=key))
        return _entry(response.found, response.value, response.ttl_remaining)

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """The values of `keys`, in order (None for a miss)."""
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
        """Store `value` (for `ttl`, until `expire_at`, or the server's default); whether
        it was stored (not when `only_if_absent` found a value)."""
        request = _set_request(key, value, ttl, expire_at, tags, only_if_absent)
        return bool((await self._calls.unary(self._stub.Set, request)).stored)

    async def delete(self, keys: str | Sequence[str]) -> int:
        """Delete keys; how many held a value."""
        request = pb.DeleteRequest(keys=one_or_many(keys))
        return int((await self._calls.unary(self._stub.Delete, request)).deleted)

    async def invalidate_tags(self, tags: Sequence[str]) -> int:
        """Delete every entry that carries one of `tags` now; how many."""
        request = pb.InvalidateTagsRequest(tags=list(tags))
        return int((await self._calls.unary(self._stub.InvalidateTags, request)).deleted)

    async def invalidate_prefix(self, prefix: str) -> int:
        """Delete every entry whose key starts with `prefix`; how many."""
        request = pb.InvalidatePrefixRequest(prefix=prefix)
        return int((await self._calls.unary(self._stub.InvalidatePrefix, request)).deleted)

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[V]],
        *,
        ttl: timedelta | None = None,
        tags: Sequence[str] = (),
        lease_ttl: timedelta = LEASE_TTL,
        wait: timedelta = WAIT,
        fallback_after: timedelta = FALLBACK_AFTER,
        cache_misses_for: timedelta | None = None,
    ) -> V:
        """The value of `key`; on a miss, the value of `await compute()`, stored for `ttl`
        under `tags`. The same recipe as Cache.get_or_compute, with a coroutine function:
        one caller of the fleet computes a cold key while the others wait up to `wait`;
        if `compute()` raises (or is cancelled) the lease is given back and the error
        raised; the cache costs `fallback_after` (200 ms) at most, plus `wait` when
        another caller is filling, after which `compute()` answers directly; a None
        from `compute()` is "not found", cached for `cache_misses_for` when given."""
        options = _Fill(key, ttl, tags, lease_ttl, wait, fallback_after, cache_misses_for)
        return cast(V, await self._run(_fill(options), compute))

    async def _run(
        self, steps: Generator[_Step, Any, bytes | None], compute: Callable[[], Awaitable[V]]
    ) -> Any:
        """Take `steps` to their end, making their calls and computing when they ask."""
        answer: Any = None
        failure: BaseException | None = None
        while True:
            try:
                step = steps.send(answer) if failure is None else steps.throw(failure)
            except StopIteration as done:
                return done.value
            answer, failure = None, None
            try:
                if step is None:
                    answer = await compute()
                else:
                    method = getattr(self._stub, step.rpc)
                    answer = await self._calls.unary(method, step.request, timeout=step.timeout)
            except BaseException as error:  # thrown back into the steps, which decide
                failure = error

    def cached(
        self,
        *,
        key: Callable[..., str],
        ttl: timedelta | None = None,
        tags: Sequence[str] = (),
        lease_ttl: timedelta = LEASE_TTL,
        wait: timedelta = WAIT,
        fallback_after: timedelta = FALLBACK_AFTER,
        cache_misses_for: timedelta | None = None,
    ) -> Callable[[F], F]:
        """A decorator for a coroutine function that returns bytes (or None for "not
        found"): its result is cached under the key `key(*args, **kwargs)` names, through
        `get_or_compute` with these options (the cache costs `fallback_after` at most,
        then the function is awaited directly)."""

        def decorate(function: F) -> F:
            @functools.wraps(function)
            async def cached_call(*args: Any, **kwargs: Any) -> bytes | None:
                return await self.get_or_compute(
                    key(*args, **kwargs),
                    lambda: cast("Awaitable[bytes | None]", function(*args, **kwargs)),
                    ttl=ttl,
                    tags=tags,
                    lease_ttl=lease_ttl,
                    wait=wait,
                    fallback_after=fallback_after,
                    cache_misses_for=cache_misses_for,
                )

            return cached_call  # type: ignore[return-value]

        return decorate
