"""The process's Redis: what patterns and the runtime may do with it, and nothing more.

Patterns get a `RedisBackend` and use its small interface: `run` / `call` / `eval` for
commands (batched with those of concurrent calls, see `batcher.py`), `keys` for key names,
`slot` for Cluster routing, and `subscribe` for Pub/Sub streams. The redis-py client is
private to this package: no handler calls it directly (redis-py 8.1 can swallow a task
cancellation that lands mid-command; the batcher keeps a cancelled caller's commands from
being sent at all).
"""

import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from patterns_server.core.errors import Unavailable
from patterns_server.core.telemetry import Tracer, trace
from patterns_server.core.units import instant_us
from patterns_server.storage.batcher import Batcher, ReplicaWait
from patterns_server.storage.errors import translated
from patterns_server.storage.keys import KeySpace
from patterns_server.storage.pubsub import PubSubHub, Subscription
from patterns_server.storage.redispy import (
    replace_closed_connections,
    scan_cursor,
    scan_members,
)
from patterns_server.storage.scripts import Command, LuaScript
from patterns_server.storage.wakeups import Waits

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SENTINEL_SCHEME = "redis+sentinel"
HEALTH_KEY_TTL_MS = 60_000
# The namespace of the server's own keys (health probes, the Pub/Sub route): no tenant's
# name, since those are [a-z0-9_-] only.
SERVER_NAMESPACE = "@server"
# Commands for one node (the hub's), sent as scripts keyed by its route: they share
# pipelines like every call's commands, where a command sent alone to a chosen node took a
# connection of its own each (a burst of them beyond redis-py's pool was refused).
PUBLISH = LuaScript.load(__file__, "publish")
TIME = LuaScript.load(__file__, "time", clock=True)


class RedisURLError(ValueError):
    """A Redis URL that redis-py cannot use (an unknown option, a bad value, TLS options
    without TLS); the message never holds the URL's password."""


