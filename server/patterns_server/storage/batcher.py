"""Sharing Redis round trips between concurrent calls.

A Lua call costs Redis a few microseconds, while a round trip from Python costs far more:
gathering the commands of concurrent calls into one pipeline is what lets one server
process keep up with its gRPC traffic.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)

from patterns_server.core.telemetry import record
from patterns_server.storage import redispy
from patterns_server.storage.errors import is_outage
from patterns_server.storage.scripts import Command

logger = logging.getLogger(__name__)

MAX_COMMANDS_PER_BATCH = 2_000
# A batch also stops growing at about this many bytes (a larger call goes on its own): a
# pipeline is one write, and Redis's answer to it must come within the socket timeout.
MAX_BYTES_PER_BATCH = 1 << 20
# A batch of at least BUSY_BATCH calls that ended less than CONCURRENCY_MEMORY batch waits
# ago means traffic is heavy: gather the next batch too. Smaller or older than that, the
# next batch goes at once: a chain of dependent calls (a lock's hand-off: release, wake,
# try) would otherwise wait at every step.
BUSY_BATCH = 4
CONCURRENCY_MEMORY = 5


@dataclass(frozen=True)
class ReplicaWait:
    """WAIT after every pipeline: until `replicas` replicas have its writes, or
    `timeout_ms`. Redis refuses WAIT inside a script, so it follows the scripts on the same
    connection, as the pipeline's last command."""

    replicas: int
    timeout_ms: int

    def command(self) -> tuple[Any, ...]:
        return ("WAIT", self.replicas, self.timeout_ms)


# How often, at most, a WAIT that fewer replicas confirmed is logged (seconds).
SHORT_WAIT_LOG_INTERVAL = 10.0
_last_short_wait_log = 0.0


@dataclass
class _Job:
    commands: Sequence[Command]
    future: "asyncio.Future[list[Any]]"
    sent: Callable[[int], None] | None = None  # told the size of the pipeline it went in


