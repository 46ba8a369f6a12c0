"""Streams contract on every backend (standalone 7, 6.2, Cluster, ...): appends and replay,
idempotent appends, consumer groups sharing a stream, max_in_flight, redelivery after the
ack timeout or a nack, dead letters, retention, Info, DeleteGroup; and, on a Redis of the
test's own, a consumer killed, a server restarted, Redis stopped, and 1,000 consumers."""

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from patterns.streams.v1 import streams_pb2 as pb
from patterns.streams.v1 import streams_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from tests.durations import duration_ms
from tests.rpc import assert_invalid, assert_unavailable, details, once_answered
from tests.waiting import eventually

Stub = streams_pb2_grpc.StreamsStub
AioStub = streams_pb2_grpc.StreamsStub
MINUTE = Duration(seconds=60)
# How long a test waits for something that should come within a second or two.
PATIENCE = 15.0


@pytest.fixture
def streams(channel: grpc.Channel) -> Stub:
    return Stub(channel)


def append(stub: Stub, stream: str, payload: bytes, **fields: Any) -> pb.AppendResponse:
    return stub.Append(pb.AppendRequest(stream=stream, payload=payload, **fields), timeout=10)


def info(stub: Stub, stream: str) -> pb.InfoResponse:
    return stub.Info(pb.InfoRequest(stream=stream), timeout=10)


def group_of(stub: Stub, stream: str, group: str) -> pb.GroupInfo:
    return next(g for g in info(stub, stream).groups if g.name == group)


