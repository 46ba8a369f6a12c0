"""The process's one connection to Redis: client, key names, Lua scripts, and call batching.

Patterns never build a Redis client or a key by hand; they get a `RedisBackend` and a
`KeySpace` from here. Every command goes through `RedisBackend.run`, which gathers the commands
of concurrent calls into one pipeline (see `_Batcher`): a Lua call costs Redis a few
microseconds, while a round trip from Python costs far more, so sharing round trips is what
lets one server process keep up with its gRPC traffic.
"""

import asyncio
import hashlib
import logging
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import (
    ClusterCrossSlotError,
    ClusterError,
    ConnectionError,
    CrossSlotTransactionError,
    InvalidPipelineStack,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)
from redis.utils import HIREDIS_AVAILABLE

logger = logging.getLogger(__name__)

# redis-py's asyncio connections pack commands in Python (16 µs for one rate-limit EVALSHA,
# a tenth of a whole RPC's budget); its sync connections use hiredis's C packer, which
# writes the same bytes. Give every asyncio connection (TCP, TLS, unix, Cluster) the C one.
if HIREDIS_AVAILABLE:
    import hiredis

    _hiredis_packer = HiredisRespSerializer()

    def _pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " not in args[0]:  # every command this server sends
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        packed: list[bytes] = _hiredis_packer.pack(*args)  # "CONFIG GET", bad types: checked
        return packed

    AbstractConnection.pack_command = _pack_command  # type: ignore[method-assign]

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
MAX_COMMANDS_PER_BATCH = 2_000
# A batch of several calls that ended less than this many batch waits ago means traffic is
# still concurrent: gather the next batch too. Older than that, the next call is on its own.
CONCURRENCY_MEMORY = 5

# Errors that mean "not now" rather than "never": Redis is unreachable, too slow, loading,
# failing over, read-only (a replica), busy with a script, or out of memory. redis-py turns
# most replies into classes; from inside a script (on Redis 6.2) they arrive as text.
_UNAVAILABLE_ERRORS = (
    ConnectionError,
    TimeoutError,
    ClusterError,
    SlotNotCoveredError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)