class Batcher:
    """Sends the commands of concurrent callers together, one pipeline in flight at a time.

    While a pipeline is in flight, new calls queue; the next pipeline takes them all. When
    the last pipeline, just sent, carried several calls (traffic is heavy), the next one
    first waits `batch_wait` seconds so that more calls join: fewer, fuller round trips are
    what make batching pay (sending at once gives batches of one or two). A lone call, or
    a few, never waits. A caller that gives up (deadline, cancellation) before its commands
    are sent is dropped from the batch: its work never reaches Redis.

    Replies come back in order, a command's error (Redis refused it, or could not be
    reached) in its place.
    """

    def __init__(
        self, client: "Redis | RedisCluster", batch_wait: float, wait: ReplicaWait | None = None
    ) -> None:
        self._client = client
        self._batch_wait = batch_wait
        self._wait = wait
        self._queue: deque[_Job] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._last_batch_jobs = 0
        self._last_batch_end = 0.0
        self._failed_node: str | None = None  # the Cluster node that failed a batch last
        # On standalone Redis, one pipeline in flight means one connection is all the
        # batcher needs: its own, outside the pool (see `_on_connection`).
        self._connection: Connection | None = None
        if isinstance(client, Redis):
            made = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            self._connection = cast(Connection, made)  # its class: redispy.replacing_closed

    async def run(
        self, commands: Sequence[Command], sent: Callable[[int], None] | None = None
    ) -> list[Any]:
        """Replies to `commands`, in order; `sent`, when given, is told how many commands
        the pipeline that carried them held (for tracing)."""
        job = _Job(commands, asyncio.get_running_loop().create_future(), sent)
        self._queue.append(job)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return await job.future

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        for job in self._queue:
            job.future.cancel()
        if self._connection is not None:
            await self._connection.disconnect()

    async def _send_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self._traffic_is_concurrent(loop.time()):
                    await asyncio.sleep(self._batch_wait)
                jobs = self._take_batch()
                record().redis_queue(len(self._queue))
                if jobs:
                    await self._send(jobs)
                self._last_batch_jobs = len(jobs)
                self._last_batch_end = loop.time()
        finally:
            self._sender = None
            record().redis_queue(len(self._queue))  # nobody waits once the sender stops

    def _traffic_is_concurrent(self, now: float) -> bool:
        recent = now - self._last_batch_end < CONCURRENCY_MEMORY * self._batch_wait
        return self._batch_wait > 0 and self._last_batch_jobs >= BUSY_BATCH and recent

    def _take_batch(self) -> list[_Job]:
        jobs: list[_Job] = []
        commands = size = 0
        while self._queue and commands < MAX_COMMANDS_PER_BATCH:
            job = self._queue[0]
            if job.future.done():  # cancelled meanwhile
                self._queue.popleft()
                continue
            if jobs or len(self._queue) > 1:  # sizes matter only to calls that share
                job_size = sum(command.size for command in job.commands)
                if jobs and size + job_size > MAX_BYTES_PER_BATCH:
                    break
                size += job_size
            self._queue.popleft()
            jobs.append(job)
            commands += len(job.commands)
        return jobs

    async def _send(self, jobs: list[_Job]) -> None:
        commands = [command for job in jobs for command in job.commands]
        for job in jobs:
            if job.sent is not None:
                job.sent(len(commands))
        started = time.perf_counter()
        try:
            replies = await self._execute(commands)
            record().redis_round_trip(len(commands), time.perf_counter() - started)
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
        if isinstance(self._client, Redis) and any(map(is_outage, replies)):
            # The only node is unreachable or too slow: calls queued meanwhile would wait a
            # whole timeout each for the same answer. Give it to them now.
            outage = next(reply for reply in replies if is_outage(reply))
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
            return await _execute_on(
                self._client, commands, wait=self._wait, connection=self._connection
            )
        except Exception as error:
            return [error] * len(commands)

    async def _execute_per_node(self, client: RedisCluster, commands: list[Command]) -> list[Any]:
        # After a failure, the topology is read again first, from another node than the one
        # that failed (a frozen node would hold the refresh for a whole timeout).
        failed, self._failed_node = self._failed_node, None
        try:
            await client.initialize(last_failed_node_name=failed)  # a no-op unless stale
        except Exception as error:  # no node answers, or every one refuses the password
            self._failed_node = failed
            return [error] * len(commands)
        by_node: dict[str, tuple[Any, list[int]]] = {}
        routed: list[tuple[int, Any]] = []  # (index, node) of commands with their own route
        replies: list[Any] = [None] * len(commands)
        for index, command in enumerate(commands):
            try:
                node = client.get_node_from_key(command.routing_key)
                if node is None:
                    raise SlotNotCoveredError(f"no node serves {command.routing_key!r} now")
            except Exception as error:  # the slot has no node now
                replies[index] = error
                continue
            if command.route is not None:
                routed.append((index, node))
            else:
                by_node.setdefault(node.name, (node, []))[1].append(index)
        groups = list(by_node.values())
        results = await asyncio.gather(
            *(
                _execute_on(client, [commands[i] for i in group], node, wait=self._wait)
                for node, group in groups
            ),
            *(_execute_on(client, [commands[i]], node, routed=True) for i, node in routed),
            return_exceptions=True,
        )
        for (_, group), result in zip(groups, results, strict=False):
            for position, index in enumerate(group):
                replies[index] = result if isinstance(result, BaseException) else result[position]
        for (index, _), result in zip(routed, results[len(groups) :], strict=True):
            replies[index] = result if isinstance(result, BaseException) else result[0]
        nodes = [node for node, _ in groups] + [node for _, node in routed]
        for node, result in zip(nodes, results, strict=True):
            outcomes = [result] if isinstance(result, BaseException) else result
            if any(map(redispy.topology_may_have_changed, outcomes)):
                # redis-py reads the topology again after such a failure of a lone command,
                # not of a pipeline's (redis/redis-py#3130): without this, the slots of a
                # master that failed over would be sent to it for ever.
                redispy.refresh_topology(client, node.name)
                self._failed_node = node.name
                break
        return replies


