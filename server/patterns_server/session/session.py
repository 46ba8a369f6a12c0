"""Sessions over Redis: sliding expiry, a per-user index, a cap per user, rotation.

A session id is 256 random bits and a tag, 96 bits of SHA-256 of the user id, both
base64url: `<random 43>.<tag 16>`. The tag is the Cluster hash tag of the user's keys, so
a session, its user's other sessions and the user's index share one slot, and every call
is one script that changes them together: nothing is half-written, whatever fails, and an
Update or a touch never brings back a session that was destroyed or has expired (the
script finds it gone). From an id alone the server finds the session and its index, with
no lookup table.

The user's index is a sorted set of the user's sessions scored by when each ends; a second
one orders them by creation, for List's pages. Each script that writes them first drops
sessions that have ended (up to SLICE a run), and they live as long as the longest of
them: dead ids never accumulate. Two users whose ids share the 96-bit tag (about one
chance in 10^11 among a billion users) would share an index, and see each other's
sessions in List.

No script's work grows with the number of sessions a user has: each handles at most SLICE
of them (plus a page), and the calls that may need more (DestroyAll, a Create that lowers
the cap far below what the user has, and List while it indexes sessions written by a
server older than the creation index) run their script again until done, each run atomic.
"""

import base64
import enum
import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from patterns_server.core.errors import InvalidArgument, NotFound
from patterns_server.core.units import instant_ms
from patterns_server.core.validation import check_count, check_name, checked_ms
from patterns_server.storage import LuaScript, RedisBackend

MIN_TTL = timedelta(seconds=1)
MAX_TTL = timedelta(days=365)
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_NAME_BYTES = 128
MAX_ATTRIBUTE_VALUE_BYTES = 4_096
MAX_PER_USER = 10_000
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1_000
RANDOM_BYTES = 32  # 256 bits, 43 base64url characters
TAG_BYTES = 12  # 96 bits, 16 base64url characters
ID_PATTERN = re.compile(r"([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{16})")
ATTRIBUTE = "a:"  # the prefix of an attribute's field in a session's hash
# The most sessions one script run ends, prunes or indexes (common.lua's SLICE): it keeps
# every run within about a millisecond of Redis time (docs/operations.md).
SLICE = 500
# How many build steps one List may take before it pages anyway: a full build of the
# largest index, twice (see list.lua).
MAX_BUILD_STEPS = 2 * MAX_PER_USER // SLICE + 2
PAGE_TOKEN = re.compile(r"[1-9][0-9]{0,15}")  # a creation score, in µs


CREATE = LuaScript.load(__file__, "create", clock=True)
GET = LuaScript.load(__file__, "get", clock=True)
UPDATE = LuaScript.load(__file__, "update", clock=True)
DESTROY = LuaScript.load(__file__, "destroy", clock=True)
LIST = LuaScript.load(__file__, "list", clock=True)
DESTROY_ALL = LuaScript.load(__file__, "destroy_all", clock=True)
ROTATE = LuaScript.load(__file__, "rotate", clock=True)


@dataclass(frozen=True)
class Session:
    """A session; times from the Redis clock."""

    id: str
    user_id: str
    attributes: dict[str, str]
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


class Updated(enum.IntEnum):
    """What update.lua did (the first element of its reply)."""

    NOT_FOUND = 0
    UPDATED = 1  # then the session
    TOO_MANY_ATTRIBUTES = 2  # then how many it would have carried


@dataclass(frozen=True)
class Page:
    """A page of List: sessions newest first, the user's live total, and the token of the
    next page ("" after the last)."""

    sessions: list[Session]
    total: int
    next_page_token: str


def session_not_found() -> NotFound:
    # The message never repeats the id: it is a secret, and errors get logged.
    return NotFound("no live session has this id", "SESSION_NOT_FOUND")


