"""Streams: durable events, kept until a worker of a group acknowledges them.

`consume` is an iterator of `Message`s over one Consume stream; each is acknowledged with
`message.ack()` (or handed back with `message.nack(delay=...)`), sent on that same stream.
Delivery is at least once: an entry not acknowledged within its consumer's ack timeout,
or whose consumer went away, is delivered again, with its `delivery_count` one higher, so a
handler must be idempotent. When the stream fails in a way that retrying cures (the server
or its Redis unavailable, the server stopping), the consumer opens it again after a backoff
(at least what the server's RetryInfo asks): the group and its pending entries live in
Redis, so nothing is lost; what was delivered and not acknowledged comes back by
redelivery. Acknowledgements the broken stream did not carry are sent on the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc
from patterns.streams.v1 import streams_pb2 as pb
from patterns.streams.v1 import streams_pb2_grpc

from patterns_client._calls import AsyncCalls, Calls
from patterns_client._check_stream import lost_status
from patterns_client._convert import duration, seconds, timestamp, to_datetime
from patterns_client.errors import (
    FieldViolation,
    InvalidArgument,
    PatternsError,
    from_rpc_error,
)
from patterns_client.events import (
    RESUMABLE,
    _Backoff,
    _not_confirmed,
    _Subscribed,
)

__all__ = [
    "Appended",
    "AsyncConsumer",
    "AsyncMessage",
    "AsyncStreams",
    "Consumer",
    "ConsumerInfo",
    "GroupInfo",
    "Message",
    "Retention",
    "Start",
    "StreamEntry",
    "StreamInfo",
    "Streams",
]

# How long close() waits for gRPC to write the acknowledgements queued (they are lost if
# the connection is stuck; the entries come back after the ack timeout).
CLOSE_GRACE = 2.0
# Then, as the contract confirms no ack and the server drops the acks it has not yet read
# when the stream is cancelled, close() gives the server this long after the
# last ack or nack was written before it cancels the stream (no wait when none was
# written this recently).
CLOSE_SETTLE = 0.5
# The contract's limit of ids in one Ack or Nack.
MAX_IDS = 10_000


class Start(enum.Enum):
    """Where a group that does not exist yet starts reading its stream: at entries
    appended from now on (NEW), or at the oldest entry the stream retains (EARLIEST). An
    entry id (str) or a datetime, given to `consume` instead, starts after that id / at
    that time."""

    NEW = "new"
    EARLIEST = "earliest"


@dataclass(frozen=True)
class Appended:
    """What an append gave: the entry's `id`, and `duplicate` when an earlier append of
    the same idempotency key made it (and this one added nothing)."""

    id: str
    duplicate: bool


@dataclass(frozen=True)
class StreamEntry:
    """An entry of a stream, as `read` replays it: `appended_at` is the time part of its
    id (Redis clock, milliseconds)."""

    id: str
    payload: bytes
    headers: Mapping[str, str]
    appended_at: datetime


@dataclass(frozen=True)
class Retention:
    """Bounds of a stream, both applied when both are set: about the last `max_len`
    entries, and entries younger than `max_age` (None: no such bound)."""

    max_len: int | None = None
    max_age: timedelta | None = None


@dataclass(frozen=True)
class ConsumerInfo:
    """A consumer of a group: entries delivered to it and not acknowledged, and how long
    since it last read."""

    name: str
    pending: int
    idle: timedelta


@dataclass(frozen=True)
class GroupInfo:
    """A consumer group: entries delivered and not acknowledged (`pending`), the last
    entry delivered to it, entries retained it has not been delivered yet (`lag`), and its
    consumers."""

    name: str
    pending: int
    last_delivered_id: str
    lag: int
    consumers: tuple[ConsumerInfo, ...]


@dataclass(frozen=True)
class StreamInfo:
    """What `info` says of a stream (`exists` False, and the rest empty, when there is
    none): entries retained, the first and last ids ("" when none), its retention and its
    groups."""

    exists: bool
    length: int
    first_id: str
    last_id: str
    retention: Retention
    groups: tuple[GroupInfo, ...]


@dataclass(frozen=True)
class Message:
    """An entry delivered to a consumer: `delivery_count` is 1 the first time, more when
    redelivered; `first_delivered_at` is when it was first delivered to the group,
    `appended_at` the time part of its id (both by the Redis clock).
    `ack()` it once handled, or `nack()` it to have it delivered again."""

    id: str
    payload: bytes
    headers: Mapping[str, str]
    delivery_count: int
    first_delivered_at: datetime
    appended_at: datetime
    _consumer: Consumer = field(repr=False, compare=False)

    def ack(self) -> None:
        """Acknowledge it: handled, never to be delivered again. Sent on the consumer's
        stream (the next one, if it is being opened again); raises PatternsError when the
        consumer is closed (the entry is then delivered again after the ack timeout)."""
        self._consumer._send(pb.ConsumeRequest(ack=pb.Ack(ids=[self.id])))

    def nack(self, delay: timedelta | float | None = None) -> None:
        """Hand it back: delivered again (to this consumer or another of the group) after
        `delay` (None: at the server's next check, within a second; at most the
        consumer's ack timeout, else InvalidArgument), its delivery count one higher."""
        self._consumer._send(_nack(self.id, delay, self._consumer._ack_timeout))


@dataclass(frozen=True)
class AsyncMessage:
    """Message of the asyncio client: `await ack()`, `await nack(delay=...)`."""

    id: str
    payload: bytes
    headers: Mapping[str, str]
    delivery_count: int
    first_delivered_at: datetime
    appended_at: datetime
    _consumer: AsyncConsumer = field(repr=False, compare=False)

    async def ack(self) -> None:
        """Acknowledge it: handled, never to be delivered again. Sent on the consumer's
        stream (the next one, if it is being opened again); raises PatternsError when the
        consumer is closed (the entry is then delivered again after the ack timeout)."""
        self._consumer._send(pb.ConsumeRequest(ack=pb.Ack(ids=[self.id])))

    async def nack(self, delay: timedelta | float | None = None) -> None:
        """Hand it back: delivered again (to this consumer or another of the group) after
        `delay` (None: at the server's next check, within a second; at most the
        consumer's ack timeout, else InvalidArgument), its delivery count one higher."""
        self._consumer._send(_nack(self.id, delay, self._consumer._ack_timeout))


def _nack(
    entry_id: str, delay: timedelta | float | None, ack_timeout: timedelta | None
) -> pb.ConsumeRequest:
    """A nack; InvalidArgument, and nothing sent, for a delay the server would refuse (the
    refusal would end the consumer's stream, taking every message in flight with it)."""
    wait = None if delay is None else timedelta(seconds=seconds(delay))
    if wait is not None and (wait < timedelta(0) or (ack_timeout and wait > ack_timeout)):
        limit = f"{ack_timeout.total_seconds():g}s" if ack_timeout else "the ack timeout"
        problem = f"must be 0 to the ack timeout ({limit}); got {wait.total_seconds():g}s"
        raise InvalidArgument(
            f"nack.delay {problem}",
            code=grpc.StatusCode.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field_violations=(FieldViolation("nack.delay", problem),),
        )
    return pb.ConsumeRequest(nack=pb.Nack(ids=[entry_id], delay=duration(wait)))


def _closed_error() -> PatternsError:
    return PatternsError("the consumer is closed: the entry is delivered again after its timeout")


def _open_request(
    stream: str,
    group: str,
    consumer: str,
    start: Start | str | datetime,
    max_in_flight: int | None,
    ack_timeout: timedelta | None,
    max_deliveries: int | None,
) -> pb.ConsumeRequest:
    if isinstance(start, datetime):
        position = pb.START_POSITION_AT_TIME
    elif isinstance(start, str):
        position = pb.START_POSITION_AT_ID
    elif start is Start.EARLIEST:
        position = pb.START_POSITION_EARLIEST
    else:
        position = pb.START_POSITION_NEW
    opening = pb.ConsumeOpen(
        stream=stream,
        group=group,
        consumer=consumer,
        start=position,
        start_id=start if isinstance(start, str) else "",
        start_time=timestamp(start) if isinstance(start, datetime) else None,
        max_in_flight=max_in_flight or 0,
        ack_timeout=duration(ack_timeout),
        max_deliveries=max_deliveries or 0,
    )
    return pb.ConsumeRequest(open=opening)


def _coalesced(batch: list[pb.ConsumeRequest | None]) -> Iterator[pb.ConsumeRequest]:
    """The acks and nacks of `batch` (those waiting to be written together, as when the
    server or the network is slower than the handler) in as few messages as the contract
    allows: every ack in one, the nacks of one delay in one."""
    acks: list[str] = []
    nacks: dict[int, tuple[pb.Nack, list[str]]] = {}
    for request in batch:
        if request is None:
            continue
        if request.HasField("ack"):
            acks.extend(request.ack.ids)
        else:
            delay = request.nack.delay.ToNanoseconds()
            nacks.setdefault(delay, (request.nack, []))[1].extend(request.nack.ids)
    for start in range(0, len(acks), MAX_IDS):
        yield pb.ConsumeRequest(ack=pb.Ack(ids=acks[start : start + MAX_IDS]))
    for nack, ids in nacks.values():
        for start in range(0, len(ids), MAX_IDS):
            chunk = ids[start : start + MAX_IDS]
            yield pb.ConsumeRequest(nack=pb.Nack(ids=chunk, delay=nack.delay))


def _resumable(error: grpc.RpcError) -> PatternsError | None:
    """The failure, when opening the stream again may cure it; None when it is for the
    reader (a bad argument, a refused key)."""
    failure = from_rpc_error(error)
    # grpc.aio's own INTERNAL for an acknowledgement written as the stream ended (the
    # server's status is lost): the stream broke, as UNAVAILABLE would have said.
    if failure.code in RESUMABLE or lost_status(failure):
        return failure
    return None


def _fields(delivery: pb.Delivery) -> tuple[str, bytes, dict[str, str], int, datetime, datetime]:
    return (
        delivery.id,
        bytes(delivery.payload),
        dict(delivery.headers),
        delivery.delivery_count,
        to_datetime(delivery.first_delivered_at),
        to_datetime(delivery.appended_at),
    )


def _ack_timeout(subscribed: pb.Subscribed) -> timedelta | None:
    if not subscribed.HasField("ack_timeout"):
        return None
    return subscribed.ack_timeout.ToTimedelta()


_SUBSCRIBED = _Subscribed()


class Consumer:
    """The messages of a group's consumer: an iterator of Message, until `close()` (or
    the end of its `with` block). It opens its stream again after an interruption, with
    backoff. `subscribed` is set while the server confirms the consumer is in place;
    `wait_subscribed()` opens the stream and returns once it is, consuming no message."""

    def __init__(self, stub: Any, request: pb.ConsumeRequest, metadata: Any) -> None:
        self._stub = stub
        self._request = request
        self._metadata = metadata
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        # The requests of the open stream, written by gRPC's thread; None between streams,
        # when acknowledgements wait in _unsent for the next one.
        self._outgoing: queue.SimpleQueue[pb.ConsumeRequest | None] | None = None
        self._unsent: list[pb.ConsumeRequest] = []
        # Set once the open stream's requests are all written (the last one ended them);
        # when the last ack or nack was written (time.monotonic()).
        self._written = threading.Event()
        self._last_write = float("-inf")
        self._ack_timeout: timedelta | None = None  # in force, as the server confirmed it
        self.subscribed = threading.Event()
        self._items = self._run()
        # One reader of the stream at a time: the iteration, or wait_subscribed's helper,
        # which keeps the messages it read past for the iteration.
        self._reading = threading.Lock()
        self._pending: deque[Message] = deque()
        self._failure: PatternsError | None = None
        self._helper: threading.Thread | None = None
        self._settled = threading.Event()

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        with self._reading:
            while True:
                if self._pending:
                    return self._pending.popleft()
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure
                item = next(self._items)
                if isinstance(item, Message):
                    return item

    def wait_subscribed(self, timeout: float | timedelta | None = None) -> None:
        """Open the stream (if iterating has not) and return once the server has
        confirmed the consumer (its group made if new): an entry appended after this
        returns reaches the group. No message is consumed: iterate as usual after. Raises
        DeadlineExceeded when no confirmation came within `timeout` (None: wait as long
        as it takes; the consumer goes on trying), or the failure that ended it."""
        limit = None if timeout is None else time.monotonic() + seconds(timeout)
        while not self.subscribed.is_set():
            if self._failure is not None:
                raise self._failure
            if self._closed.is_set():
                raise PatternsError("the consumer is closed")
            with self._lock:
                if self._helper is None or not self._helper.is_alive():
                    self._settled.clear()
                    self._helper = threading.Thread(
                        target=self._read_until_subscribed, name="wait_subscribed", daemon=True
                    )
                    self._helper.start()
            left = 0.05 if limit is None else min(0.05, limit - time.monotonic())
            if left <= 0:
                raise _not_confirmed(timeout)
            self._settled.wait(left)

    def _read_until_subscribed(self) -> None:
        try:
            with self._reading:
                while not self.subscribed.is_set() and not self._closed.is_set():
                    try:
                        item = next(self._items)
                    except StopIteration:
                        return
                    except PatternsError as failure:
                        self._failure = failure
                        return
                    if not isinstance(item, Message):
                        return
                    self._pending.append(item)
        finally:
            self._settled.set()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the consumer: the acknowledgements given so far are written, and the
        stream is cancelled half a second after the last (time for the server to apply
        them: the contract confirms none). An iteration in progress stops. Messages
        delivered and not acknowledged go to the group again after the ack timeout."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            self._settled.set()
            call, outgoing, written = self._call, self._outgoing, self._written
        if call is None:
            return
        if outgoing is not None:
            outgoing.put(None)  # gRPC writes what is queued, then ends the client's side
            if not call.done() and written.wait(CLOSE_GRACE):
                time.sleep(max(self._last_write + CLOSE_SETTLE - time.monotonic(), 0))
        call.cancel()

    def _send(self, request: pb.ConsumeRequest) -> None:
        with self._lock:
            if self._closed.is_set():
                raise _closed_error()
            if self._outgoing is not None:
                self._outgoing.put(request)
            else:
                self._unsent.append(request)

    def _requests(
        self, outgoing: queue.SimpleQueue[pb.ConsumeRequest | None], written: threading.Event
    ) -> Iterator[pb.ConsumeRequest]:
        """One stream's requests, for gRPC's thread that writes them: the opening, then
        acknowledgements until None. gRPC asks for the next request once the last one is
        written, which tells when each was."""
        yield self._request
        while True:
            batch = [outgoing.get()]
            with contextlib.suppress(queue.Empty):
                while batch[-1] is not None:
                    batch.append(outgoing.get_nowait())
            for request in _coalesced(batch):
                yield request
                self._last_write = time.monotonic()
            if batch[-1] is None:
                written.set()
                return

    def _open(self) -> Any:
        """A new stream, with the acknowledgements the last one did not carry."""
        with self._lock:
            if self._closed.is_set():
                return None
            outgoing: queue.SimpleQueue[pb.ConsumeRequest | None] = queue.SimpleQueue()
            for request in self._unsent:
                outgoing.put(request)
            self._unsent.clear()
            self._outgoing = outgoing
            self._written = written = threading.Event()
            requests = self._requests(outgoing, written)
            self._call = self._stub.Consume(requests, metadata=self._metadata)
            return self._call

    def _ended(self) -> None:
        """The stream ended: keep what it did not write for the next one, stop its writer."""
        with self._lock:
            outgoing, self._outgoing = self._outgoing, None
            if outgoing is None:
                return
            with contextlib.suppress(queue.Empty):
                while (request := outgoing.get_nowait()) is not None:
                    self._unsent.append(request)
            outgoing.put(None)

    def _run(self) -> Iterator[Message | _Subscribed]:
        backoff = _Backoff()
        while not self._closed.is_set():
            call = self._open()
            if call is None:
                return
            try:
                for response in call:
                    if self._closed.is_set():
                        return  # what arrives while closing is delivered again, later
                    kind = response.WhichOneof("kind")
                    if kind == "subscribed":
                        self._ack_timeout = _ack_timeout(response.subscribed)
                        self.subscribed.set()
                        backoff.reset()
                        yield _SUBSCRIBED
                    elif kind == "delivery":
                        yield Message(*_fields(response.delivery), self)
                if self._closed.is_set():
                    return
                interrupted = PatternsError("the server ended the stream")
            except grpc.RpcError as error:
                if self._closed.is_set():
                    return
                failure = _resumable(error)
                if failure is None:
                    raise from_rpc_error(error) from None
                interrupted = failure
            finally:
                self.subscribed.clear()
                # Closing, close() ends the call itself, once it has sent what is queued.
                if not self._closed.is_set():
                    self._ended()
                    call.cancel()
            self._closed.wait(backoff.after(interrupted))


class AsyncConsumer:
    """Consumer of the asyncio client: an async iterator of AsyncMessage (`async for`,
    `async with`), with `await wait_subscribed()` and `await close()`."""

    def __init__(self, stub: Any, request: pb.ConsumeRequest, metadata: Any) -> None:
        self._stub = stub
        self._request = request
        self._metadata = metadata
        self._closed = asyncio.Event()
        self._call: Any = None
        self._outgoing: asyncio.Queue[pb.ConsumeRequest | None] | None = None
        self._unsent: list[pb.ConsumeRequest] = []
        self._written = asyncio.Event()  # as Consumer's
        self._last_write = float("-inf")
        self._ack_timeout: timedelta | None = None
        self.subscribed = asyncio.Event()
        self._items = self._run()
        self._reading = asyncio.Lock()  # one reader of the stream at a time
        self._pending: deque[AsyncMessage] = deque()
        self._helper: asyncio.Future[None] | None = None

    def __aiter__(self) -> AsyncIterator[AsyncMessage]:
        return self

    async def __anext__(self) -> AsyncMessage:
        async with self._reading:
            while True:
                if self._pending:
                    return self._pending.popleft()
                item = await self._items.__anext__()
                if isinstance(item, AsyncMessage):
                    return item

    async def wait_subscribed(self, timeout: float | timedelta | None = None) -> None:
        """Open the stream (if iterating has not) and return once the server has
        confirmed the consumer (its group made if new): an entry appended after this
        returns reaches the group. No message is consumed. Raises DeadlineExceeded when
        no confirmation came within `timeout` (None: wait as long as it takes),
        PatternsError when the consumer is closed, or the failure that ended it."""
        if self.subscribed.is_set():
            return
        if self._closed.is_set():
            raise PatternsError("the consumer is closed")
        if self._helper is None or self._helper.done():
            self._helper = asyncio.ensure_future(self._read_until_subscribed())
        # The helper reads the stream only when no iteration does; while one does, the
        # iteration sees the confirmation and `subscribed` says so: whichever comes first.
        confirmed = asyncio.ensure_future(self.subscribed.wait())
        either: list[asyncio.Future[Any]] = [self._helper, confirmed]
        try:
            done, _ = await asyncio.wait(
                either,
                timeout=None if timeout is None else seconds(timeout),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            confirmed.cancel()
        if self.subscribed.is_set():
            return
        if not done:
            raise _not_confirmed(timeout)
        self._helper.result()  # the failure that ended the consumer, if one did

    async def _read_until_subscribed(self) -> None:
        async with self._reading:
            while not self.subscribed.is_set() and not self._closed.is_set():
                try:
                    item = await self._items.__anext__()
                except StopAsyncIteration:
                    return
                if not isinstance(item, AsyncMessage):
                    return
                self._pending.append(item)

    async def __aenter__(self) -> AsyncConsumer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End the consumer: the acknowledgements given so far are written, and the
        stream is cancelled half a second after the last (time for the server to apply
        them: the contract confirms none). An iteration in progress stops. Messages
        delivered and not acknowledged go to the group again after the ack timeout."""
        if self._closed.is_set():
            return
        self._closed.set()
        call, outgoing, written = self._call, self._outgoing, self._written
        if call is None:
            return
        if outgoing is not None:
            outgoing.put_nowait(None)  # gRPC writes what is queued, then ends our side
            if not call.done():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(written.wait(), CLOSE_GRACE)
                    settle = self._last_write + CLOSE_SETTLE - time.monotonic()
                    await asyncio.sleep(max(settle, 0))
        call.cancel()

    def _send(self, request: pb.ConsumeRequest) -> None:
        if self._closed.is_set():
            raise _closed_error()
        if self._outgoing is not None:
            self._outgoing.put_nowait(request)
        else:
            self._unsent.append(request)

    async def _requests(
        self, outgoing: asyncio.Queue[pb.ConsumeRequest | None], written: asyncio.Event
    ) -> AsyncIterator[pb.ConsumeRequest]:
        """One stream's requests, for gRPC's task that writes them: the opening, then
        acknowledgements until None (each asked for once the last is written)."""
        yield self._request
        while True:
            batch = [await outgoing.get()]
            with contextlib.suppress(asyncio.QueueEmpty):
                while batch[-1] is not None:
                    batch.append(outgoing.get_nowait())
            for request in _coalesced(batch):
                yield request
                self._last_write = time.monotonic()
            if batch[-1] is None:
                written.set()
                return

    def _open(self) -> Any:
        """A new stream, with the acknowledgements the last one did not carry."""
        outgoing: asyncio.Queue[pb.ConsumeRequest | None] = asyncio.Queue()
        for request in self._unsent:
            outgoing.put_nowait(request)
        self._unsent.clear()
        self._outgoing = outgoing
        self._written = written = asyncio.Event()
        self._call = self._stub.Consume(self._requests(outgoing, written), metadata=self._metadata)
        return self._call

    def _ended(self) -> None:
        """The stream ended: keep what it did not write for the next one, stop its writer."""
        outgoing, self._outgoing = self._outgoing, None
        if outgoing is None:
            return
        while not outgoing.empty():
            request = outgoing.get_nowait()
            if request is not None:
                self._unsent.append(request)
        outgoing.put_nowait(None)

    async def _run(self) -> AsyncIterator[AsyncMessage | _Subscribed]:
        backoff = _Backoff()
        while not self._closed.is_set():
            call = self._open()
            try:
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        break
                    if self._closed.is_set():
                        return  # what arrives while closing is delivered again, later
                    kind = response.WhichOneof("kind")
                    if kind == "subscribed":
                        self._ack_timeout = _ack_timeout(response.subscribed)
                        self.subscribed.set()
                        backoff.reset()
                        yield _SUBSCRIBED
                    elif kind == "delivery":
                        yield AsyncMessage(*_fields(response.delivery), self)
                if self._closed.is_set():
                    return
                interrupted = PatternsError("the server ended the stream")
            except asyncio.CancelledError:
                if self._closed.is_set():
                    return
                raise
            except grpc.RpcError as error:
                if self._closed.is_set():
                    return
                failure = _resumable(error)
                if failure is None:
                    raise from_rpc_error(error) from None
                interrupted = failure
            finally:
                self.subscribed.clear()
                # Closing, close() ends the call itself, once it has sent what is queued.
                if not self._closed.is_set():
                    self._ended()
                    call.cancel()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closed.wait(), backoff.after(interrupted))


def _append_request(
    stream: str,
    payload: bytes,
    headers: Mapping[str, str] | None,
    idempotency_key: str | None,
    idempotency_window: timedelta | None,
) -> pb.AppendRequest:
    return pb.AppendRequest(
        stream=stream,
        payload=payload,
        headers=dict(headers or {}),
        idempotency_key=idempotency_key or "",
        idempotency_window=duration(idempotency_window),
    )


def _appended(response: pb.AppendResponse) -> Appended:
    return Appended(response.id, response.duplicate)


def _read_request(stream: str, after: str | datetime | None, limit: int | None) -> pb.ReadRequest:
    if isinstance(after, datetime):
        return pb.ReadRequest(stream=stream, at_time=timestamp(after), limit=limit or 0)
    return pb.ReadRequest(stream=stream, after_id=after, limit=limit or 0)


def _entries(response: pb.ReadResponse) -> list[StreamEntry]:
    return [
        StreamEntry(e.id, bytes(e.payload), dict(e.headers), to_datetime(e.appended_at))
        for e in response.entries
    ]


def _bounds(max_len: int | None, max_age: timedelta | None) -> pb.Retention:
    return pb.Retention(max_len=max_len or 0, max_age=duration(max_age))


def _retention(message: pb.Retention) -> Retention:
    age = message.max_age.ToTimedelta() if message.HasField("max_age") else None
    return Retention(message.max_len or None, age or None)


def _info(response: pb.InfoResponse) -> StreamInfo:
    groups = tuple(
        GroupInfo(
            g.name,
            g.pending,
            g.last_delivered_id,
            g.lag,
            tuple(ConsumerInfo(c.name, c.pending, c.idle.ToTimedelta()) for c in g.consumers),
        )
        for g in response.groups
    )
    return StreamInfo(
        response.exists,
        response.length,
        response.first_id,
        response.last_id,
        _retention(response.retention),
        groups,
    )


class Streams:
    """`client.streams` of the blocking client."""

    def __init__(self, calls: Calls, stub: streams_pb2_grpc.StreamsStub) -> None:
        self._calls = calls
        self._stub = stub

    def append(
        self,
        stream: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        idempotency_window: timedelta | None = None,
    ) -> Appended:
        """Append an entry to `stream` (made if new). With `idempotency_key`, a repeat
        of the key within `idempotency_window` (the server's default: 24 hours) appends
        nothing and answers the first append's id, with `duplicate` True."""
        request = _append_request(stream, payload, headers, idempotency_key, idempotency_window)
        return _appended(self._calls.unary(self._stub.Append, request))

    def read(
        self, stream: str, *, after: str | datetime | None = None, limit: int | None = None
    ) -> list[StreamEntry]:
        """Replay `stream` without a group, oldest first: the entries after an id, or
        appended from a time (a datetime); from the oldest retained when `after` is None.
        At most `limit` (1 to 1,000; the server's default: 100): read the next page
        after the last id."""
        request = _read_request(stream, after, limit)
        return _entries(self._calls.unary(self._stub.Read, request))

    def consume(
        self,
        stream: str,
        *,
        group: str,
        consumer: str,
        start: Start | str | datetime = Start.NEW,
        max_in_flight: int | None = None,
        ack_timeout: timedelta | None = None,
        max_deliveries: int | None = None,
    ) -> Consumer:
        """A Consumer of `stream` as `consumer` of `group` (the group made at `start` if
        new: Start.NEW, Start.EARLIEST, after an entry id, or at a datetime):
        `for message in ...: handle(message); message.ack()`. At most `max_in_flight`
        delivered and unacknowledged at once; an entry not acknowledged within
        `ack_timeout` is delivered again, up to `max_deliveries` times in all, then moved
        to `<stream>:dead` (None: the server's defaults, 10, 30 s and 5)."""
        request = _open_request(
            stream, group, consumer, start, max_in_flight, ack_timeout, max_deliveries
        )
        return Consumer(self._stub, request, self._calls.metadata)

    def info(self, stream: str) -> StreamInfo:
        """The stream's length, first and last ids, retention, and groups with their
        consumers, pending entries and lag."""
        request = pb.InfoRequest(stream=stream)
        return _info(self._calls.unary(self._stub.Info, request))

    def trim(
        self, stream: str, *, max_len: int | None = None, max_age: timedelta | None = None
    ) -> int:
        """Delete entries from the start of `stream` once: beyond about `max_len`, or
        older than `max_age` (at least one); how many went. Pending entries deleted are
        never delivered again."""
        request = pb.TrimRequest(stream=stream, bounds=_bounds(max_len, max_age))
        return int(self._calls.unary(self._stub.Trim, request).deleted)

    def set_retention(
        self, stream: str, *, max_len: int | None = None, max_age: timedelta | None = None
    ) -> int:
        """Bound `stream` from now on (each append trims it; neither: no bound), and
        apply the bounds now; how many entries that deleted."""
        request = pb.SetRetentionRequest(stream=stream, retention=_bounds(max_len, max_age))
        return int(self._calls.unary(self._stub.SetRetention, request).deleted)

    def delete_group(self, stream: str, group: str) -> bool:
        """Delete `group` with its pending entries (the entries stay in the stream); its
        consumers end with Aborted. Whether there was such a group."""
        request = pb.DeleteGroupRequest(stream=stream, group=group)
        return bool(self._calls.unary(self._stub.DeleteGroup, request).deleted)


class AsyncStreams:
    """`client.streams` of the asyncio client."""

    def __init__(self, calls: AsyncCalls, stub: streams_pb2_grpc.StreamsStub) -> None:
        self._calls = calls
        self._stub = stub

    async def append(
        self,
        stream: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        idempotency_window: timedelta | None = None,
    ) -> Appended:
        """Append an entry to `stream` (made if new). With `idempotency_key`, a repeat
        of the key within `idempotency_window` (the server's default: 24 hours) appends
        nothing and answers the first append's id, with `duplicate` True."""
        request = _append_request(stream, payload, headers, idempotency_key, idempotency_window)
        return _appended(await self._calls.unary(self._stub.Append, request))

    async def read(
        self, stream: str, *, after: str | datetime | None = None, limit: int | None = None
    ) -> list[StreamEntry]:
        """Replay `stream` without a group, oldest first: the entries after an id, or
        appended from a time (a datetime); from the oldest retained when `after` is None.
        At most `limit` (1 to 1,000; the server's default: 100)."""
        request = _read_request(stream, after, limit)
        return _entries(await self._calls.unary(self._stub.Read, request))

    def consume(
        self,
        stream: str,
        *,
        group: str,
        consumer: str,
        start: Start | str | datetime = Start.NEW,
        max_in_flight: int | None = None,
        ack_timeout: timedelta | None = None,
        max_deliveries: int | None = None,
    ) -> AsyncConsumer:
        """An AsyncConsumer of `stream` as `consumer` of `group`:
        `async for message in ...: ...; await message.ack()`. `start` and the limits are
        those of the blocking client's `consume`."""
        request = _open_request(
            stream, group, consumer, start, max_in_flight, ack_timeout, max_deliveries
        )
        return AsyncConsumer(self._stub, request, self._calls.metadata)

    async def info(self, stream: str) -> StreamInfo:
        """The stream's length, first and last ids, retention, and groups with their
        consumers, pending entries and lag."""
        request = pb.InfoRequest(stream=stream)
        return _info(await self._calls.unary(self._stub.Info, request))

    async def trim(
        self, stream: str, *, max_len: int | None = None, max_age: timedelta | None = None
    ) -> int:
        """Delete entries from the start of `stream` once: beyond about `max_len`, or
        older than `max_age` (at least one); how many went."""
        request = pb.TrimRequest(stream=stream, bounds=_bounds(max_len, max_age))
        return int((await self._calls.unary(self._stub.Trim, request)).deleted)

    async def set_retention(
        self, stream: str, *, max_len: int | None = None, max_age: timedelta | None = None
    ) -> int:
        """Bound `stream` from now on (each append trims it; neither: no bound), and
        apply the bounds now; how many entries that deleted."""
        request = pb.SetRetentionRequest(stream=stream, retention=_bounds(max_len, max_age))
        return int((await self._calls.unary(self._stub.SetRetention, request)).deleted)

    async def delete_group(self, stream: str, group: str) -> bool:
        """Delete `group` with its pending entries (the entries stay in the stream); its
        consumers end with Aborted. Whether there was such a group."""
        request = pb.DeleteGroupRequest(stream=stream, group=group)
        return bool((await self._calls.unary(self._stub.DeleteGroup, request)).deleted)