async def _execute_on(
    client: "Redis | RedisCluster",
    commands: list[Command],
    node: Any = None,
    routed: bool = False,
    wait: ReplicaWait | None = None,
    connection: Connection | None = None,
) -> list[Any]:
    """Replies to `commands`, all for the Cluster node `node` when given, on `connection`
    when given; followed by `wait`'s WAIT, when given."""
    replies = await _pipeline(
        client, [command.args for command in commands], node, routed, wait, connection
    )
    # A node that lacks a script (restart, failover, first use) gets its source once by
    # EVAL, which also caches it there for the EVALSHAs that follow.
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        again = [commands[i].as_eval() for i in missing]
        retried = await _pipeline(client, again, node, routed, wait, connection)
        for i, reply in zip(missing, retried, strict=True):
            replies[i] = reply
    return replies


async def _pipeline(
    client: "Redis | RedisCluster",
    commands: list[tuple[Any, ...]],
    node: Any = None,
    routed: bool = False,
    wait: ReplicaWait | None = None,
    connection: Connection | None = None,
) -> list[Any]:
    if wait is not None:
        return await _pipeline_and_wait(client, commands, node, wait)
    if connection is not None and isinstance(client, Redis):
        return await _on_connection(client, connection, commands)
    if len(commands) == 1:  # a pipeline of one costs a lone call 45 µs more than the command
        try:
            if node is None:
                return [await client.execute_command(*commands[0])]
            # On a Cluster, to the node itself: redis-py's RedisCluster.execute_command
            # closes every node's connections (other calls' pipelines in flight among
            # them) when a node answers CLUSTERDOWN, and costs 14 µs more.
            return [await node.execute_command(*commands[0])]
        except (MovedError, AskError, TryAgainError) as redirected:
            if routed:  # for that node only
                return [redirected]
            # Not run: sent again where the Cluster says, as redis-py's pipeline does.
            return [await client.execute_command(*commands[0])]
        except ResponseError as refused:  # a reply, as in a pipeline
            return [refused]
    pipe = client.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(*args)
    return list(await pipe.execute(raise_on_error=False))


async def _on_connection(
    client: Redis, connection: Connection, commands: list[tuple[Any, ...]]
) -> list[Any]:
    """`commands` written at once on `connection`, and their replies read in order, a
    command's error in its place: what redis-py's pipeline does, without what it adds
    per call (a pooled connection checked out and back, a retry wrapper, its own
    metrics), which cost a lone Check a tenth of its server time. Any failure leaves
    replies unread: the connection is closed (the next batch reconnects) and the failure
    raised, as the reply of every command (see `Batcher._execute`)."""
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for args in commands:
            try:
                replies.append(await client.parse_response(connection, args[0]))
            except ResponseError as refused:  # a reply, as in a pipeline
                replies.append(refused)
        return replies
    except BaseException:
        await connection.disconnect(nowait=True)
        raise


async def _pipeline_and_wait(
    client: "Redis | RedisCluster", commands: list[tuple[Any, ...]], node: Any, wait: ReplicaWait
) -> list[Any]:
    """`commands` then WAIT, on one connection (of `node`'s, on a Cluster): their replies
    once `wait.replicas` replicas have their writes, or after `wait.timeout_ms` (the
    replies stand: the master made the writes; a line in the log says that fewer replicas
    confirmed)."""
    pipe = client.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(*args)
    if node is None:
        pipe.execute_command(*wait.command())
    else:  # a command without a key goes where it is told
        pipe.execute_command(*wait.command(), target_nodes=node)
    *replies, confirmed = await pipe.execute(raise_on_error=False)
    if isinstance(confirmed, int) and confirmed < wait.replicas:
        _log_short_wait(confirmed, wait)
    return list(replies)


def _log_short_wait(confirmed: int, wait: ReplicaWait) -> None:
    global _last_short_wait_log
    now = time.monotonic()
    if now - _last_short_wait_log >= SHORT_WAIT_LOG_INTERVAL:
        _last_short_wait_log = now
        logger.warning(
            "WAIT: %d of %d replicas confirmed writes within %d ms (the writes stand; a "
            "failover now would lose them); logged at most every %.0f s",
            confirmed,
            wait.replicas,
            wait.timeout_ms,
            SHORT_WAIT_LOG_INTERVAL,
        )
