"""Connections that are replaced, before a command is sent, when Redis has closed them.

Redis closes idle connections of its own accord (its `timeout` setting, CLIENT KILL, a
failover), and so do proxies and NATs. A pooled connection closed that way would fail the
next command sent on it, and the server never retries a command (a script must not run
twice). redis-py's pools check for this only in some configurations (not for Cluster
nodes, nor where its maintenance notifications are on, its default), so every connection
of the backend checks itself: when Redis's end has already closed (or left unread data on)
a connection that is about to carry a command, nothing of that command has been sent yet,
and reconnecting first is safe.
"""

from typing import Any, TypeVar

from redis.asyncio.connection import AbstractConnection

C = TypeVar("C", bound=AbstractConnection)


def replacing_closed(base: type[C]) -> type[C]:
    """`base` (a redis-py connection class) with the check described above."""

    class ReplacingClosed(base):  # type: ignore[valid-type,misc]
        _connecting = False

        async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
            # The handshake sends commands too; they must not trigger the check.
            self._connecting = True
            try:
                await super().connect_check_health(*args, **kwargs)
            finally:
                self._connecting = False

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if self.is_connected and not self._connecting and await self.can_read():
                await self.disconnect()
            await super().send_packed_command(command, check_health)

    ReplacingClosed.__name__ = ReplacingClosed.__qualname__ = f"ReplacingClosed{base.__name__}"
    return ReplacingClosed
