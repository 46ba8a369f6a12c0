"""Unique counting over Redis HyperLogLogs: add items, count one key or a union, merge.

A HyperLogLog takes at most 12 KiB whatever it counts, with a standard error of 0.81%.
On Redis Cluster every key lives in the slot of its own name, so a union across keys must
gather them: keys in the "home" slot (of the first key, or the destination) are used in
place; the raw values of the others are read (GET, one round trip per node) and merged into
a scratch key by a script that deletes it before returning. Those reads are not atomic with
the merge; a concurrent Add to a remote source may or may not be included.
"""

from collections.abc import Sequence
from datetime import timedelta

from patterns_server.core.validation import check_name, check_names, optional_ttl_ms
from patterns_server.storage import Command, LuaScript, RedisBackend

MAX_ITEMS_PER_ADD = 10_000
MAX_ITEM_BYTES = 1_024
MAX_KEYS = 100
MAX_TTL = timedelta(days=3_650)

ADD = LuaScript.load(__file__, "add")
MERGE = LuaScript.load(__file__, "copy", "merge")
COUNT_UNION = LuaScript.load(__file__, "copy", "count_union")


class UniqueCounter:
    def __init__(self, redis: RedisBackend) -> None:
        self._redis = redis
        self._key = redis.keys("counter")

    async def add(self, key: str, items: Sequence[str], ttl: timedelta | None = None) -> bool:
        """Record `items` under `key`; True when the estimate moved. `ttl` (re)sets expiry."""
        check_name("key", key)
        check_names("items", items, 1, MAX_ITEMS_PER_ADD, MAX_ITEM_BYTES)
        ttl_ms = optional_ttl_ms("ttl", ttl, MAX_TTL)
        changed = await self._redis.eval(ADD, [self._key(key)], [ttl_ms, *items])
        return bool(changed)

    async def count(self, keys: Sequence[str]) -> int:
        """The estimated number of distinct items in the union of `keys`."""
        check_names("keys", keys, 1, MAX_KEYS)
        redis_keys = [self._key(key) for key in keys]
        local, remote = self._split_by_slot(redis_keys[0], redis_keys)
        if not remote:
            return int(await self._redis.call("PFCOUNT", *local))
        scratch = [self._key(keys[0], "union"), self._key(keys[0], "copy")]
        values = await self._values_of(remote)
        return int(await self._redis.eval(COUNT_UNION, [*scratch, *local], values))

    async def merge(
        self, destination: str, sources: Sequence[str], ttl: timedelta | None = None
    ) -> int:
        """Add the union of `sources` to `destination`; its new estimated count."""
        check_name("destination", destination)
        check_names("sources", sources, 1, MAX_KEYS)
        ttl_ms = optional_ttl_ms("ttl", ttl, MAX_TTL)
        target = self._key(destination)
        local, remote = self._split_by_slot(target, [self._key(source) for source in sources])
        values = await self._values_of(remote)
        keys = [target, self._key(destination, "copy"), *local]
        return int(await self._redis.eval(MERGE, keys, [ttl_ms, *values]))

    def _split_by_slot(self, home: str, keys: list[str]) -> tuple[list[str], list[str]]:
        """`keys` in the slot of `home` (all of them on standalone Redis), and the rest."""
        home_slot = self._redis.slot(home)
        local: list[str] = []
        remote: list[str] = []
        for key in keys:
            (local if self._redis.slot(key) == home_slot else remote).append(key)
        return local, remote

    async def _values_of(self, keys: list[str]) -> list[bytes]:
        """Raw HyperLogLog values of `keys`, skipping missing ones (they count as empty)."""
        if not keys:
            return []
        replies = await self._redis.run(*(Command(("GET", key)) for key in keys))
        return [reply for reply in replies if reply is not None]
