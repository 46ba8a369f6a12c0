"""Durable events over Redis Streams: append, replay, and consumer groups with
acknowledgements, redelivery and dead letters.

A stream is one Redis stream. Its dead-letter stream `<name>:dead` (itself a stream: it
can be read, consumed and trimmed by that name), its retention, its idempotency keys and,
per group, the time each pending entry was first delivered, are keys that share its hash
tag (`_Keys`), so every script touches one Cluster slot.

Consumers hold no Redis connection of their own. An Append publishes a wake-up on the
stream's channel (in its script); each consumer subscribes to it through the backend's
shared Pub/Sub connection, and when woken, when an acknowledgement frees room, and at
least every FALLBACK_SECONDS in case a wake-up was lost, runs one script that claims the
group's entries pending longer than its ack timeout (redeliveries, XAUTOCLAIM) and reads
new ones (XREADGROUP without BLOCK), up to its room: max_in_flight less what it has
delivered and not had acknowledged (a delivery older than the ack timeout stops counting:
it is up for redelivery). Entries redelivered after max_deliveries go to the dead-letter
stream in the same script, acknowledged.
"""

import asyncio
import contextlib
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from patterns_server.core.errors import Aborted, InvalidArgument, ResourceExhausted
from patterns_server.core.units import epoch_ms, from_ms, instant_ms
from patterns_server.core.validation import check_count, check_name, checked_ms
from patterns_server.storage import LuaScript, RedisBackend, Subscription

MAX_GROUP_BYTES = 256
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_HEADERS = 64
MAX_HEADER_NAME_BYTES = 256
MAX_HEADER_VALUE_BYTES = 4096
MAX_HEADERS_BYTES = 64 * 1024
RESERVED_HEADER_PREFIX = "dead."
MAX_IDEMPOTENCY_KEY_BYTES = 256
DEFAULT_IDEMPOTENCY_WINDOW = timedelta(hours=24)
MIN_IDEMPOTENCY_WINDOW = timedelta(seconds=1)
MAX_IDEMPOTENCY_WINDOW = timedelta(days=7)
DEFAULT_READ_LIMIT = 100
MAX_READ_LIMIT = 1000
DEFAULT_MAX_IN_FLIGHT = 10
MAX_IN_FLIGHT = 10_000
DEFAULT_ACK_TIMEOUT = timedelta(seconds=30)
MIN_ACK_TIMEOUT = timedelta(milliseconds=100)
MAX_ACK_TIMEOUT = timedelta(days=1)
DEFAULT_MAX_DELIVERIES = 5
MAX_DELIVERIES = 1000
MAX_IDS = 10_000
MAX_LEN = 2**53
MIN_AGE = timedelta(seconds=1)
MAX_AGE = timedelta(days=3650)
# Info counts a group's lag where Redis does not say it (6.2; 7 after deletions) up to this:
# counting reads the entries (up to 1 MiB each) inside a script, which holds Redis meanwhile.
MAX_COUNTED_LAG = 1_000
# Entries one script takes for a consumer at most (its reply holds them all: up to 1 MiB
# each); a consumer with more room runs it again at once.
MAX_FETCH = 100
# A consumer reads at least this often, in case a wake-up was lost.
FALLBACK_SECONDS = 1.0
WAKEUP_BUFFER = 64  # wake-ups left unread (never: a task drains them) before resubscribing

DEAD_SUFFIX = ":dead"
_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")
_MAX_ID_PART = 2**64 - 1

APPEND = LuaScript.load(__file__, "append", clock=True)
READ = LuaScript.load(__file__, "read")
TRIM = LuaScript.load(__file__, "trim", clock=True)
OPEN = LuaScript.load(__file__, "open")
DELIVER = LuaScript.load(__file__, "deliver", clock=True)
ACK = LuaScript.load(__file__, "ack")
NACK = LuaScript.load(__file__, "nack")
INFO = LuaScript.load(__file__, "info")
DELETE_GROUP = LuaScript.load(__file__, "delete_group")


