"""The patterns used directly, without gRPC: each pattern's Python API over a RedisBackend,
as a library would be tested, on every backend (standalone Redis 7, 6.2, Cluster)."""

import inspect
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import pytest
from redis.asyncio import RedisCluster

from patterns_server.storage import RedisBackend

T = TypeVar("T")


class WithRedis(Protocol):
    """The `with_redis` fixture: runs `scenario` with a RedisBackend of its own on the
    backend under test, and returns what the scenario returned."""

    def __call__(self, scenario: Callable[[RedisBackend], Awaitable[T]], /) -> T: ...


# A known bug: on a Cluster, storage/batcher.py sends every command of a batch that has a
# route of its own (PUBLISH, and TIME for the Redis clock: to the Pub/Sub node) alone, all
# at once, each on a connection of its own from redis-py's pool for that node. redis-py
# 8.1 caps that pool at 100 (RedisCluster's max_connections) and refuses the 101st with
# MaxConnectionsError, which callers get as Unavailable though Redis is fine; redis-py 6.2
# has no cap (2**31) and opens as many connections as the burst asks.
CLUSTER_POOL_LIMIT: int = inspect.signature(RedisCluster).parameters["max_connections"].default


def xfail_for_a_routed_burst(
    request: pytest.FixtureRequest, backend_url: str, burst: int, calls: str
) -> None:
    """Marks the test a strict xfail where the bug above strikes a burst of `burst`
    `calls`: on a Cluster, with a redis-py whose node pool holds fewer."""
    if backend_url.startswith("redis+cluster://") and burst > CLUSTER_POOL_LIMIT:
        reason = (
            f"on a Cluster the batcher sends each of {burst} {calls} made at once alone, on "
            f"a connection of its own, all together; redis-py's node pool holds "
            f"{CLUSTER_POOL_LIMIT} (max_connections) and refuses the rest: Unavailable"
        )
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