class Consumer:
    """A Consume stream on an asyncio channel: its deliveries, read one at a time, and
    the acks and nacks it sends."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._read: asyncio.Future[Any] | None = None  # a read in progress

    async def nothing_for(self, seconds: float) -> None:
        """Nothing is delivered for `seconds`."""
        try:
            message = await asyncio.wait_for(asyncio.shield(self._pending()), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"delivered: {message}")

    def _pending(self) -> "asyncio.Future[Any]":
        if self._read is None:
            self._read = asyncio.ensure_future(self.call.read())
        return self._read

    async def next(self, within: float = PATIENCE) -> pb.Delivery:
        """The next delivery (after `nothing_for`, the one it was waiting for)."""
        message = await asyncio.wait_for(asyncio.shield(self._pending()), within)
        self._read = None
        assert message is not grpc.aio.EOF and message.WhichOneof("kind") == "delivery"
        return message.delivery

    async def ack(self, *ids: str) -> None:
        await self.call.write(pb.ConsumeRequest(ack=pb.Ack(ids=ids)))

    async def nack(self, *ids: str, delay: Duration | None = None) -> None:
        await self.call.write(pb.ConsumeRequest(nack=pb.Nack(ids=ids, delay=delay)))


@asynccontextmanager
async def consuming(
    target: Any, stream: str, group: str, consumer: str = "", **fields: Any
) -> AsyncIterator[Consumer]:
    """A consumer opened on `target` (an asyncio stub, or a server's address to open a
    channel to), cancelled when the block ends."""
    if isinstance(target, str):
        async with (
            aio_stub(target) as stub,
            consuming(stub, stream, group, consumer, **fields) as opened,
        ):
            yield opened
        return
    call = target.Consume(timeout=120)
    opening = pb.ConsumeOpen(
        stream=stream, group=group, consumer=consumer or uuid.uuid4().hex, **fields
    )
    await call.write(pb.ConsumeRequest(open=opening))
    first = await asyncio.wait_for(call.read(), PATIENCE)
    assert first.WhichOneof("kind") == "subscribed", first
    try:
        yield Consumer(call)
    finally:
        call.cancel()


@asynccontextmanager
async def aio_stub(address: str) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield AioStub(channel)


# Append and Read


def test_append_then_read_replays_in_order_from_an_id_and_a_time(
    streams: Stub, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    ids = [append(streams, stream, b"p%d" % n, headers={"n": str(n)}).id for n in range(5)]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    page = streams.Read(pb.ReadRequest(stream=stream, limit=2), timeout=10).entries
    assert [e.id for e in page] == ids[:2]
    assert page[1].payload == b"p1" and dict(page[1].headers) == {"n": "1"}
    assert abs(page[0].appended_at.ToMilliseconds() - int(ids[0].split("-")[0])) == 0
    rest = streams.Read(pb.ReadRequest(stream=stream, after_id=page[-1].id), timeout=10)
    assert [e.id for e in rest.entries] == ids[2:]
    start = Timestamp()
    start.FromMilliseconds(int(ids[3].split("-")[0]))
    at = streams.Read(pb.ReadRequest(stream=stream, at_time=start), timeout=10).entries
    assert at[0].id <= ids[3] and ids[3] in [e.id for e in at] and at[-1].id == ids[-1]
    assert not streams.Read(pb.ReadRequest(stream=new_key()), timeout=10).entries


def test_fifty_concurrent_idempotent_appends_append_once(
    server: PatternsServer, streams: Stub, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario() -> list[pb.AppendResponse]:
        async with aio_stub(server.address) as stub:
            request = pb.AppendRequest(stream=stream, payload=b"order 7", idempotency_key="o7")
            return await asyncio.gather(*(stub.Append(request, timeout=10) for _ in range(50)))

    answers = asyncio.run(scenario())
    assert len({a.id for a in answers}) == 1
    assert sum(not a.duplicate for a in answers) == 1
    assert info(streams, stream).length == 1
    other = append(streams, stream, b"order 8", idempotency_key="o8")
    assert not other.duplicate and info(streams, stream).length == 2


# Consumer groups


def test_two_consumers_split_a_thousand_entries_and_two_groups_each_get_all(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def drain(stub: Any, group: str, consumer: Consumer, seen: list[str]) -> None:
        while True:
            try:
                delivery = await consumer.next(within=3.0)
            except TimeoutError:
                return  # nothing more for 3 s: the others have the rest
            seen.append(delivery.id)
            await consumer.ack(delivery.id)

    async def scenario() -> tuple[list[str], list[str], list[str], list[str]]:
        async with aio_stub(server.address) as stub:
            opened = {"start": pb.START_POSITION_NEW, "max_in_flight": 50}
            async with (
                consuming(stub, stream, "split", "a", **opened) as a,
                consuming(stub, stream, "split", "b", **opened) as b,
                consuming(stub, stream, "whole", "c", **opened) as c,
            ):
                appended: list[str] = []
                for chunk in range(10):
                    answers = await asyncio.gather(
                        *(
                            stub.Append(pb.AppendRequest(stream=stream, payload=b"%d" % n))
                            for n in range(chunk * 100, chunk * 100 + 100)
                        )
                    )
                    appended += [answer.id for answer in answers]
                seen_a: list[str] = []
                seen_b: list[str] = []
                seen_c: list[str] = []
                await asyncio.gather(
                    drain(stub, "split", a, seen_a),
                    drain(stub, "split", b, seen_b),
                    drain(stub, "whole", c, seen_c),
                )
                return appended, seen_a, seen_b, seen_c

    appended, seen_a, seen_b, seen_c = asyncio.run(scenario())
    assert len(appended) == 1000
    assert sorted(seen_a + seen_b) == sorted(appended)  # none lost, none twice
    assert seen_a and seen_b  # both took a share
    assert seen_a == sorted(seen_a, key=_id_key) and seen_b == sorted(seen_b, key=_id_key)
    assert seen_c == sorted(appended, key=_id_key)  # the other group: all, in order


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def test_max_in_flight_holds_until_acks_free_room(
    server: PatternsServer, streams: Stub, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    ids = [append(streams, stream, b"%d" % n).id for n in range(10)]

    async def scenario() -> None:
        async with (
            aio_stub(server.address) as stub,
            consuming(
                stub, stream, "g", "c", start=pb.START_POSITION_EARLIEST, max_in_flight=3
            ) as consumer,
        ):
            first = [(await consumer.next()).id for _ in range(3)]
            assert first == ids[:3]
            await consumer.nothing_for(1.5)  # three in flight: no more
            await consumer.ack(first[0])
            assert (await consumer.next()).id == ids[3]
            await consumer.nothing_for(1.0)
            group = group_of(streams, stream, "g")
            assert group.pending == 3 and group.lag == 6
            assert [(c.name, c.pending) for c in group.consumers] == [("c", 3)]

    asyncio.run(scenario())


def test_start_positions_of_a_new_group(
    server: PatternsServer, streams: Stub, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    ids = [append(streams, stream, b"%d" % n).id for n in range(4)]
    at = Timestamp()
    at.FromMilliseconds(int(ids[2].split("-")[0]))

    async def first_of(group: str, **fields: Any) -> str:
        async with consuming(server.address, stream, group, **fields) as consumer:
            return (await consumer.next()).id

    async def scenario() -> None:
        assert await first_of("earliest", start=pb.START_POSITION_EARLIEST) == ids[0]
        assert await first_of("at-id", start=pb.START_POSITION_AT_ID, start_id=ids[1]) == ids[2]
        found = await first_of("at-time", start=pb.START_POSITION_AT_TIME, start_time=at)
        assert _id_key(found) <= _id_key(ids[2]) and found in ids
        async with consuming(server.address, stream, "new") as consumer:
            await consumer.nothing_for(1.2)  # the history is not its
            later = append(streams, stream, b"later").id
            assert (await consumer.next()).id == later

    asyncio.run(scenario())


def test_unacknowledged_entries_are_redelivered_then_dead_lettered(
    server: PatternsServer, streams: Stub, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    entry = append(streams, stream, b"poison", headers={"kind": "bad"}).id

    async def scenario() -> None:
        async with (
            aio_stub(server.address) as stub,
            consuming(
                stub,
                stream,
                "g",
                start=pb.START_POSITION_EARLIEST,
                ack_timeout=duration_ms(500),
                max_deliveries=3,
            ) as consumer,
        ):
            first = await consumer.next()
            assert (first.id, first.delivery_count) == (entry, 1)
            started = time.monotonic()
            second = await consumer.next()  # not acked: redelivered after 500 ms
            assert time.monotonic() - started >= 0.4
            assert (second.id, second.delivery_count) == (entry, 2)
            assert second.first_delivered_at == first.first_delivered_at
            await consumer.nack(entry)  # given back at once
            third = await consumer.next()
            assert (third.id, third.delivery_count) == (entry, 3)
            await consumer.nothing_for(1.5)  # the 4th would exceed max_deliveries

    asyncio.run(scenario())

    def dead() -> list[pb.Entry]:
        return list(streams.Read(pb.ReadRequest(stream=stream + ":dead"), timeout=10).entries)

    eventually(lambda: len(dead()) == 1, what="the dead letter")
    letter = dead()[0]
    assert letter.payload == b"poison"
    assert dict(letter.headers) == {
        "kind": "bad",
        "dead.id": entry,
        "dead.group": "g",
        "dead.delivery_count": "3",
        "dead.reason": "max_deliveries",
    }
    assert group_of(streams, stream, "g").pending == 0  # acknowledged as it moved


def test_a_nack_with_a_delay_waits_that_long(
    server: PatternsServer, streams: Stub, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    entry = append(streams, stream, b"later").id

    async def scenario() -> None:
        async with (
            aio_stub(server.address) as stub,
            consuming(
                stub, stream, "g", start=pb.START_POSITION_EARLIEST, ack_timeout=MINUTE
            ) as consumer,
        ):
            assert (await consumer.next()).id == entry
            await consumer.nack(entry, delay=duration_ms(1_500))
            started = time.monotonic()
            again = await consumer.next()
            assert again.id == entry and again.delivery_count == 2
            assert time.monotonic() - started >= 1.3
            await consumer.ack(entry)
        eventually(lambda: group_of(streams, stream, "g").pending == 0, what="the ack")

    asyncio.run(scenario())


def test_delete_group_ends_its_consumers(
    server: PatternsServer, streams: Stub, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    append(streams, stream, b"x")

    async def scenario() -> None:
        async with consuming(
            server.address, stream, "g", start=pb.START_POSITION_EARLIEST
        ) as consumer:
            await consumer.next()
            deleted = streams.DeleteGroup(pb.DeleteGroupRequest(stream=stream, group="g"))
            assert deleted.deleted
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(consumer.call.read(), PATIENCE)
            assert ended.value.code() == grpc.StatusCode.ABORTED
            assert details(ended.value)["ErrorInfo"].reason == "GROUP_DELETED"

    asyncio.run(scenario())
    assert not info(streams, stream).groups and info(streams, stream).length == 1
    again = streams.DeleteGroup(pb.DeleteGroupRequest(stream=stream, group="g"), timeout=10)
    assert not again.deleted


# Retention and Info


def test_retention_by_length_and_by_age(streams: Stub, new_key: Callable[[], str]) -> None:
    by_length = new_key()
    retention = pb.Retention(max_len=100)
    streams.SetRetention(pb.SetRetentionRequest(stream=by_length, retention=retention))
    for n in range(600):
        append(streams, by_length, b"%d" % n)
    described = info(streams, by_length)
    # Approximate: Redis trims whole nodes (100 entries each by default).
    assert 100 <= described.length <= 200, described.length
    assert described.retention.max_len == 100

    by_age = new_key()
    for n in range(250):
        append(streams, by_age, b"old %d" % n)
    age = pb.Retention(max_age=Duration(seconds=1))
    streams.SetRetention(pb.SetRetentionRequest(stream=by_age, retention=age))
    time.sleep(1.2)
    newest = append(streams, by_age, b"new").id
    described = info(streams, by_age)
    assert described.length <= 101 and described.last_id == newest  # whole old nodes went
    assert described.retention.max_age.seconds == 1

    trimmed = new_key()
    for n in range(300):
        append(streams, trimmed, b"%d" % n)
    bounds = pb.Retention(max_len=50)
    deleted = streams.Trim(pb.TrimRequest(stream=trimmed, bounds=bounds), timeout=10).deleted
    assert deleted >= 200 and info(streams, trimmed).length == 300 - deleted
    assert info(streams, trimmed).retention == pb.Retention()  # Trim sets none


def test_info_of_a_stream_and_of_none(streams: Stub, new_key: Callable[[], str]) -> None:
    stream = new_key()
    assert info(streams, stream) == pb.InfoResponse(exists=False)
    ids = [append(streams, stream, b"x").id for _ in range(3)]
    described = info(streams, stream)
    assert (described.exists, described.length) == (True, 3)
    assert (described.first_id, described.last_id) == (ids[0], ids[-1])
    assert not described.groups


# Bad input


def test_bad_input_is_refused_naming_the_field(streams: Stub) -> None:
    def bad_append(field: str, **fields: Any) -> None:
        request = pb.AppendRequest(**({"stream": "s"} | fields))
        assert_invalid(lambda: streams.Append(request, timeout=10), field)

    bad_append("stream", stream="")
    bad_append("stream", stream="s" * 513)
    bad_append("payload", payload=b"x" * (1024 * 1024 + 1))
    bad_append("headers['dead.id']", headers={"dead.id": "1"})
    bad_append("headers['']", headers={"": "1"})
    bad_append("headers['h']", headers={"h": "v" * 4097})
    bad_append("headers", headers={f"h{n}": "v" for n in range(65)})
    bad_append("idempotency_window", idempotency_key="k", idempotency_window=duration_ms(999))
    bad_append("idempotency_window", idempotency_window=MINUTE)
    bad_append("idempotency_key", idempotency_key="k" * 257)
    assert_invalid(lambda: streams.Read(pb.ReadRequest(stream="s", after_id="x")), "after_id")
    assert_invalid(lambda: streams.Read(pb.ReadRequest(stream="s", limit=1001)), "limit")
    assert_invalid(lambda: streams.Trim(pb.TrimRequest(stream="s")), "bounds")
    too_young = pb.Retention(max_age=duration_ms(999))
    assert_invalid(
        lambda: streams.SetRetention(pb.SetRetentionRequest(stream="s", retention=too_young)),
        "retention.max_age",
    )
    assert_invalid(lambda: streams.DeleteGroup(pb.DeleteGroupRequest(stream="s")), "group")
    assert_invalid(lambda: streams.Info(pb.InfoRequest()), "stream")


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([pb.ConsumeRequest(ack=pb.Ack(ids=["1-0"]))], "open"),
        ([pb.ConsumeRequest(open=pb.ConsumeOpen(stream="s", consumer="c"))], "open.group"),
        (
            [
                pb.ConsumeRequest(
                    open=pb.ConsumeOpen(stream="s", group="g", consumer="c", max_in_flight=10_001)
                )
            ],
            "open.max_in_flight",
        ),
        (
            [
                pb.ConsumeRequest(
                    open=pb.ConsumeOpen(
                        stream="s", group="g", consumer="c", ack_timeout=duration_ms(99)
                    )
                )
            ],
            "open.ack_timeout",
        ),
        (
            [
                pb.ConsumeRequest(
                    open=pb.ConsumeOpen(
                        stream="s", group="g", consumer="c", start=pb.START_POSITION_AT_ID
                    )
                )
            ],
            "open.start_id",
        ),
        (
            [
                pb.ConsumeRequest(open=pb.ConsumeOpen(stream="s", group="g", consumer="c")),
                pb.ConsumeRequest(ack=pb.Ack(ids=["not an id"])),
            ],
            "ack.ids[0]",
        ),
        (
            [
                pb.ConsumeRequest(open=pb.ConsumeOpen(stream="s", group="g", consumer="c")),
                pb.ConsumeRequest(nack=pb.Nack(ids=["1-0"], delay=Duration(seconds=31))),
            ],
            "nack.delay",
        ),
    ],
)
def test_consume_refuses_bad_messages(
    streams: Stub, messages: list[pb.ConsumeRequest], field: str
) -> None:
    def consume() -> None:
        # The client keeps its side open (a closed side ends the stream OK).
        def requests() -> Any:
            yield from messages
            time.sleep(PATIENCE)

        for _ in streams.Consume(requests(), timeout=PATIENCE):
            pass

    assert_invalid(consume, field)


# On a Redis of the test's own: a consumer killed, a server restarted, Redis stopped, many
# consumers.

KILLED = textwrap.dedent(
    """
    import sys, grpc
    from patterns.streams.v1 import streams_pb2 as pb, streams_pb2_grpc
    channel = grpc.insecure_channel(sys.argv[1])
    opening = pb.ConsumeOpen(stream=sys.argv[2], group="g", consumer="doomed",
                             start=pb.START_POSITION_EARLIEST, max_in_flight=5)
    def keep_open():
        yield pb.ConsumeRequest(open=opening)
        import time
        time.sleep(3600)
    for message in streams_pb2_grpc.StreamsStub(channel).Consume(keep_open()):
        if message.WhichOneof("kind") == "delivery":
            print(message.delivery.id, flush=True)
    """
)


def test_a_killed_consumers_entries_reach_another_after_the_ack_timeout(
    server: PatternsServer, streams: Stub, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    ids = [append(streams, stream, b"%d" % n).id for n in range(5)]
    doomed = subprocess.Popen(
        [sys.executable, "-c", KILLED, server.address, stream], stdout=subprocess.PIPE, text=True
    )
    try:
        assert doomed.stdout is not None
        taken = [doomed.stdout.readline().strip() for _ in ids]
        assert taken == ids
        doomed.kill()  # SIGKILL: it never acks
        doomed.wait()

        async def scenario() -> list[pb.Delivery]:
            async with (
                aio_stub(server.address) as stub,
                consuming(
                    stub, stream, "g", "survivor", ack_timeout=duration_ms(1_000)
                ) as survivor,
            ):
                return [await survivor.next() for _ in ids]

        redelivered = asyncio.run(scenario())
    finally:
        doomed.kill()
    assert sorted(d.id for d in redelivered) == ids
    assert {d.delivery_count for d in redelivered} == {2}


def test_a_server_restart_mid_consume_keeps_what_is_pending(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    server = server_on_own_redis()
    stream = "orders"
    with grpc.insecure_channel(server.address) as channel:
        ids = [append(Stub(channel), stream, b"%d" % n).id for n in range(6)]

    async def take(count: int, ack: bool, **fields: Any) -> list[pb.Delivery]:
        async with (
            aio_stub(server.address) as stub,
            consuming(stub, stream, "g", "worker", **fields) as consumer,
        ):
            taken = [await consumer.next() for _ in range(count)]
            if ack:
                await consumer.ack(*(d.id for d in taken))
                await settled(stub, stream, pending=0)  # the acks land before the cancel
            return taken

    opened = {"start": pb.START_POSITION_EARLIEST, "max_in_flight": 3}
    first = asyncio.run(take(3, ack=False, **opened))
    assert [d.id for d in first] == ids[:3]
    server.stop()
    server.start()
    with grpc.insecure_channel(server.address) as channel:
        assert group_of(Stub(channel), stream, "g").pending == 3  # kept in Redis
    # The same consumer, reopened: its pending entries come back after the ack timeout,
    # then the rest.
    again = asyncio.run(take(6, ack=True, ack_timeout=duration_ms(500)))
    assert sorted(d.id for d in again) == ids
    assert {d.id: d.delivery_count for d in again} == {i: 2 if i in ids[:3] else 1 for i in ids}


async def settled(stub: Any, stream: str, pending: int) -> None:
    """Wait until group g of `stream` has `pending` entries pending."""
    deadline = time.monotonic() + PATIENCE
    while True:
        described = await stub.Info(pb.InfoRequest(stream=stream), timeout=10)
        if next(g.pending for g in described.groups if g.name == "g") == pending:
            return
        assert time.monotonic() < deadline, "the acks did not land"
        await asyncio.sleep(0.05)


def test_shutdown_ends_consumers_with_unavailable_at_once(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    server = server_on_own_redis("--shutdown-grace", "5")

    async def scenario() -> None:
        async with aio_stub(server.address) as stub:
            calls = []
            for n in range(10):
                call = stub.Consume(timeout=60)
                opening = pb.ConsumeOpen(stream="s", group="g", consumer=f"c{n}")
                await call.write(pb.ConsumeRequest(open=opening))
                assert (await call.read()).WhichOneof("kind") == "subscribed"
                calls.append(call)
            assert server.process is not None
            started = time.monotonic()
            server.process.terminate()
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await call.read()
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                assert details(ended.value)["ErrorInfo"].reason == "SHUTTING_DOWN"
            assert time.monotonic() - started < 4  # not held for the grace period

    asyncio.run(scenario())
    assert server.wait() == 0


def test_redis_down_ends_consumers_unavailable_then_they_resume(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    server = server_on_own_redis()
    stream = "payments"
    with grpc.insecure_channel(server.address) as channel:
        ids = [append(Stub(channel), stream, b"%d" % n).id for n in range(4)]

    async def scenario() -> None:
        async with aio_stub(server.address) as stub:
            opened = {"start": pb.START_POSITION_EARLIEST, "max_in_flight": 2}
            async with consuming(stub, stream, "g", "worker", **opened) as consumer:
                taken = [await consumer.next() for _ in range(2)]
                await consumer.ack(*(d.id for d in taken))
                held = [await consumer.next() for _ in range(2)]  # then not acked
                assert [d.id for d in taken + held] == ids
                await settled(stub, stream, pending=2)
                own_redis.client().save()  # what Redis keeps across its restart
                own_redis.stop()
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await asyncio.wait_for(consumer.call.read(), PATIENCE)
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                assert details(ended.value)["ErrorInfo"].reason.startswith("REDIS_")

    asyncio.run(scenario())
    with grpc.insecure_channel(server.address) as channel:
        assert_unavailable(lambda: append(Stub(channel), stream, b"lost"))
    own_redis.start()
    with grpc.insecure_channel(server.address) as channel:
        once_answered(lambda: info(Stub(channel), stream))

    async def resumed() -> list[pb.Delivery]:
        async with (
            aio_stub(server.address) as stub,
            consuming(stub, stream, "g", "worker", ack_timeout=duration_ms(500)) as consumer,
        ):
            return [await consumer.next() for _ in range(2)]

    again = asyncio.run(resumed())  # the unacknowledged two, redelivered; nothing else
    assert [(d.id, d.delivery_count) for d in again] == [(i, 2) for i in ids[2:]]


def test_a_thousand_consumers_use_few_redis_connections(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    server = server_on_own_redis()
    stream = "busy"

    async def scenario() -> tuple[int, int]:
        async with aio_stub(server.address) as stub:
            calls = []
            for n in range(1_000):
                call = stub.Consume(timeout=120)
                opening = pb.ConsumeOpen(stream=stream, group=f"g{n % 10}", consumer=f"c{n}")
                await call.write(pb.ConsumeRequest(open=opening))
                calls.append(call)
            for call in calls:
                assert (await call.read()).WhichOneof("kind") == "subscribed"
            connections = len(own_redis.client().client_list())
            await stub.Append(pb.AppendRequest(stream=stream, payload=b"hello"))
            # Each of the ten groups hands the entry to one of its hundred consumers.
            reads = [asyncio.ensure_future(call.read()) for call in calls]
            deadline = time.monotonic() + PATIENCE
            while sum(read.done() for read in reads) < 10:
                assert time.monotonic() < deadline, "not delivered to every group"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # and to no one else
            sum(read.done() for read in reads)
            for call in calls:
                call.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
            return connections, sum(
                read.done() and not read.cancelled() and not read.exception() for read in reads
            )

    connections, delivered = asyncio.run(scenario())
    assert delivered == 10
    assert connections <= 6  # the test's own, the batcher's few, and one for Pub/Sub
