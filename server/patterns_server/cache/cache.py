"""A cache over Redis: values with expiry, tags, prefix invalidation, and fill leases.

- An entry is one hash (value and tags) that expires; reads and writes are one script each.
- Tags: each tag has an index (a sorted set of the keys tagged with it, scored by their
  expiry). A Set adds the key to its tags' indexes *before* it stores the entry, so an
  invalidation that starts after the Set began finds the key; InvalidateTags then deletes,
  entry by entry (each in its own slot on a Cluster), only the entries that still carry one
  of the tags: an entry set again without the tag survives. Indexes expire with their
  longest-lived member, and every Set prunes some expired members: nothing grows forever.
- InvalidatePrefix scans every node with SCAN (never KEYS) for the namespace's keys with
  the prefix, taken literally, and UNLINKs them.
- GetOrLease: on a miss, one script grants one caller a lease (a key beside the entry that
  expires); the others wait on the key's channel, through the backend's shared Pub/Sub
  connection, for the fill (or the lease's end) to wake them. A Set with the lease's token
  stores only if the lease is still there and none of the value's tags was invalidated
  since it was granted; Delete and invalidations end leases, so a slow filler never writes
  stale data back. A holder that cannot compute the value gives the lease back
  (ReleaseLease), which wakes the waiters as a fill does: the first takes the next lease.
"""

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from patterns_server.core.errors import InvalidArgument
from patterns_server.core.telemetry import record
from patterns_server.core.units import MILLISECOND, epoch_ms, from_ms, length, seconds_text
from patterns_server.core.validation import (
    check_name,
    check_names,
    checked_ms,
    optional_ttl_ms,
)
from patterns_server.storage import Command, LuaScript, RedisBackend
from patterns_server.storage.leases import (
    Lease,
    check_token,
    granted,
    granted_or_given_back,
    new_token,
    wait_for,
)

MAX_KEYS = 1_000
MAX_TAGS = 64
MAX_TTL = timedelta(days=3_650)
MAX_LEASE = timedelta(hours=1)
SCAN_DELETE_CHUNK = 1_000

GET = LuaScript.load(__file__, "get")
SET = LuaScript.load(__file__, "set", lease=True)
TAG = LuaScript.load(__file__, "tag", clock=True)
INVALIDATE_TAG = LuaScript.load(__file__, "invalidate_tag", clock=True)
INVALIDATE_ENTRY = LuaScript.load(__file__, "invalidate_entry", lease=True)
DELETE = LuaScript.load(__file__, "delete", lease=True)
GET_OR_LEASE = LuaScript.load(__file__, "get_or_lease", lease=True)
RELEASE_LEASE = LuaScript.load(__file__, "release_lease", lease=True)


class Lookup(enum.IntEnum):
    """What get_or_lease.lua found (the first element of its reply)."""

    HIT = 1
    PENDING = 2
    LEASED = 3


@dataclass(frozen=True)
class Entry:
    """A key's answer: found or not, its value, and its time left."""

    key: str
    found: bool
    value: bytes = b""
    ttl_remaining: timedelta = timedelta(0)


class Pending:
    """Another caller's fill did not arrive within the wait."""


