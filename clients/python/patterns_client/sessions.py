"""Sessions: sliding expiry, a per-user index, a cap per user, log out everywhere,
rotation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from patterns.session.v1 import session_pb2 as pb
from patterns.session.v1 import session_pb2_grpc

from patterns_client._calls import AsyncCalls, Calls
from patterns_client._convert import duration, to_datetime
from patterns_client.errors import NotFound

__all__ = ["AsyncSessions", "Session", "SessionList", "Sessions"]


@dataclass(frozen=True)
class Session:
    """A session; times are aware UTC datetimes from the Redis clock. Keep `id` secret."""

    id: str
    user_id: str
    attributes: dict[str, str]
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class SessionList:
    """A page of a user's sessions (newest first), how many live sessions it has, and the
    token of the next page ("" after the last)."""

    sessions: list[Session] = field(default_factory=list)
    total: int = 0
    next_page_token: str = ""


def _session(message: pb.Session) -> Session:
    return Session(
        message.id,
        message.user_id,
        dict(message.attributes),
        to_datetime(message.created_at),
        to_datetime(message.last_seen_at),
        to_datetime(message.expires_at),
    )


def _session_list(response: pb.ListResponse) -> SessionList:
    return SessionList(
        [_session(s) for s in response.sessions], int(response.total), response.next_page_token
    )


def _create_request(
    user_id: str, ttl: timedelta, attributes: Mapping[str, str] | None, max_per_user: int
) -> pb.CreateRequest:
    return pb.CreateRequest(
        user_id=user_id,
        ttl=duration(ttl),
        attributes=dict(attributes or {}),
        max_per_user=max_per_user,
    )


def _update_request(
    session_id: str, set: Mapping[str, str] | None, remove: Sequence[str]
) -> pb.UpdateRequest:
    return pb.UpdateRequest(id=session_id, set=dict(set or {}), remove=list(remove))


class Sessions:
    """`client.sessions` of the blocking client."""

    def __init__(self, calls: Calls, stub: session_pb2_grpc.SessionsStub) -> None:
        self._calls = calls
        self._stub = stub

    def create(
        self,
        user_id: str,
        *,
        ttl: timedelta,
        attributes: Mapping[str, str] | None = None,
        max_per_user: int = 0,
    ) -> Session:
        """Start a session that ends `ttl` after its last touch; beyond `max_per_user`
        (0: the server's default), the user's sessions that would end soonest end."""
        request = _create_request(user_id, ttl, attributes, max_per_user)
        return _session(self._calls.unary(self._stub.Create, request).session)

    def get(self, session_id: str, *, touch: bool = False) -> Session | None:
        """The session (with `touch`, its end slid to its ttl from now); None when it has
        ended, or never was."""
        try:
            response = self._calls.unary(self._stub.Get, pb.GetRequest(id=session_id, touch=touch))
        except NotFound:
            return None
        return _session(response.session)

    def update(
        self,
        session_id: str,
        *,
        set: Mapping[str, str] | None = None,
        remove: Sequence[str] = (),
    ) -> Session:
        """Set and remove attributes, atomically; NotFound when the session has ended."""
        request = _update_request(session_id, set, remove)
        return _session(self._calls.unary(self._stub.Update, request).session)

    def destroy(self, session_id: str) -> bool:
        """End a session; whether there was one."""
        response = self._calls.unary(self._stub.Destroy, pb.DestroyRequest(id=session_id))
        return bool(response.destroyed)

    def list(self, user_id: str, *, limit: int = 0, page_token: str = "") -> SessionList:
        """A page of the user's live sessions, newest first: up to `limit` (0: 100) from
        the newest, or after the page whose `next_page_token` is `page_token`; and the
        total. A page can hold fewer than `limit` while more follow: page until
        `next_page_token` is ""."""
        request = pb.ListRequest(user_id=user_id, limit=limit, page_token=page_token)
        return _session_list(self._calls.unary(self._stub.List, request))

    def destroy_all(self, user_id: str, *, except_id: str = "") -> int:
        """End every session of the user but `except_id`; how many. The server ends them
        500 at a time: after a failure part way, call again to end the rest."""
        request = pb.DestroyAllRequest(user_id=user_id, except_id=except_id)
        return int(self._calls.unary(self._stub.DestroyAll, request).destroyed)

    def rotate(self, session_id: str) -> Session:
        """The same session under a new id (the old one is dead); NotFound when it has
        ended."""
        response = self._calls.unary(self._stub.Rotate, pb.RotateRequest(id=session_id))
        return _session(response.session)


class AsyncSessions:
    """`client.sessions` of the asyncio client: Sessions' methods as coroutines."""

    def __init__(self, calls: AsyncCalls, stub: session_pb2_grpc.SessionsStub) -> None:
        self._calls = calls
        self._stub = stub

    async def create(
        self,
        user_id: str,
        *,
        ttl: timedelta,
        attributes: Mapping[str, str] | None = None,
        max_per_user: int = 0,
    ) -> Session:
        """Start a session that ends `ttl` after its last touch; beyond `max_per_user`
        (0: the server's default), the user's sessions that would end soonest end."""
        request = _create_request(user_id, ttl, attributes, max_per_user)
        return _session((await self._calls.unary(self._stub.Create, request)).session)

    async def get(self, session_id: str, *, touch: bool = False) -> Session | None:
        """The session (with `touch`, its end slid to its ttl from now); None when it has
        ended, or never was."""
        try:
            response = await self._calls.unary(
                self._stub.Get, pb.GetRequest(id=session_id, touch=touch)
            )
        except NotFound:
            return None
        return _session(response.session)

    async def update(
        self,
        session_id: str,
        *,
        set: Mapping[str, str] | None = None,
        remove: Sequence[str] = (),
    ) -> Session:
        """Set and remove attributes, atomically; the session after. NotFound when the
        session has ended."""
        request = _update_request(session_id, set, remove)
        return _session((await self._calls.unary(self._stub.Update, request)).session)

    async def destroy(self, session_id: str) -> bool:
        """End a session; whether there was one."""
        response = await self._calls.unary(self._stub.Destroy, pb.DestroyRequest(id=session_id))
        return bool(response.destroyed)

    async def list(self, user_id: str, *, limit: int = 0, page_token: str = "") -> SessionList:
        """A page of the user's live sessions, newest first: up to `limit` (0: 100) from
        the newest, or after the page whose `next_page_token` is `page_token`; and the
        total. A page can hold fewer than `limit` while more follow: page until
        `next_page_token` is ""."""
        request = pb.ListRequest(user_id=user_id, limit=limit, page_token=page_token)
        return _session_list(await self._calls.unary(self._stub.List, request))

    async def destroy_all(self, user_id: str, *, except_id: str = "") -> int:
        """End every session of the user but `except_id`; how many. The server ends them
        500 at a time: after a failure part way, call again to end the rest."""
        request = pb.DestroyAllRequest(user_id=user_id, except_id=except_id)
        return int((await self._calls.unary(self._stub.DestroyAll, request)).destroyed)

    async def rotate(self, session_id: str) -> Session:
        """The same session under a new id (the old one is dead); NotFound when it has
        ended."""
        response = await self._calls.unary(self._stub.Rotate, pb.RotateRequest(id=session_id))
        return _session(response.session)
