"""What this server changes in redis-py, and the shapes of its replies that differ by
protocol: in one place, each with its reason and the upstream issue.

The server is tested with the redis-py releases pyproject.toml allows (the oldest and the
newest in CI); each patch checks the version it was written for and otherwise leaves
redis-py alone.

1. `install_packer()`: redis-py packs asyncio commands in Python (16 µs for one rate-limit
   EVALSHA, a tenth of a whole RPC's budget), while its sync connections use hiredis's C
   packer, which writes the same bytes (redis/redis-py#4176). It replaces
   `AbstractConnection.pack_command` process-wide, for the releases in PACKER_CHECKED
   (tests/test_storage.py pins that the bytes are the same for every command shape the
   server sends).
2. `replace_closed_connections(client)`: a pooled connection that Redis has closed (its
   `timeout`, CLIENT KILL, a failover, a proxy) fails the next command sent on it, and the
   server never retries a command (a script must not run twice). redis-py checks for this
   only in some configurations: not for Cluster nodes, nor when its maintenance
   notifications are on, the default of 8.x with RESP3 (redis/redis-py#4128). Every
   connection of the backend checks itself instead: when Redis's end has already closed
   a connection that is about to carry a command, nothing of that command has been sent,
   and reconnecting first is safe. The Cluster's node connections are made from
   `connection_kwargs["connection_class"]`, which this sets.
3. `refresh_topology(client)`: redis-py's asyncio Cluster client reads the topology again
   after a lone command fails on a connection error or CLUSTERDOWN, never after a
   pipeline's (redis/redis-py#3130): a master that failed over would keep its slots in
   the client for ever, each command sent to a dead or demoted node. The batcher marks
   the topology stale after any such failure (`topology_may_have_changed`); the next
   batch reads it from other nodes first (a frozen node asked first would hold it for a
   whole timeout). redis-py's private `_initialize` flag is what
   its own error handling sets (8.0 and 8.1).
4. `replacing_closed` also writes without a task per write: redis-py bounds each write
   by `asyncio.wait_for(drain(), socket_timeout)`, which (Python 3.11) makes a task for
   every command sent, even when the socket takes the bytes at once, as it nearly always
   does: 5% of a Check's server time. The write is the same `writelines`; only a write
   that the socket cannot take at once waits for it to drain, within the same timeout,
   with redis-py's errors (releases in WRITER_CHECKED).
5. `scan_members(reply)` and `scan_cursor(cursor)`: ZSCAN's pairs arrive flat (RESP2) or
   as pairs (RESP3), and the Cluster client answers SCAN's cursor as {node: cursor}.

Worked around elsewhere, without patching: redis-py can swallow a task cancellation that
lands mid-command (redis/redis-py#2028), so handlers never await it directly (the batcher
keeps a cancelled caller's commands unsent) and the health monitor is stopped by a flag,
not by cancelling it; and with RESP3 a subscribed connection's messages arrive as push
replies, which `read_response(push_request=True)` must ask for (storage/pubsub.py).
"""

import asyncio
import builtins
import logging
from typing import Any, TypeVar

import redis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.exceptions import ClusterDownError, ConnectionError, MovedError, TimeoutError
from redis.utils import HIREDIS_AVAILABLE

from patterns_server.core.telemetry import record

if HIREDIS_AVAILABLE:
    import hiredis

logger = logging.getLogger(__name__)

# The redis-py releases whose AbstractConnection.pack_command the packer replaces.
PACKER_CHECKED = ("8.0.", "8.1.")
# The redis-py releases whose send_packed_command the direct write matches (see 4).
WRITER_CHECKED = PACKER_CHECKED

_original_pack_command = AbstractConnection.pack_command
_hiredis_packer = HiredisRespSerializer()


def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
    """The command `args` as RESP bytes, as redis-py's own packer writes them."""
    if isinstance(args[0], str) and " " not in args[0]:  # every command this server sends
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not take (memoryview, ...): redis-py checks
            pass
    packed: list[bytes] = _hiredis_packer.pack(*args)  # also splits "CONFIG GET"
    return packed


def install_packer() -> bool:
    """Use hiredis's packer for asyncio connections; False (and a log line) when hiredis
    is missing or redis-py is a version it was not checked against."""
    if not HIREDIS_AVAILABLE:
        logger.info("hiredis is not installed: redis-py packs commands in Python")
        return False
    if not redis.__version__.startswith(PACKER_CHECKED):
        logger.info(
            "redis-py %s is not a version the hiredis packer was checked against (%s): "
            "redis-py packs commands itself",
            redis.__version__,
            ", ".join(v + "x" for v in PACKER_CHECKED),
        )
        return False
    AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
    return True