class RedisBackend:
    """Redis for the whole process: standalone or Cluster, one pool, batched commands, and
    one Pub/Sub connection shared by every stream."""

    def __init__(
        self,
        client: "Redis | RedisCluster",
        prefix: str,
        batch_wait: float,
        timeout: float,
        ping_interval: float = 1.0,
        wait_replicas: int = 0,
    ) -> None:
        self._client = client
        self.prefix = prefix
        self._plain_connection_class = replace_closed_connections(client)
        wait = ReplicaWait(wait_replicas, int(timeout * 500)) if wait_replicas else None
        self._batcher = Batcher(client, batch_wait, wait)
        self._pubsub = PubSubHub(self._open_connection, timeout, ping_interval)
        self.waits = Waits()  # the process's callers waiting for a wake-up; shutdown ends them
        # On a Cluster, the Pub/Sub connection and every PUBLISH go to the node that owns
        # this key's slot (the same node for every server process): Redis then orders
        # messages and the hub's markers exactly, and counts every process's subscriber.
        self._pubsub_route = self.keys("pubsub", SERVER_NAMESPACE)("hub")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str,
        timeout: float,
        batch_wait: float,
        ping_interval: float = 1.0,
        wait_replicas: int = 0,
    ) -> "RedisBackend":
        """A backend for `url`; `redis+cluster://` (or `rediss+cluster://`) means Cluster.
        `RedisURLError` if redis-py cannot use the URL; nothing connects yet, so a Redis
        that is down or refuses the password is no error here (health reports it)."""
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # No retries: redis-py resends a whole pipeline after a connection error, even
            # when Redis had already run it, and a rate-limit script must never run twice.
            # The caller gets UNAVAILABLE and decides; a broken connection is replaced.
            "retry": Retry(NoBackoff(), 0),
        }
        try:
            client = _client(url, options)
        except (TypeError, ValueError, RedisClusterException) as error:
            raise RedisURLError(
                f"cannot use the Redis URL {redacted_url(url)}: {_scrubbed(str(error), url)}"
            ) from None  # the cause's text may hold the password
        return cls(client, prefix, batch_wait, timeout, ping_interval, wait_replicas)

    def keys(self, pattern: str, namespace: str | None = None) -> KeySpace:
        """The key names of `pattern`: in the calling tenant's namespace, or in `namespace`
        for the server's own keys."""
        return KeySpace(self.prefix, pattern, namespace)

    def slot(self, key: str) -> int | None:
        """The Cluster slot of `key`; None on standalone Redis, where every key is local."""
        if isinstance(self._client, RedisCluster):
            return self._client.keyslot(key)
        return None

    async def run(self, *commands: Command) -> list[Any]:
        """Replies to `commands` in order, sent in one round trip (per Cluster node)
        together with those of other calls made at the same time. The first command that
        fails raises its error (`Unavailable` when Redis cannot serve now)."""
        replies = await self._replies(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise translated(reply) from reply
        return replies

    async def run_settled(self, *commands: Command) -> list[Any]:
        """As `run`, except that a command that fails has its error (as `run` would raise
        it) for its reply, and the others' replies stand: on a Cluster, a node that cannot
        serve fails its own commands only."""
        return [_settled(reply) for reply in await self._replies(commands)]

    async def _replies(self, commands: Sequence[Command]) -> list[Any]:
        tracer = trace()
        if tracer.enabled:
            return await self._traced(tracer, commands)
        return await self._batcher.run(commands)

    async def _traced(self, tracer: Tracer, commands: Sequence[Command]) -> list[Any]:
        scripts = ",".join(sorted({c.script.body.stem for c in commands if c.script is not None}))
        with tracer.redis_span(scripts or str(commands[0].args[0]), len(commands)) as span:
            slot = self.slot(str(commands[0].routing_key))
            if slot is not None:
                span.set("patterns.redis.slot", slot)
            replies = await self._batcher.run(
                commands, lambda size: span.set("patterns.redis.batch_commands", size)
            )
            return replies

    async def call(self, *args: Any) -> Any:
        """The reply to one command."""
        (reply,) = await self.run(Command(args))
        return reply

    async def eval(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The reply of one Lua script."""
        (reply,) = await self.run(Command.eval(script, keys, args))
        return reply

    async def now(self) -> datetime:
        """The Redis clock's time (of the Pub/Sub node on a Cluster): the one clock every
        server process shares."""
        return instant_us(int(await self.eval(TIME, [self._pubsub_route], [])))

    async def publish(self, channel: bytes, payload: bytes) -> int:
        """PUBLISH `payload` on `channel`; how many Redis subscriber connections took it."""
        return int(await self.eval(PUBLISH, [self._pubsub_route], [channel, payload]))

    async def subscribe(
        self, channels: Sequence[bytes], patterns: Sequence[bytes], capacity: int, max_bytes: int
    ) -> Subscription:
        """A Pub/Sub subscription, live once this returns, buffering at most `capacity`
        messages and `max_bytes` bytes of payload (see `pubsub.PubSubHub`)."""
        return await self._pubsub.subscribe(channels, patterns, capacity, max_bytes)

    @property
    def subscribed(self) -> tuple[int, int]:
        """How many channels and patterns the process subscribes to in Redis now."""
        return self._pubsub.subscribed

    async def scan(self, match: str, count: int = 1_000) -> AsyncIterator[list[bytes]]:
        """The keys that match the glob `match`, in batches, from every node (every
        Cluster primary): SCAN, never KEYS, so Redis stays responsive. Keys created or
        deleted meanwhile may or may not be seen; the others are, at least once."""
        for route in await self._one_key_per_primary("scan"):
            cursor = 0
            while True:
                scan = Command(("SCAN", cursor, "MATCH", match, "COUNT", count), route=route)
                ((reply_cursor, keys),) = await self.run(scan)
                cursor = scan_cursor(reply_cursor)
                if keys:
                    yield keys
                if cursor == 0:
                    break

    async def sorted_set_members(self, key: str, count: int = 1_000) -> AsyncIterator[list[bytes]]:
        """The members of the sorted set `key`, in pages of about `count` (ZSCAN: Redis
        stays responsive whatever its size). Members added or removed meanwhile may or may
        not be seen; the others are, at least once."""
        cursor = 0
        while True:
            ((reply_cursor, page),) = await self.run(
                Command(("ZSCAN", key, cursor, "COUNT", count))
            )
            cursor = int(reply_cursor)
            members = scan_members(page)
            if members:
                yield members
            if cursor == 0:
                break

    async def check(self) -> None:
        """Raises unless Redis can serve what calls need: a write to the Redis (to every
        Cluster primary) succeeds, sent through the same path as every call. A Redis that
        answers PING but refuses writes (out of memory, a read-only replica) fails it."""
        await self.run(*await self._probes())

    async def close(self) -> None:
        await self._pubsub.close()
        await self._batcher.close()
        await self._client.aclose()

    async def _probes(self) -> list[Command]:
        """One short-lived write per Redis primary."""
        return [_probe(key) for key in await self._one_key_per_primary("health")]

    async def _one_key_per_primary(self, purpose: str) -> list[str]:
        """Keys whose slots each Redis primary serves, one per primary (one key on
        standalone Redis): to send a command to every node."""
        key = self.keys(purpose, SERVER_NAMESPACE)
        if not isinstance(self._client, RedisCluster):
            return [key("node")]
        try:
            await self._client.initialize()
        except Exception as error:  # no node answers, or every one refuses the password
            raise translated(error) from error
        primaries = {node.name for node in self._client.get_primaries()}
        keys: dict[str, str] = {}
        for number in range(10_000):  # a handful suffice: the slots of a node are many
            name = key(f"node-{number}")
            node = self._client.get_node_from_key(name)
            if node is not None and node.name not in keys:
                keys[node.name] = name
            if primaries <= keys.keys():
                break
        return list(keys.values())

    async def _open_connection(self) -> AbstractConnection:
        """A new connection of its own, to the Redis (to the Cluster node of Pub/Sub)."""
        # The plain class: a subscribed connection has unread messages by design.
        connection: AbstractConnection
        if isinstance(self._client, RedisCluster):
            await self._client.initialize()
            node = self._client.get_node_from_key(self._pubsub_route)
            if node is None:
                raise Unavailable("no Redis Cluster node serves Pub/Sub now", "REDIS_UNAVAILABLE")
            connection = self._plain_connection_class(**node.connection_kwargs)
        else:
            pool = self._client.connection_pool
            connection = self._plain_connection_class(**pool.connection_kwargs)
        await connection.connect()  # type: ignore[no-untyped-call]
        return connection


def _probe(key: str) -> Command:
    return Command(("SET", key, "1", "PX", HEALTH_KEY_TTL_MS))


def _client(url: str, options: dict[str, Any]) -> "Redis | RedisCluster":
    """The redis-py client of `url`, its options checked now rather than at the first
    connection: a misspelt query option is a mistake to report at start."""
    parts = urlsplit(url)
    tls_options = [name for name, _ in parse_qsl(parts.query) if name.startswith("ssl_")]
    if tls_options and parts.scheme not in ("rediss", "rediss+cluster"):
        # redis-py would refuse them at the first connection (standalone), or ignore them
        # and talk plain TCP to a TLS port (Cluster).
        raise ValueError(f"{', '.join(tls_options)} need rediss:// or rediss+cluster://")
    if parts.scheme == SENTINEL_SCHEME:
        return _sentinel_client(parts, options)
    if parts.scheme in CLUSTER_SCHEMES:
        plain_url = urlunsplit(parts._replace(scheme=CLUSTER_SCHEMES[parts.scheme]))
        return RedisCluster.from_url(plain_url, **options)  # checks every option
    client = Redis.from_url(url, **options)
    pool = client.connection_pool
    pool.connection_class(**pool.connection_kwargs)  # an unknown option: TypeError
    return client


def _sentinel_client(parts: SplitResult, options: dict[str, Any]) -> Redis:
    """The client of the master that the Sentinels of `parts` (a `redis+sentinel://` URL)
    name: it asks them again whenever it connects, so a failover moves it to the new
    master (redis-py's asyncio Sentinel client)."""
    if parts.query or parts.fragment:
        raise ValueError("redis+sentinel:// URLs take no options")
    _, _, hosts = parts.netloc.rpartition("@")
    sentinels = []
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":")
        if not colon or not name or not port.isdigit():
            raise ValueError("a Sentinel must be given as host:port")
        sentinels.append((name, int(port)))
    service, _, db = parts.path.strip("/").partition("/")
    if not service or (db and not db.isdigit()) or "/" in db:
        raise ValueError("the path must be /service_name or /service_name/db")
    credentials: dict[str, Any] = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
    }
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels,
        # The Sentinels themselves: the same timeouts, no password (the URL's is the
        # master's and its replicas').
        sentinel_kwargs={k: v for k, v in options.items() if k.startswith("socket_")},
        **options,
    )
    client: Redis = sentinel.master_for(service, db=int(db or 0), **credentials)
    return client