_PROGRAMMING_ERRORS = (ClusterCrossSlotError, CrossSlotTransactionError, InvalidPipelineStack)
_UNAVAILABLE_REPLY = re.compile(
    r"(^|-)(OOM|READONLY|LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|NOREPLICAS)\b"
)


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` means Redis cannot serve now, as opposed to a request it refuses."""
    if isinstance(error, _UNAVAILABLE_ERRORS):
        return True
    if isinstance(error, RedisClusterException):  # e.g. "Redis Cluster cannot be connected"
        return not isinstance(error, _PROGRAMMING_ERRORS)
    return isinstance(error, ResponseError) and bool(_UNAVAILABLE_REPLY.search(str(error)))


@dataclass(frozen=True)
class LuaScript:
    """A Lua script read from a `.lua` file; sent as EVALSHA, as EVAL where Redis lacks it."""

    source: str
    sha: str

    @classmethod
    def beside(cls, module_file: str, *filenames: str) -> "LuaScript":
        """The script made of `filenames`, joined in order, in the folder of the module
        `module_file` (pass `__file__`): shared Lua functions go in the first files."""
        folder = Path(module_file).parent
        source = "\n".join((folder / filename).read_text() for filename in filenames)
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


@dataclass(frozen=True)
class Command:
    """One Redis command; `script` is set for EVALSHA so a NOSCRIPT reply can be retried."""

    args: tuple[Any, ...]
    script: LuaScript | None = None

    @classmethod
    def eval(cls, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> "Command":
        return cls(("EVALSHA", script.sha, len(keys), *keys, *args), script)


class KeySpace:
    """Names the keys of one pattern: `<prefix>:<namespace>:<pattern>:{<name>}[:<part>...]`.

    The braces are a Redis Cluster hash tag: every key derived from one name lands in one
    slot, so one script can touch them all. Redis ends a tag at the first `}`, so a name
    that holds one is replaced in the tag by `#` and its SHA-1: the keys of such a name
    still share a slot (a name starting with `}` would otherwise give an empty tag, which
    Redis ignores). Parts never contain braces, so distinct names never share a key.
    """

    def __init__(self, prefix: str, namespace: str, pattern: str) -> None:
        self._base = f"{prefix}:{namespace}:{pattern}:"

    def __call__(self, name: str, *parts: str) -> str:
        if "}" in name:
            name = "#" + hashlib.sha1(name.encode()).hexdigest()
        return "".join((self._base, "{", name, "}", *(":" + part for part in parts)))


class RedisBackend:
    """Redis for the whole process: standalone or Cluster, one pool, batched commands."""

    def __init__(self, client: "Redis | RedisCluster", prefix: str, batch_wait: float) -> None:
        self.client = client
        self.prefix = prefix
        self._batcher = _Batcher(client, batch_wait)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, timeout: float, batch_wait: float
    ) -> "RedisBackend":
        """A backend for `url`; `redis+cluster://` (or `rediss+cluster://`) means Cluster."""
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # No retries: redis-py resends a whole pipeline after a connection error, even
            # when Redis had already run it, and a rate-limit script must never run twice.
            # The caller gets UNAVAILABLE and decides; a broken connection is replaced.
            "retry": Retry(NoBackoff(), 0),
        }
        parts = urlsplit(url)
        client: Redis | RedisCluster
        if parts.scheme in CLUSTER_SCHEMES:
            plain_url = urlunsplit(parts._replace(scheme=CLUSTER_SCHEMES[parts.scheme]))
            client = RedisCluster.from_url(plain_url, **options)
        else:
            client = Redis.from_url(url, **options)
        return cls(client, prefix, batch_wait)

    def keys(self, pattern: str, namespace: str = "default") -> KeySpace:
        return KeySpace(self.prefix, namespace, pattern)

    def slot(self, key: str) -> int | None:
        """The Cluster slot of `key`; None on standalone Redis, where every key is local."""
        if isinstance(self.client, RedisCluster):
            return self.client.keyslot(key)
        return None

    async def run(self, *commands: Command) -> list[Any]:
        """Replies to `commands` in order; a command's error (Redis refused it, or could
        not be reached) is returned in its place. The commands are sent in one round trip
        (per Cluster node), together with those of other calls made at the same time.
        """
        return await self._batcher.run(commands)

    async def call(self, *args: Any) -> Any:
        """The reply to one command; a Redis error raises."""
        (reply,) = await self.run(Command(args))
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def eval(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The reply of one Lua script; a Redis error raises."""
        (reply,) = await self.run(Command.eval(script, keys, args))
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def ping(self) -> None:
        """Raises unless Redis (every Cluster primary) answers."""
        if isinstance(self.client, RedisCluster):
            await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.client.ping()

    async def close(self) -> None:
        await self._batcher.close()
        await self.client.aclose()


@dataclass
class _Job:
    commands: Sequence[Command]
    future: "asyncio.Future[list[Any]]"


