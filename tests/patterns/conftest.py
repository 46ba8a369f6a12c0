"""What every direct test shares: a scenario runner over a RedisBackend of its own."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from patterns_server.storage import RedisBackend
from tests.patterns import WithRedis

T = TypeVar("T")


@pytest.fixture
def with_redis(backend_url: str) -> WithRedis:
    """Runs a scenario with a RedisBackend of its own on the backend under test (each
    `backend_url`: Redis 7, Redis 6.2, Cluster), in an event loop of its own."""

    def run_with_backend(scenario: Callable[[RedisBackend], Awaitable[T]]) -> T:
        async def main() -> T:
            backend = RedisBackend.from_url(
                backend_url, prefix="patterns-direct", timeout=5, batch_wait=0.001
            )
            try:
                return await scenario(backend)
            finally:
                await backend.close()

        return asyncio.run(main())

    return run_with_backend