class Sessions:
    """`max_per_user` applies to a Create that gives none (0: MAX_PER_USER)."""

    def __init__(self, redis: RedisBackend, max_per_user: int = 0) -> None:
        if not 0 <= max_per_user <= MAX_PER_USER:
            raise ValueError(f"max_per_user must be 0 to {MAX_PER_USER:,}")
        self._redis = redis
        self._keys = redis.keys("session")
        self._max_per_user = max_per_user or MAX_PER_USER

    async def create(
        self,
        user_id: str,
        attributes: Mapping[str, str],
        ttl: timedelta | None,
        max_per_user: int = 0,
    ) -> Session:
        check_name("user_id", user_id)
        _check_attributes("attributes", attributes)
        ttl_ms = checked_ms("ttl", ttl, MIN_TTL, MAX_TTL, required=True)
        if not 0 <= max_per_user <= MAX_PER_USER:
            raise InvalidArgument(
                "max_per_user", f"must be 0 to {MAX_PER_USER:,}, got {max_per_user:,}"
            )
        random = secrets.token_urlsafe(RANDOM_BYTES)
        tag = _tag(user_id)
        args = [random, user_id, ttl_ms, max_per_user or self._max_per_user, *_fields(attributes)]
        while True:  # each run ends at most SLICE sessions beyond the cap, then creates
            reply = await self._redis.eval(CREATE, [self._keys(tag)], args)
            if reply:
                return _session(tag, reply)

    async def get(self, session_id: str, touch: bool = False) -> Session:
        random, tag = _parse(session_id)
        reply = await self._redis.eval(GET, [self._keys(tag)], [random, "1" if touch else "0"])
        return _found(tag, reply)

    async def update(
        self, session_id: str, assign: Mapping[str, str], remove: Sequence[str]
    ) -> Session:
        """Set the attributes of `assign` and remove those named in `remove`."""
        _check_attributes("set", assign)
        check_count("remove", remove, 0, MAX_ATTRIBUTES)
        for index, name in enumerate(remove):
            _check_attribute_name(f"remove[{index}]", name)
            if name in assign:
                raise InvalidArgument(f"remove[{index}]", f"{_shown(name)} is also in set")
        random, tag = _parse(session_id)
        removed = [ATTRIBUTE + name for name in dict.fromkeys(remove)]
        outcome, *reply = await self._redis.eval(
            UPDATE,
            [self._keys(tag)],
            [random, MAX_ATTRIBUTES, len(removed), *removed, *_fields(assign)],
        )
        if outcome == Updated.TOO_MANY_ATTRIBUTES:
            raise InvalidArgument(
                "set",
                f"would leave the session with {reply[0]} attributes, more than {MAX_ATTRIBUTES}",
            )
        if outcome == Updated.NOT_FOUND:
            raise session_not_found()
        return _session(tag, reply)

    async def destroy(self, session_id: str) -> bool:
        """Whether the id named a live session."""
        parts = _split(session_id)
        if parts is None:
            return False
        random, tag = parts
        return bool(await self._redis.eval(DESTROY, [self._keys(tag)], [random]))

    async def list(self, user_id: str, limit: int = 0, page_token: str = "") -> Page:
        """A page of the user's live sessions, newest first: up to `limit`, created before
        the point `page_token` marks (from the newest when none), and how many it has."""
        check_name("user_id", user_id)
        if not 0 <= limit <= MAX_LIST_LIMIT:
            raise InvalidArgument("limit", f"must be 0 to {MAX_LIST_LIMIT:,}, got {limit:,}")
        if page_token and not PAGE_TOKEN.fullmatch(page_token):
            raise InvalidArgument(
                "page_token", "is not a next_page_token of List: pass one back as it came"
            )
        tag = _tag(user_id)
        args: list[object] = [limit or DEFAULT_LIST_LIMIT, page_token]
        for step in range(MAX_BUILD_STEPS + 1):
            build = "1" if step == 0 else "0" if step < MAX_BUILD_STEPS else "2"
            total, *rest = await self._redis.eval(LIST, [self._keys(tag)], [*args, build])
            if total >= 0:  # else the creation index is still being built: again
                break
        next_token, *replies = rest
        return Page([_session(tag, r) for r in replies], int(total), next_token.decode())

    async def destroy_all(self, user_id: str, except_id: str = "") -> int:
        """End the user's sessions, but `except_id`'s, SLICE a run until none is left
        (sessions created meanwhile too); how many were live. A failure part way leaves
        the runs made done: calling again ends the rest."""
        check_name("user_id", user_id)
        tag = _tag(user_id)
        keep = ""
        if except_id:
            parts = _split(except_id)
            if parts is None or parts[1] != tag:
                raise InvalidArgument("except_id", "is not the id of a session of user_id")
            keep = parts[0]
        destroyed = 0
        while True:
            ended, more = await self._redis.eval(DESTROY_ALL, [self._keys(tag)], [keep])
            destroyed += int(ended)
            if not more:
                return destroyed

    async def rotate(self, session_id: str) -> Session:
        random, tag = _parse(session_id)
        new_random = secrets.token_urlsafe(RANDOM_BYTES)
        reply = await self._redis.eval(ROTATE, [self._keys(tag)], [random, new_random])
        return _found(tag, reply)