class Start(enum.Enum):
    """Where a group that Consume creates starts."""

    NEW = 1
    EARLIEST = 2
    AT_ID = 3
    AT_TIME = 4


@dataclass(frozen=True)
class Entry:
    """One entry of a stream."""

    id: str
    payload: bytes
    headers: dict[str, str]

    @property
    def appended_at(self) -> datetime:
        return instant_ms(int(self.id.split("-", 1)[0]))


@dataclass(frozen=True)
class Delivery:
    """An entry delivered to a consumer: which delivery of it this is, and when it was
    first delivered in the group (Redis clock)."""

    entry: Entry
    delivery_count: int
    first_delivered_at: datetime


@dataclass(frozen=True)
class Retention:
    """A stream's bounds: about max_len entries (0: none), entries younger than max_age
    (None: none)."""

    max_len: int = 0
    max_age: timedelta | None = None


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    pending: int
    idle: timedelta


@dataclass(frozen=True)
class GroupInfo:
    name: str
    pending: int
    last_delivered_id: str
    lag: int
    consumers: list[ConsumerInfo]


@dataclass(frozen=True)
class StreamInfo:
    """What Info says of a stream (exists False: there is none, and the rest is empty)."""

    exists: bool
    length: int = 0
    first_id: str = ""
    last_id: str = ""
    retention: Retention = field(default_factory=Retention)
    groups: list[GroupInfo] = field(default_factory=list)


@dataclass(frozen=True)
class ConsumerSettings:
    """What a consumer runs with: the request's values or their defaults."""

    max_in_flight: int
    ack_timeout: timedelta
    max_deliveries: int


class _Keys:
    """The keys of one stream name. A name ending in ":dead" (k times) is the dead-letter
    stream of the name without it: its keys are the base name's with ":dead" k times, so a
    stream and its dead letters share a hash tag, and the mapping stays injective (a base
    never ends in ":dead")."""

    def __init__(self, redis: RedisBackend, name: str) -> None:
        keys = redis.keys("streams")
        base, depth = name, 0
        while base.endswith(DEAD_SUFFIX):
            base, depth = base[: -len(DEAD_SUFFIX)], depth + 1
        level = str(depth)
        self.stream = keys(base, *["dead"] * depth)
        self.dead = keys(base, *["dead"] * (depth + 1))
        self.retention = keys(base, "retention", level)
        self._keys, self._base, self._level = keys, base, level
        self.channel = keys.channel(name)
        self.dead_channel = keys.channel(name + DEAD_SUFFIX)

    def idempotency(self, key: str) -> str:
        return self._keys(self._base, "idempotency", self._level, key)

    def first_deliveries(self, group: str) -> str:
        return self._keys(self._base, "first", self._level, group)