def redacted_url(url: str) -> str:
    """`url` without its password, for logs: `rediss://patterns:***@host:6380?...`. What
    lies between `://` and the last `@` is taken for credentials (more than redis-py
    takes, never less), and so are query values named like a password."""
    scheme, _, rest = url.partition("://")
    userinfo, at, place = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{place}" if colon else f"***@{place}"
    rest = re.sub(r"([?&][^=&]*password=)[^&]*", r"\1***", rest, flags=re.IGNORECASE)
    return f"{scheme}://{rest}"


def _scrubbed(message: str, url: str) -> str:
    """`message` (an error about `url`) with any part of the URL's credentials masked:
    a URL whose password holds an unescaped `/`, `?` or `#` is cut there by the URL
    parser, and a piece of it can come back in the error (as a port, say). A quoted name
    of one of the URL's query options (`'db'`, `'socket_timeout'`) stays, even when the
    password holds those letters: it is what the error is about."""
    credentials = url.partition("://")[2].rpartition("@")[0]
    if not credentials:
        return message
    options = {name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}

    def mask(quoted: re.Match[str]) -> str:
        piece = quoted[1]
        return "'***'" if piece and piece in credentials and piece not in options else quoted[0]

    return re.sub(r"'([^']*)'", mask, message).replace(credentials, "***")


def _settled(reply: Any) -> Any:
    """A reply of `run_settled`: a failure as the error `run` would raise."""
    if not isinstance(reply, Exception):
        return reply
    error = translated(reply)
    if error is not reply:
        error.__cause__ = reply
    return error