def uninstall_packer() -> None:
    """Back to redis-py's own packer (for tests that compare the two)."""
    AbstractConnection.pack_command = _original_pack_command  # type: ignore[method-assign]


def original_pack_command(connection: AbstractConnection, *args: Any) -> Any:
    """redis-py's own packer (for tests that compare the two)."""
    return _original_pack_command(connection, *args)


C = TypeVar("C", bound=AbstractConnection)

# Whether connections write as redis-py does without its task per write (4).
_direct_write = redis.__version__.startswith(WRITER_CHECKED)


def replacing_closed(base: type[C]) -> type[C]:
    """`base` (a redis-py connection class) that reconnects, before sending a command,
    when Redis has closed it (see the module's docstring, 2)."""

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
            if self.is_connected and not self._connecting and await self._closed_by_redis():
                await self.disconnect()
                record().redis_reconnect("pool")
            if not self.is_connected and not self._connecting:
                # By `connect()`, as the pool connects: a Sentinel's connection asks there
                # for the master's address (redis-py's own reconnection on send would go
                # back to the address it had, or to localhost for one never connected).
                await self.connect()
            if not _direct_write or not self.is_connected or not isinstance(command, list):
                await super().send_packed_command(command, check_health)
                return
            if check_health:
                await self.check_health()
            await self._write(command)

        async def _write(self, command: list[bytes]) -> None:
            """As redis-py writes (see the module's docstring, 4)."""
            try:
                self._writer.writelines(command)
                if self._writer.transport.get_write_buffer_size():
                    async with asyncio.timeout(self.socket_timeout):
                        await self._writer.drain()
            except builtins.TimeoutError:  # `TimeoutError` here is redis-py's
                await self.disconnect(nowait=True)
                raise TimeoutError("Timeout writing to socket") from None
            except OSError as error:
                await self.disconnect(nowait=True)
                raise ConnectionError(f"Error while writing to socket: {error}") from error
            except BaseException:
                await self.disconnect(nowait=True)
                raise

        async def _closed_by_redis(self) -> bool:
            """Whether the connection has something to read before a command is sent
            (Redis closed it, or left a reply nobody read): either way, it is spent."""
            try:
                return bool(await self.can_read())
            except ConnectionError:  # some parsers raise, on a closed socket, what others answer
                return True

    ReplacingClosed.__name__ = ReplacingClosed.__qualname__ = f"ReplacingClosed{base.__name__}"
    return ReplacingClosed


def replace_closed_connections(client: "Redis | RedisCluster") -> type[AbstractConnection]:
    """Make every connection of `client` one that `replacing_closed` makes; returns the
    connection class it used before (for a connection that must not check, such as a
    subscribed one, whose unread messages are its purpose)."""
    if isinstance(client, RedisCluster):
        # Nodes are made from these options, at start-up and as the topology changes.
        plain: type[AbstractConnection] = client.connection_kwargs["connection_class"]
        client.connection_kwargs["connection_class"] = replacing_closed(plain)
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = client.connection_kwargs["connection_class"]
        return plain
    plain = client.connection_pool.connection_class
    client.connection_pool.connection_class = replacing_closed(plain)
    return plain


def topology_may_have_changed(reply: Any) -> bool:
    """Whether a Cluster node's `reply` (or failure) says the slots may live elsewhere now:
    the node is unreachable or too slow, the Cluster is down (failing over), or the node
    no longer serves the slot."""
    return isinstance(reply, _TOPOLOGY_ERRORS)


# A tuple: isinstance takes it several times faster than a union (this runs on every reply).
_TOPOLOGY_ERRORS = (ConnectionError, TimeoutError, ClusterDownError, MovedError)


def refresh_topology(client: RedisCluster, failed_node: str) -> None:
    """Have `client` read the Cluster's topology again before its next command, asking
    `failed_node` last (see the module's docstring, 3). As redis-py does after a lone
    command's failure, the node also goes to the end of the client's list: the refresh
    sends COMMAND to the first master listed, and a dead one would fail the refresh (and
    with it every node's commands) until the Cluster deems it failed."""
    client._initialize = True
    client.nodes_manager.move_node_to_end_of_cached_nodes(failed_node)


def scan_members(reply: list[Any]) -> list[bytes]:
    """The members of a ZSCAN reply's page: flat (member, score, ...) with RESP2, pairs
    [member, score] with RESP3."""
    if reply and isinstance(reply[0], list | tuple):
        return [pair[0] for pair in reply]
    return reply[::2]


def scan_cursor(cursor: Any) -> int:
    """A SCAN reply's cursor: the Cluster client gives {node: cursor} for one node."""
    if isinstance(cursor, dict):
        (cursor,) = cursor.values()
    return int(cursor)
