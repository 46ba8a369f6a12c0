"""The patterns used directly, without gRPC: each pattern's Python API over a RedisBackend,
as a library would be tested, on every backend (standalone Redis 7, 6.2, Cluster)."""

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from patterns_server.storage import RedisBackend

T = TypeVar("T")


class WithRedis(Protocol):
    """The `with_redis` fixture: runs `scenario` with a RedisBackend of its own on the
    backend under test, and returns what the scenario returned."""

    def __call__(self, scenario: Callable[[RedisBackend], Awaitable[T]], /) -> T: ...