class _Batcher:
    """Sends the commands of concurrent callers together, one pipeline in flight at a time.

    While a pipeline is in flight, new calls queue; the next pipeline takes them all. When
    the last pipeline, just sent, carried more than one call (traffic is concurrent), the
    next one first waits `batch_wait` seconds so that more calls join: fewer, fuller round
    trips are what make batching pay (sending at once gives batches of one or two). A lone
    call never waits. A caller that gives up (deadline, cancellation) before its commands
    are sent is dropped from the batch: its work never reaches Redis.
    """

    def __init__(self, client: "Redis | RedisCluster", batch_wait: float) -> None:
        self._client = client
        self._batch_wait = batch_wait
        self._queue: deque[_Job] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._last_batch_jobs = 0
        self._last_batch_end = 0.0

    async def run(self, commands: Sequence[Command]) -> list[Any]:
        job = _Job(commands, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return await job.future

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        for job in self._queue:
            job.future.cancel()

    async def _send_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self._traffic_is_concurrent(loop.time()):
                    await asyncio.sleep(self._batch_wait)
                jobs = self._take_batch()
                if jobs:
                    await self._send(jobs)
                self._last_batch_jobs = len(jobs)
                self._last_batch_end = loop.time()
        finally:
            self._sender = None

    def _traffic_is_concurrent(self, now: float) -> bool:
        recent = now - self._last_batch_end < CONCURRENCY_MEMORY * self._batch_wait
        return self._batch_wait > 0 and self._last_batch_jobs > 1 and recent

    def _take_batch(self) -> list[_Job]:
        jobs: list[_Job] = []
        size = 0
        while self._queue and size < MAX_COMMANDS_PER_BATCH:
            job = self._queue.popleft()
            if not job.future.done():  # not cancelled meanwhile
                jobs.append(job)
                size += len(job.commands)
        return jobs

    async def _send(self, jobs: list[_Job]) -> None:
        commands = [command for job in jobs for command in job.commands]
        try:
            replies = await self._execute(commands)
        except asyncio.CancelledError:  # shutdown: nobody may wait for ever
            for job in jobs:
                job.future.cancel()
            raise
        except Exception as error:  # a bug: these callers fail, the queue goes on
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        start = 0
        for job in jobs:
            end = start + len(job.commands)
            if not job.future.done():
                job.future.set_result(replies[start:end])
            start = end
        if isinstance(self._client, Redis) and any(map(_is_outage, replies)):
            # The only node is unreachable or too slow: calls queued meanwhile would wait a
            # whole timeout each for the same answer. Give it to them now.
            outage = next(reply for reply in replies if _is_outage(reply))
            while self._queue:
                job = self._queue.popleft()
                if not job.future.done():
                    job.future.set_result([outage] * len(job.commands))

    async def _execute(self, commands: list[Command]) -> list[Any]:
        """Replies in order. A failure of the connection is the reply of every command
        that went through it: on Cluster, a node that is down fails only its commands."""
        if isinstance(self._client, RedisCluster):
            return await self._execute_per_node(self._client, commands)
        try:
            return await self._execute_on(self._client, commands)
        except Exception as error:
            return [error] * len(commands)

    async def _execute_per_node(self, client: RedisCluster, commands: list[Command]) -> list[Any]:
        await client.initialize()  # at first use, and after a topology change
        by_node: dict[str, list[int]] = {}
        replies: list[Any] = [None] * len(commands)
        for index, command in enumerate(commands):
            try:
                node = client.get_node_from_key(_first_key(command.args))
            except Exception as error:  # the slot has no node now
                replies[index] = error
                continue
            by_node.setdefault(node.name if node else "", []).append(index)
        groups = list(by_node.values())
        results = await asyncio.gather(
            *(self._execute_on(client, [commands[i] for i in group]) for group in groups),
            return_exceptions=True,
        )
        for group, result in zip(groups, results, strict=True):
            for position, index in enumerate(group):
                replies[index] = result if isinstance(result, BaseException) else result[position]
        return replies

    async def _execute_on(
        self, client: "Redis | RedisCluster", commands: list[Command]
    ) -> list[Any]:
        replies = await _pipeline(client, [command.args for command in commands])
        # A node that lacks a script (restart, failover, first use) gets its source once by
        # EVAL, which also caches it there for the EVALSHAs that follow.
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            retried = await _pipeline(client, [_as_eval(commands[i]) for i in missing])
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
        return replies


async def _pipeline(client: "Redis | RedisCluster", commands: list[tuple[Any, ...]]) -> list[Any]:
    if len(commands) == 1:  # a pipeline of one costs a lone call 45 µs more than the command
        try:
            return [await client.execute_command(*commands[0])]
        except ResponseError as refused:  # a reply, as in a pipeline
            return [refused]
    pipe = client.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(*args)
    return list(await pipe.execute(raise_on_error=False))


def _is_outage(reply: Any) -> bool:
    return isinstance(reply, ConnectionError | TimeoutError)


def _first_key(args: tuple[Any, ...]) -> Any:
    """The key that routes a command: after the script and key count for EVAL/EVALSHA."""
    return args[3] if args[0] in ("EVALSHA", "EVAL") else args[1]


def _as_eval(command: Command) -> tuple[Any, ...]:
    assert command.script is not None
    return ("EVAL", command.script.source, *command.args[2:])