class Streams:
    def __init__(self, redis: RedisBackend) -> None:
        self._redis = redis

    async def append(
        self,
        stream: str,
        payload: bytes,
        headers: Mapping[str, str],
        idempotency_key: str = "",
        idempotency_window: timedelta | None = None,
    ) -> tuple[str, bool]:
        """Append an entry: its id, and whether it is a duplicate (an earlier append with
        the idempotency key appended it, and this one nothing)."""
        check_name("stream", stream)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise InvalidArgument(
                "payload", f"must be at most {MAX_PAYLOAD_BYTES:,} bytes, got {len(payload):,}"
            )
        fields = _fields_of(payload, headers)
        keys = _Keys(self._redis, stream)
        script_keys = [keys.stream, keys.retention]
        window_ms = 0
        if idempotency_key:
            check_name("idempotency_key", idempotency_key, MAX_IDEMPOTENCY_KEY_BYTES)
            window_ms = checked_ms(
                "idempotency_window",
                idempotency_window,
                MIN_IDEMPOTENCY_WINDOW,
                MAX_IDEMPOTENCY_WINDOW,
            ) or (DEFAULT_IDEMPOTENCY_WINDOW // timedelta(milliseconds=1))
            script_keys.append(keys.idempotency(idempotency_key))
        elif idempotency_window:
            raise InvalidArgument("idempotency_window", "is only for an idempotency_key")
        entry_id, duplicate = await self._redis.eval(
            APPEND, script_keys, [keys.channel, window_ms, *fields]
        )
        return _text(entry_id), bool(duplicate)

    async def read(
        self,
        stream: str,
        after_id: str | None = None,
        at_time: datetime | None = None,
        limit: int = 0,
    ) -> list[Entry]:
        """Entries in id order: after `after_id`, or from `at_time`, or from the first."""
        check_name("stream", stream)
        if after_id is not None and at_time is not None:
            raise InvalidArgument("start", "give after_id or at_time, not both")
        if not 0 <= limit <= MAX_READ_LIMIT:
            raise InvalidArgument(
                "limit", f"must be 0 (for 100) to {MAX_READ_LIMIT:,}, got {limit:,}"
            )
        start = "-"
        if after_id is not None:
            start = "(" + _checked_id("after_id", after_id)
            if after_id == f"{_MAX_ID_PART}-{_MAX_ID_PART}":
                return []  # nothing can follow the last id there can be (Redis refuses it)
        elif at_time is not None:
            start = str(_checked_ms_time("at_time", at_time))
        keys = _Keys(self._redis, stream)
        reply = await self._redis.eval(READ, [keys.stream], [start, limit or DEFAULT_READ_LIMIT])
        return [_entry(raw) for raw in reply]

    async def info(self, stream: str) -> StreamInfo:
        check_name("stream", stream)
        keys = _Keys(self._redis, stream)
        reply = await self._redis.eval(INFO, [keys.stream, keys.retention], [MAX_COUNTED_LAG])
        if not reply:
            return StreamInfo(exists=False)
        length, first, last, max_len, max_age, groups = reply
        return StreamInfo(
            exists=True,
            length=int(length),
            first_id=_text(first),
            last_id=_text(last) if _text(last) != "0-0" or int(length) else "",
            retention=Retention(int(max_len), from_ms(int(max_age)) if int(max_age) else None),
            groups=[
                GroupInfo(
                    name=_text(name),
                    pending=int(pending),
                    last_delivered_id=_text(last_delivered),
                    lag=int(lag),
                    consumers=[
                        ConsumerInfo(_text(consumer), int(held), from_ms(int(idle)))
                        for consumer, held, idle in consumers
                    ],
                )
                for name, pending, last_delivered, lag, consumers in groups
            ],
        )

    async def trim(self, stream: str, bounds: Retention) -> int:
        """Delete entries beyond `bounds` once: how many went."""
        check_name("stream", stream)
        max_len, max_age_ms = _checked_retention("bounds", bounds)
        if not max_len and not max_age_ms:
            raise InvalidArgument("bounds", "set max_len or max_age (or both)")
        keys = _Keys(self._redis, stream)
        deleted = await self._redis.eval(
            TRIM, [keys.stream, keys.retention], ["trim", max_len, max_age_ms]
        )
        return int(deleted)

    async def set_retention(self, stream: str, retention: Retention) -> int:
        """Set the retention every later append applies, and apply it now: how many went."""
        check_name("stream", stream)
        max_len, max_age_ms = _checked_retention("retention", retention)
        keys = _Keys(self._redis, stream)
        deleted = await self._redis.eval(
            TRIM, [keys.stream, keys.retention], ["set", max_len, max_age_ms]
        )
        return int(deleted)

    async def delete_group(self, stream: str, group: str) -> bool:
        check_name("stream", stream)
        check_name("group", group, MAX_GROUP_BYTES)
        keys = _Keys(self._redis, stream)
        deleted = await self._redis.eval(
            DELETE_GROUP, [keys.stream, keys.first_deliveries(group)], [group]
        )
        return bool(deleted)

    async def consume(
        self,
        stream: str,
        group: str,
        consumer: str,
        start: Start = Start.NEW,
        start_id: str = "",
        start_time: datetime | None = None,
        max_in_flight: int = 0,
        ack_timeout: timedelta | None = None,
        max_deliveries: int = 0,
    ) -> "Consumer":
        """Open a consumer of `group` (created at `start` if absent), subscribed to the
        stream's wake-ups: use it with `async with`, which closes it."""
        check_name("stream", stream)
        check_name("group", group, MAX_GROUP_BYTES)
        check_name("consumer", consumer, MAX_GROUP_BYTES)
        if start is Start.AT_ID:
            begin = _checked_id("start_id", start_id)
        elif start_id:
            raise InvalidArgument("start_id", "is only for START_POSITION_AT_ID")
        if start is Start.AT_TIME:
            if start_time is None:
                raise InvalidArgument("start_time", "is required with START_POSITION_AT_TIME")
            ms = _checked_ms_time("start_time", start_time)
            # The last id before the time: the group starts at the first entry at it.
            begin = f"{ms - 1}-{_MAX_ID_PART}" if ms > 0 else "0-0"
        elif start_time is not None:
            raise InvalidArgument("start_time", "is only for START_POSITION_AT_TIME")
        if start is Start.NEW:
            begin = "$"
        elif start is Start.EARLIEST:
            begin = "0"
        if not 0 <= max_in_flight <= MAX_IN_FLIGHT:
            raise InvalidArgument(
                "max_in_flight",
                f"must be 0 (for {DEFAULT_MAX_IN_FLIGHT}) to {MAX_IN_FLIGHT:,}, "
                f"got {max_in_flight:,}",
            )
        timeout_ms = checked_ms("ack_timeout", ack_timeout, MIN_ACK_TIMEOUT, MAX_ACK_TIMEOUT)
        if not 0 <= max_deliveries <= MAX_DELIVERIES:
            raise InvalidArgument(
                "max_deliveries",
                f"must be 0 (for {DEFAULT_MAX_DELIVERIES}) to {MAX_DELIVERIES:,}, "
                f"got {max_deliveries:,}",
            )
        settings = ConsumerSettings(
            max_in_flight or DEFAULT_MAX_IN_FLIGHT,
            from_ms(timeout_ms) if timeout_ms else DEFAULT_ACK_TIMEOUT,
            max_deliveries or DEFAULT_MAX_DELIVERIES,
        )
        keys = _Keys(self._redis, stream)
        wakeups = await self._redis.subscribe([keys.channel], [], WAKEUP_BUFFER, WAKEUP_BUFFER)
        try:
            created = await self._redis.eval(OPEN, [keys.stream], [group, consumer, begin])
        except BaseException:
            await wakeups.close()
            raise
        return Consumer(self._redis, keys, group, consumer, settings, bool(created), wakeups)


class Consumer:
    """An open consumer of a group: `deliveries()` waits for entries to handle, `ack` and
    `nack` give them back. Closing it (leaving `async with`) leaves what it has not had
    acknowledged pending, for redelivery after the ack timeout."""

    def __init__(
        self,
        redis: RedisBackend,
        keys: _Keys,
        group: str,
        name: str,
        settings: ConsumerSettings,
        group_created: bool,
        wakeups: Subscription,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._group = group
        self._name = name
        self.settings = settings
        self.group_created = group_created
        self._wakeups = wakeups
        self._first_deliveries = keys.first_deliveries(group)
        self._timeout_ms = settings.ack_timeout // timedelta(milliseconds=1)
        # Deliveries not yet acknowledged: id -> when they stop counting (loop time).
        self._in_flight: dict[str, float] = {}
        self._nudge = asyncio.Event()
        self._cursor = "0-0"
        self._failure: BaseException | None = None
        self._listener = asyncio.ensure_future(self._listen())
        # Acks given to `ack_soon`, not yet sent; the task sending them, while it runs.
        self._unsent_acks: list[str] = []
        self._acking: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "Consumer":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening; acks given to `ack_soon` are sent first (for a second at most:
        what is not acknowledged then comes back by redelivery)."""
        if self._acking is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._acking), 1.0)
        self._listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._listener
        await self._wakeups.close()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def fail(self, error: BaseException) -> None:
        """End the consumer: `deliveries()` raises `error` from now on."""
        if self._failure is None:
            self._failure = error
        self._nudge.set()

    async def deliveries(self) -> list[Delivery]:
        """The next entries to handle (one or more), once there are some and room for
        them: redeliveries first, then new entries in id order."""
        loop = asyncio.get_running_loop()
        while True:
            self._nudge.clear()  # set again by what happens from here: nothing is missed
            if self._failure is not None:
                raise self._failure
            now = loop.time()
            for entry_id in [i for i, ends in self._in_flight.items() if ends <= now]:
                del self._in_flight[entry_id]
            room = self.settings.max_in_flight - len(self._in_flight)
            if room > 0:
                delivered = await self._deliver(min(room, MAX_FETCH))
                if delivered:
                    ends = loop.time() + self.settings.ack_timeout.total_seconds()
                    for delivery in delivered:
                        self._in_flight[delivery.entry.id] = ends
                    return delivered
            pause = FALLBACK_SECONDS
            if self._in_flight:
                pause = min(pause, max(0.001, min(self._in_flight.values()) - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._nudge.wait()

    async def ack(self, ids: Sequence[str]) -> int:
        """Acknowledge deliveries: how many were pending."""
        _check_ids("ids", ids)
        acked = await self._redis.eval(
            ACK, [self._keys.stream, self._first_deliveries], [self._group, *ids]
        )
        self._release(ids)
        return int(acked)

    def ack_soon(self, ids: Sequence[str]) -> None:
        """Acknowledge deliveries without waiting: the ids (checked now) go to Redis with
        those given meanwhile, in one script per round trip, so that a consumer acking
        entry by entry is not held to one round trip per ack. A failure ends the consumer
        (`deliveries()` raises it)."""
        _check_ids("ids", ids)
        self._unsent_acks.extend(ids)
        if self._acking is None:
            self._acking = asyncio.ensure_future(self._send_acks())

    async def _send_acks(self) -> None:
        try:
            while self._unsent_acks:
                ids = self._unsent_acks[:MAX_IDS]
                del self._unsent_acks[:MAX_IDS]
                await self.ack(ids)
        except Exception as error:
            self.fail(error)
        finally:
            self._acking = None

    async def nack(self, ids: Sequence[str], delay: timedelta | None = None) -> int:
        """Give deliveries back for redelivery after `delay` (at most the ack timeout):
        how many were pending."""
        _check_ids("ids", ids)
        delay_ms = checked_ms("delay", delay, timedelta(milliseconds=1), self.settings.ack_timeout)
        idle = self._timeout_ms - delay_ms
        given = await self._redis.eval(
            NACK, [self._keys.stream], [self._group, self._name, idle, self._keys.channel, *ids]
        )
        if given == -1:
            raise self._group_deleted()
        self._release(ids)
        return int(given)

    def _group_deleted(self) -> Aborted:
        return Aborted(f"the group {self._group!r} was deleted", "GROUP_DELETED")

    def _release(self, ids: Sequence[str]) -> None:
        for entry_id in ids:
            self._in_flight.pop(entry_id, None)
        self._nudge.set()

    async def _deliver(self, room: int) -> list[Delivery]:
        keys = self._keys
        reply = await self._redis.eval(
            DELIVER,
            [keys.stream, keys.dead, self._first_deliveries],
            [
                self._group,
                self._name,
                room,
                self._timeout_ms,
                self.settings.max_deliveries,
                self._cursor,
                keys.dead_channel,
            ],
        )
        if _text(reply[0]) == "NOGROUP":
            raise self._group_deleted()
        self._cursor = _text(reply[0])
        return [
            Delivery(_entry([entry_id, fields]), int(count), instant_ms(int(first)))
            for entry_id, fields, count, first in reply[2:]
        ]

    async def _listen(self) -> None:
        """Turn wake-ups into nudges, draining them as they come (the buffer never fills);
        when the subscription ends (Redis lost, shutdown), end the consumer with its error."""
        wakeups = self._wakeups
        while True:
            try:
                await wakeups.take(WAKEUP_BUFFER, WAKEUP_BUFFER)
            except ResourceExhausted:  # fell behind after all: subscribe anew
                await wakeups.close()
                try:
                    wakeups = self._wakeups = await self._redis.subscribe(
                        [self._keys.channel], [], WAKEUP_BUFFER, WAKEUP_BUFFER
                    )
                except Exception as error:
                    self.fail(error)
                    return
            except Exception as error:
                self.fail(error)
                return
            self._nudge.set()


def _fields_of(payload: bytes, headers: Mapping[str, str]) -> list[bytes | str]:
    """An entry's fields: 'p' the payload, 'h:<name>' per header (common.lua)."""
    check_count("headers", headers, 0, MAX_HEADERS)
    fields: list[bytes | str] = ["p", payload]
    total = 0
    for name, value in headers.items():
        where = f"headers[{name!r}]"
        check_name(where, name, MAX_HEADER_NAME_BYTES)
        if name.startswith(RESERVED_HEADER_PREFIX):
            raise InvalidArgument(
                where, f"names starting {RESERVED_HEADER_PREFIX!r} are the server's"
            )
        size = len(value.encode())
        if size > MAX_HEADER_VALUE_BYTES:
            raise InvalidArgument(
                where, f"the value must be at most {MAX_HEADER_VALUE_BYTES:,} bytes, got {size:,}"
            )
        total += len(name.encode()) + size
        fields += ["h:" + name, value]
    if total > MAX_HEADERS_BYTES:
        raise InvalidArgument(
            "headers", f"must be at most {MAX_HEADERS_BYTES:,} bytes in all, got {total:,}"
        )
    return fields


def _entry(raw: Any) -> Entry:
    entry_id, fields = raw
    payload = b""
    headers: dict[str, str] = {}
    for index in range(0, len(fields), 2):
        name, value = fields[index], fields[index + 1]
        if name == b"p":
            payload = value
        elif name.startswith(b"h:"):
            headers[name[2:].decode()] = value.decode()
    return Entry(_text(entry_id), payload, headers)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _checked_id(field_name: str, entry_id: str) -> str:
    """A stream id, "<ms>-<seq>" or "<ms>", each part below 2^64."""
    if not _ID.match(entry_id) or any(int(part) > _MAX_ID_PART for part in entry_id.split("-")):
        raise InvalidArgument(
            field_name, f'must be a stream id "<ms>-<seq>" or "<ms>", got {entry_id!r}'
        )
    return entry_id


def _check_ids(field_name: str, ids: Sequence[str]) -> None:
    check_count(field_name, ids, 1, MAX_IDS)
    for index, entry_id in enumerate(ids):
        _checked_id(f"{field_name}[{index}]", entry_id)


def _checked_ms_time(field_name: str, instant: datetime) -> int:
    ms = epoch_ms(instant)
    if ms < 0:
        raise InvalidArgument(field_name, "must be 1970 or later")
    return ms


def _checked_retention(field_name: str, retention: Retention) -> tuple[int, int]:
    if not 0 <= retention.max_len <= MAX_LEN:
        raise InvalidArgument(
            f"{field_name}.max_len", f"must be 0 (none) to 2^53, got {retention.max_len:,}"
        )
    max_age_ms = checked_ms(f"{field_name}.max_age", retention.max_age, MIN_AGE, MAX_AGE)
    return retention.max_len, max_age_ms