class Cache:
    """`default_ttl` applies to a Set without ttl or expire_at; `max_value` is the largest
    value, in bytes."""

    def __init__(self, redis: RedisBackend, default_ttl: timedelta, max_value: int) -> None:
        self._redis = redis
        self._keys = redis.keys("cache")
        self._tags = redis.keys("cachetag")
        self._default_ttl_ms = default_ttl // MILLISECOND
        self._max_value = max_value

    async def get(self, key: str) -> Entry:
        check_name("key", key)
        entry = _entry(key, await self._redis.eval(GET, [self._keys(key)], []))
        record().cache_lookups(int(entry.found), int(not entry.found))
        return entry

    async def get_many(self, keys: Sequence[str]) -> list[Entry]:
        """In request order; one round trip per node."""
        check_names("keys", keys, 1, MAX_KEYS)
        replies = await self._redis.run(*(Command.eval(GET, [self._keys(k)], []) for k in keys))
        entries = [_entry(key, reply) for key, reply in zip(keys, replies, strict=True)]
        hits = sum(entry.found for entry in entries)
        record().cache_lookups(hits, len(entries) - hits)
        return entries

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: timedelta | None = None,
        expire_at: datetime | None = None,
        tags: Sequence[str] = (),
        only_if_absent: bool = False,
        lease_token: str = "",
    ) -> bool:
        """Store `value` under `key` with its `tags` (replacing the old ones); whether it
        was stored (see the contract for when it is not)."""
        check_name("key", key)
        if len(value) > self._max_value:
            raise InvalidArgument(
                "value", f"must be at most {self._max_value:,} bytes, got {len(value):,}"
            )
        check_names("tags", tags, 0, MAX_TAGS)
        check_token("lease_token", lease_token, required=False)
        mode, expiry = await self._expiry(ttl, expire_at)
        unique_tags = list(dict.fromkeys(tags))
        invalidated_at = 0
        if unique_tags:  # indexed first: an invalidation from now on finds the key
            markers = await self._redis.run(
                *(
                    Command.eval(
                        TAG, [self._tags(t), self._tags(t, "invalidated")], [key, mode, expiry]
                    )
                    for t in unique_tags
                )
            )
            invalidated_at = max(int(marker) for marker in markers)
        stored = await self._redis.eval(
            SET,
            self._entry_keys(key),
            [
                value,
                mode,
                expiry,
                "1" if only_if_absent else "0",
                lease_token,
                json.dumps(unique_tags),
                invalidated_at,
                self._fill_channel(key),
            ],
        )
        if lease_token and not stored:
            record().cache_fill_refused()
        return bool(stored)

    async def delete(self, keys: Sequence[str]) -> int:
        """Delete `keys`, ending fills of them; how many held a value."""
        check_names("keys", keys, 1, MAX_KEYS)
        replies = await self._redis.run(
            *(Command.eval(DELETE, self._entry_keys(k), [self._fill_channel(k)]) for k in keys)
        )
        return sum(replies)

    async def invalidate_tags(self, tags: Sequence[str]) -> int:
        """Delete the entries that carry any of `tags` now; how many."""
        check_names("tags", tags, 1, MAX_TAGS)
        wanted = json.dumps(dict.fromkeys(tags, True))
        lease_ms = MAX_LEASE // MILLISECOND
        await self._redis.run(
            *(
                Command.eval(INVALIDATE_TAG, [self._tags(t, "invalidated")], [lease_ms])
                for t in tags
            )
        )
        deleted = 0
        for tag in dict.fromkeys(tags):
            async for members in self._redis.sorted_set_members(self._tags(tag), SCAN_DELETE_CHUNK):
                replies = await self._redis.run(
                    *(
                        Command.eval(
                            INVALIDATE_ENTRY,
                            self._entry_keys(key),
                            [wanted, self._fill_channel(key)],
                        )
                        for key in map(bytes.decode, members)
                    )
                )
                deleted += sum(replies)
        return deleted

    async def invalidate_prefix(self, prefix: str) -> int:
        """Delete every entry whose key starts with `prefix` (and their fills); how many."""
        check_name("prefix", prefix)
        deleted = 0
        async for keys in self._redis.scan(self._keys.matching(prefix)):
            replies = await self._redis.run(*(Command(("UNLINK", key)) for key in keys))
            entries = (reply for key, reply in zip(keys, replies, strict=True) if _is_entry(key))
            deleted += sum(entries)
        return deleted

    async def get_or_lease(
        self,
        key: str,
        lease_ttl: timedelta | None,
        wait: timedelta | None = None,
        time_left: float | None = None,
    ) -> Entry | Lease | Pending:
        """The value of `key`; on a miss, a lease to fill it if nobody has one, else (after
        waiting up to `wait`, and `time_left` seconds) the value another caller filled."""
        check_name("key", key)
        lease_ms = checked_ms("lease_ttl", lease_ttl, MILLISECOND, MAX_LEASE, required=True)
        wait_ms = optional_ttl_ms("wait_timeout", wait, MAX_LEASE)
        token = new_token()
        answer, _ = await self._lease_or_value(key, token, lease_ms)
        hit = isinstance(answer, Entry)
        record().cache_lookups(int(hit), int(not hit))
        if not hit:
            record().cache_lease(granted=not isinstance(answer, Pending))
        if not isinstance(answer, Pending) or not wait_ms:
            return answer

        async def attempt() -> tuple[Entry | Lease | Pending, int | None]:
            # Woken by the fill, or when the filler's lease would run out.
            answer, leased_ms = await self._lease_or_value(key, token, lease_ms)
            return answer, leased_ms if isinstance(answer, Pending) else None

        channel = self._fill_channel(key)
        return await wait_for(self._redis, channel, attempt, from_ms(wait_ms), time_left)

    async def release_lease(self, key: str, token: str) -> bool:
        """End the fill lease of `key` if `token` holds it, waking the callers that wait
        for the fill; whether it ended (False: the token no longer held it; nothing
        changed)."""
        check_name("key", key)
        check_token("lease_token", token)
        released = await self._redis.eval(
            RELEASE_LEASE, [self._keys(key, "lease")], [token, self._fill_channel(key)]
        )
        return int(released) == 1

    async def _lease_or_value(
        self, key: str, token: str, lease_ms: int
    ) -> tuple[Entry | Lease | Pending, int]:
        """The entry, a lease to fill it, or Pending and the ms left of another's lease. A
        lease granted to a caller gone meanwhile is given back (`granted_or_given_back`):
        the next caller takes it, rather than waiting for it to expire."""

        async def attempt() -> tuple[Entry | Lease | Pending, int]:
            found, value, number = await self._redis.eval(
                GET_OR_LEASE, self._entry_keys(key), [token, lease_ms]
            )
            if found == Lookup.HIT:
                return Entry(key, True, value, from_ms(number)), 0
            if found == Lookup.LEASED:
                return granted(token, value, number), 0
            return Pending(), int(number)

        def lease_in(reply: tuple[Entry | Lease | Pending, int]) -> Lease | None:
            return reply[0] if isinstance(reply[0], Lease) else None

        async def give_back(lease: Lease) -> None:
            await self.release_lease(key, lease.token)

        return await granted_or_given_back(attempt(), lease_in, give_back)

    async def _expiry(self, ttl: timedelta | None, expire_at: datetime | None) -> tuple[str, int]:
        """("ttl", ms from now) or ("at", ms since the epoch); `expire_at` is checked
        against the Redis clock, the one every server shares."""
        if ttl is not None and expire_at is not None:
            raise InvalidArgument("expire_at", "give ttl or expire_at, not both")
        if expire_at is not None:
            at_ms = epoch_ms(expire_at)
            now_ms = epoch_ms(await self._redis.now())
            if at_ms <= now_ms:
                raise InvalidArgument("expire_at", "must be in the future")
            if at_ms - now_ms > MAX_TTL // MILLISECOND:
                raise InvalidArgument(
                    "expire_at",
                    f"must be at most {length(MAX_TTL)} ahead; "
                    f"got {seconds_text(from_ms(at_ms - now_ms))} ahead",
                )
            return "at", at_ms
        return "ttl", optional_ttl_ms("ttl", ttl, MAX_TTL) or self._default_ttl_ms

    def _entry_keys(self, key: str) -> list[str]:
        """The entry of `key`, and its fill lease (one slot)."""
        return [self._keys(key), self._keys(key, "lease")]

    def _fill_channel(self, key: str) -> bytes:
        return self._keys.channel(key)


def _entry(key: str, reply: list[object]) -> Entry:
    found, value, left_ms = reply
    if not found:
        return Entry(key, False)
    assert isinstance(value, bytes) and isinstance(left_ms, int)
    return Entry(key, True, value, from_ms(left_ms))


def _is_entry(key: bytes) -> bool:
    """An entry's key ends with its tag's brace; a lease's with ":lease"."""
    return key.endswith(b"}")