def _tag(user_id: str) -> str:
    """The user's hash tag: 96 bits of SHA-256 of its id, in base64url."""
    digest = hashlib.sha256(user_id.encode()).digest()[:TAG_BYTES]
    return base64.urlsafe_b64encode(digest).decode()


def _split(session_id: str) -> tuple[str, str] | None:
    """The random part and the tag of an id; None when it is not an id at all."""
    parsed = ID_PATTERN.fullmatch(session_id)
    if parsed is None:
        return None
    random, tag = parsed.groups()
    return random, tag


def _parse(session_id: str) -> tuple[str, str]:
    """As _split, but an id that is not one names no session: NOT_FOUND."""
    parts = _split(session_id)
    if parts is None:
        raise session_not_found()
    return parts


def _check_attributes(field: str, attributes: Mapping[str, str]) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidArgument(
            field, f"must hold at most {MAX_ATTRIBUTES} attributes, got {len(attributes):,}"
        )
    for name, value in attributes.items():
        _check_attribute_name(field, name)
        size = len(value.encode())
        if size > MAX_ATTRIBUTE_VALUE_BYTES:
            raise InvalidArgument(
                field,
                f"the value of {_shown(name)} must be at most {MAX_ATTRIBUTE_VALUE_BYTES:,} "
                f"bytes of UTF-8, got {size:,}",
            )


def _check_attribute_name(field: str, name: str) -> None:
    size = len(name.encode())
    if not 1 <= size <= MAX_ATTRIBUTE_NAME_BYTES:
        raise InvalidArgument(
            field,
            f"attribute name {_shown(name)} must be 1 to {MAX_ATTRIBUTE_NAME_BYTES} bytes "
            f"of UTF-8, got {size:,}",
        )


def _shown(name: str) -> str:
    """An attribute name for an error message, cut short when long."""
    return repr(name) if len(name) <= 40 else repr(name[:40]) + "..."


def _fields(attributes: Mapping[str, str]) -> list[str]:
    """Attributes as a session hash's fields and values, flat."""
    return [part for name, value in attributes.items() for part in (ATTRIBUTE + name, value)]


def _found(tag: str, reply: Any) -> Session:
    if reply is None:
        raise session_not_found()
    return _session(tag, reply)


def _session(tag: str, reply: Sequence[bytes]) -> Session:
    """A session from a script's reply: the random part of its id, then its hash."""
    fields = {reply[i].decode(): reply[i + 1].decode() for i in range(1, len(reply), 2)}
    last_seen = int(fields["l"])
    return Session(
        id=f"{reply[0].decode()}.{tag}",
        user_id=fields["u"],
        attributes={
            name[len(ATTRIBUTE) :]: value
            for name, value in fields.items()
            if name.startswith(ATTRIBUTE)
        },
        created_at=instant_ms(int(fields["c"])),
        last_seen_at=instant_ms(last_seen),
        expires_at=instant_ms(last_seen + int(fields["t"])),
    )
