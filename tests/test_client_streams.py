"""`client.streams` of patterns_client, blocking and asyncio, against a live server: every
method, the consume loop (each entry handled once when acknowledged, by one thread or a
pool, a nack redelivered after its delay, an entry not acknowledged redelivered after the
ack timeout with delivery_count 2), closing (acknowledgements given just before are
applied), and a server restart or Redis down in the middle of consuming (the consumer
opens its stream again; nothing is lost)."""

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar

import pytest
from patterns.streams.v1 import streams_pb2 as pb

import patterns_client.streams
from devtools.processes import PatternsServer, RedisServer, free_port
from patterns_client import (
    Aborted,
    Appended,
    AsyncMessage,
    Client,
    DeadlineExceeded,
    InvalidArgument,
    Message,
    PatternsError,
    Retention,
    Start,
    aio,
)
from patterns_client.streams import _coalesced, _nack
from tests.waiting import eventually, eventually_async

live = pytest.mark.parametrize("backend_url", ["redis7", "cluster"], indirect=True)
T = TypeVar("T")
SECOND = timedelta(seconds=1)


@pytest.fixture
def client(server: PatternsServer) -> Iterator[Client]:
    with Client(server.address, timeout=10) as client:
        yield client


def with_client(
    address: str, scenario: Callable[[aio.Client], Coroutine[Any, Any, T]], timeout: float = 10
) -> T:
    """`scenario(client)` on a fresh event loop, with an aio client of the server."""

    async def main() -> T:
        async with aio.Client(address, timeout=timeout) as client:
            return await scenario(client)

    return asyncio.run(main())


def next_within(messages: Iterator[Message], seconds: float = 10) -> Message:
    """The consumer's next message, read by a thread, failing the test after `seconds`."""
    got: list[Message] = []
    reader = threading.Thread(target=lambda: got.append(next(messages)), daemon=True)
    reader.start()
    reader.join(seconds)
    assert got, f"no message within {seconds} s"
    return got[0]


def pending(client: Client, stream: str, group: str) -> int:
    (found,) = [g for g in client.streams.info(stream).groups if g.name == group]
    return found.pending


# Every method


@live
def test_append_read_info_trim_retention_and_delete_group(
    client: Client, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    before = datetime.now(UTC) - SECOND
    first = client.streams.append(stream, b"one", headers={"kind": "order"})
    assert not first.duplicate
    again = client.streams.append(stream, b"two", idempotency_key="k")
    assert client.streams.append(stream, b"other", idempotency_key="k") == Appended(again.id, True)
    entries = client.streams.read(stream)
    assert [(e.id, e.payload, dict(e.headers)) for e in entries] == [
        (first.id, b"one", {"kind": "order"}),
        (again.id, b"two", {}),
    ]
    assert entries[0].appended_at >= before
    assert [e.id for e in client.streams.read(stream, after=first.id)] == [again.id]
    assert [e.id for e in client.streams.read(stream, after=before, limit=1)] == [first.id]
    consume = client.streams.consume(
        stream, group="g", consumer="c", start=Start.EARLIEST, max_in_flight=1
    )
    with consume as messages:
        messages.wait_subscribed(10)
        next_within(messages)  # delivered, not acknowledged
        eventually(lambda: pending(client, stream, "g") == 1)
    info = client.streams.info(stream)
    assert (info.exists, info.length, info.first_id, info.last_id) == (True, 2, first.id, again.id)
    (group,) = info.groups
    assert (group.name, group.pending, group.lag) == ("g", 1, 1)
    assert [(c.name, c.pending) for c in group.consumers] == [("c", 1)]
    assert not client.streams.info(new_key()).exists
    assert client.streams.set_retention(stream, max_age=timedelta(days=1)) == 0
    assert client.streams.info(stream).retention == Retention(max_age=timedelta(days=1))
    assert client.streams.trim(stream, max_age=timedelta(days=1)) == 0
    assert client.streams.delete_group(stream, "g")
    assert not client.streams.delete_group(stream, "g")


@live
def test_aio_methods(server: PatternsServer, new_key: Callable[[], str]) -> None:
    stream = new_key()

    async def scenario(client: aio.Client) -> None:
        first = await client.streams.append(stream, b"one", headers={"h": "v"})
        second = await client.streams.append(stream, b"two", idempotency_key="k")
        assert (await client.streams.append(stream, b"2", idempotency_key="k")).duplicate
        assert [e.id for e in await client.streams.read(stream)] == [first.id, second.id]
        assert [e.id for e in await client.streams.read(stream, after=first.id)] == [second.id]
        info = await client.streams.info(stream)
        assert (info.length, info.last_id, info.groups) == (2, second.id, ())
        assert await client.streams.set_retention(stream, max_len=1000) == 0
        assert (await client.streams.info(stream)).retention == Retention(max_len=1000)
        assert await client.streams.trim(stream, max_age=timedelta(days=1)) == 0
        assert not await client.streams.delete_group(stream, "nobody")

    with_client(server.address, scenario)


# The consume loop


@live
def test_each_entry_acknowledged_is_handled_once(
    client: Client, new_key: Callable[[], str]
) -> None:
    stream, count = new_key(), 200
    handled: Counter[bytes] = Counter()
    with client.streams.consume(stream, group="g", consumer="c", max_in_flight=20) as messages:
        messages.wait_subscribed(10)
        ids = [
            client.streams.append(stream, b"%d" % n, headers={"n": str(n)}).id for n in range(count)
        ]
        for message in messages:
            assert message.headers == {"n": message.payload.decode()}
            assert message.delivery_count == 1
            handled[message.payload] += 1
            message.ack()
            if len(handled) == count:
                break
        # While the stream is open: close() gives the last acks only a moment.
        eventually(lambda: pending(client, stream, "g") == 0, what="every ack applied")
    assert handled == Counter(b"%d" % n for n in range(count))
    info = client.streams.info(stream)
    assert info.groups[0].lag == 0 and info.last_id == ids[-1]


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_workers_of_a_pool_acknowledge_what_one_thread_iterates(
    client: Client, new_key: Callable[[], str]
) -> None:
    stream, count = new_key(), 100
    handled: Counter[bytes] = Counter()
    lock = threading.Lock()

    def handle(message: Message) -> None:
        with lock:
            handled[message.payload] += 1
        message.ack()

    consume = client.streams.consume(stream, group="g", consumer="c", max_in_flight=8)
    with consume as messages, ThreadPoolExecutor(4) as pool:
        messages.wait_subscribed(10)
        for n in range(count):
            client.streams.append(stream, b"%d" % n)
        for received, message in enumerate(messages, start=1):
            pool.submit(handle, message)
            if received == count:
                break
        eventually(lambda: pending(client, stream, "g") == 0, what="every ack applied")
    assert handled == Counter(b"%d" % n for n in range(count))


@live
def test_each_entry_acknowledged_is_handled_once_aio(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    stream, count = new_key(), 200

    async def scenario(client: aio.Client) -> Counter[bytes]:
        handled: Counter[bytes] = Counter()
        async with client.streams.consume(stream, group="g", consumer="c") as messages:
            await messages.wait_subscribed(10)
            for n in range(count):
                await client.streams.append(stream, b"%d" % n)
            async for message in messages:
                assert message.delivery_count == 1
                handled[message.payload] += 1
                await message.ack()
                if len(handled) == count:
                    break

            async def settled() -> bool:
                return (await client.streams.info(stream)).groups[0].pending == 0

            await eventually_async(settled)
        return handled

    assert with_client(server.address, scenario) == Counter(b"%d" % n for n in range(count))


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_a_nack_with_a_delay_is_redelivered_after_it(
    client: Client, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    with client.streams.consume(stream, group="g", consumer="c") as messages:
        messages.wait_subscribed(10)
        appended = client.streams.append(stream, b"retry me")
        first = next_within(messages)
        assert (first.id, first.delivery_count) == (appended.id, 1)
        with pytest.raises(InvalidArgument) as refused:  # beyond the ack timeout (30 s)
            first.nack(delay=timedelta(minutes=1))
        assert refused.value.field_violations[0].field == "nack.delay"
        nacked_at = time.monotonic()  # the consumer goes on: nothing was sent
        first.nack(delay=timedelta(milliseconds=500))
        second = next_within(messages)
        waited = time.monotonic() - nacked_at
        assert (second.id, second.payload, second.delivery_count) == (appended.id, b"retry me", 2)
        assert second.first_delivered_at == first.first_delivered_at
        assert waited >= 0.4  # not before its delay (less the clocks' rounding)
        second.ack()
    eventually(lambda: pending(client, stream, "g") == 0)


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_a_nack_with_a_delay_is_redelivered_after_it_aio(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario(client: aio.Client) -> None:
        async with client.streams.consume(stream, group="g", consumer="c") as messages:
            await messages.wait_subscribed(10)
            appended = await client.streams.append(stream, b"retry me")
            first = await asyncio.wait_for(anext(messages), 10)
            assert (first.id, first.delivery_count) == (appended.id, 1)
            with pytest.raises(InvalidArgument):
                await first.nack(delay=-1)
            nacked_at = time.monotonic()
            await first.nack(delay=0.5)
            second = await asyncio.wait_for(anext(messages), 10)
            assert (second.id, second.delivery_count) == (appended.id, 2)
            assert time.monotonic() - nacked_at >= 0.4
            await second.ack()

    with_client(server.address, scenario)


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_an_entry_not_acknowledged_comes_back_after_the_ack_timeout(
    client: Client, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    with client.streams.consume(stream, group="g", consumer="c", ack_timeout=SECOND) as messages:
        messages.wait_subscribed(10)
        appended = client.streams.append(stream, b"slow")
        first = next_within(messages)
        delivered_at = time.monotonic()
        again = next_within(messages)
        assert (first.id, first.delivery_count) == (appended.id, 1)
        assert (again.id, again.delivery_count) == (appended.id, 2)
        assert time.monotonic() - delivered_at >= 0.5  # the timeout, less delivery times
        again.ack()
    eventually(lambda: pending(client, stream, "g") == 0)


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_an_entry_not_acknowledged_comes_back_after_the_ack_timeout_aio(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario(client: aio.Client) -> None:
        consume = client.streams.consume(stream, group="g", consumer="c", ack_timeout=SECOND)
        async with consume as messages:
            await messages.wait_subscribed(10)
            appended = await client.streams.append(stream, b"slow")
            first = await asyncio.wait_for(anext(messages), 10)
            again = await asyncio.wait_for(anext(messages), 10)
            assert (first.id, first.delivery_count) == (appended.id, 1)
            assert (again.id, again.delivery_count) == (appended.id, 2)
            await again.ack()

    with_client(server.address, scenario)


# Closing, and errors


@pytest.fixture
def patient_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """close() waits for the server to apply the last acks a generous while: the
    contract confirms no ack, so close() gives the server time (half a second, for
    real), and a test that counts on it must not depend on an idle machine."""
    monkeypatch.setattr(patterns_client.streams, "CLOSE_SETTLE", 5.0)


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
@pytest.mark.usefixtures("patient_close")
def test_an_ack_just_before_closing_is_applied_and_one_after_raises(
    client: Client, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    with client.streams.consume(stream, group="g", consumer="c") as messages:
        messages.wait_subscribed(10)
        client.streams.append(stream, b"x")
        message = next_within(messages)
        message.ack()  # then at once out of the block: close() sends it before ending
    assert pending(client, stream, "g") == 0
    assert list(messages) == []  # closed: the iteration is over
    with pytest.raises(PatternsError):
        message.ack()


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
@pytest.mark.usefixtures("patient_close")
def test_an_ack_just_before_closing_is_applied_aio(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    stream = new_key()

    async def scenario(client: aio.Client) -> int:
        async with client.streams.consume(stream, group="g", consumer="c") as messages:
            await messages.wait_subscribed(10)
            await client.streams.append(stream, b"x")
            message = await asyncio.wait_for(anext(messages), 10)
            await message.ack()
        with pytest.raises(PatternsError):
            await message.ack()
        return (await client.streams.info(stream)).groups[0].pending

    assert with_client(server.address, scenario) == 0


@pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
def test_a_refused_open_raises_and_a_deleted_group_ends_the_consumer(
    client: Client, new_key: Callable[[], str]
) -> None:
    stream = new_key()
    refused = client.streams.consume(stream, group="", consumer="c")
    with refused, pytest.raises(InvalidArgument) as invalid:
        refused.wait_subscribed(10)
    assert invalid.value.field_violations
    with client.streams.consume(stream, group="g", consumer="c") as messages:
        messages.wait_subscribed(10)
        assert client.streams.delete_group(stream, "g")
        ended: list[BaseException] = []

        def read() -> None:
            try:
                next(messages)
            except PatternsError as error:
                ended.append(error)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(15)
        assert ended and isinstance(ended[0], Aborted) and ended[0].reason == "GROUP_DELETED"


# A server restart in the middle of consuming


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_a_server_restart_mid_consume_loses_nothing(
    mode: str, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """The server stops while a consumer handles entries (its stream ends SHUTTING_DOWN,
    with entries in flight); once it is back on the same address, the consumer's new
    stream gets what was appended meanwhile, and what was in flight comes back after the
    ack timeout: every entry is handled, and the group ends with nothing pending."""
    listen = ("--listen", f"127.0.0.1:{free_port()}")
    servers = [server_on_own_redis(*listen)]
    address, stream, count = servers[0].address, "orders", 100
    before = [b"before %d" % n for n in range(count)]
    after = [b"after %d" % n for n in range(count)]

    def restart() -> None:
        servers[0].stop()
        servers.append(server_on_own_redis(*listen))

    if mode == "sync":
        handled: set[bytes] = set()
        with Client(address, timeout=10) as client:
            consume = client.streams.consume(
                stream, group="g", consumer="c", max_in_flight=5, ack_timeout=SECOND
            )
            with consume as messages:

                def work() -> None:
                    for message in messages:
                        handled.add(message.payload)
                        time.sleep(0.005)  # some work: entries are in flight at the stop
                        message.ack()

                messages.wait_subscribed(10)
                worker = threading.Thread(target=work, daemon=True)
                worker.start()
                for payload in before:
                    client.streams.append(stream, payload)
                eventually(lambda: len(handled) >= 10, what="handling under way")
                restart()
                eventually(messages.subscribed.is_set, within=30, what="subscribed again")
                for payload in after:
                    client.streams.append(stream, payload)
                eventually(lambda: handled == {*before, *after}, within=30, what="all handled")
                eventually(lambda: pending(client, stream, "g") == 0, what="all acknowledged")
            worker.join(10)
            assert not worker.is_alive()  # closing ended the iteration
    else:

        async def scenario(client: aio.Client) -> set[bytes]:
            handled: set[bytes] = set()
            consume = client.streams.consume(
                stream, group="g", consumer="c", max_in_flight=5, ack_timeout=SECOND
            )

            async def work() -> None:
                async for message in consume:
                    handled.add(message.payload)
                    await asyncio.sleep(0.005)
                    await message.ack()

            async def at_least(n: int) -> bool:
                return len(handled) >= n

            async def settled() -> bool:
                info = await client.streams.info(stream)
                return handled == {*before, *after} and info.groups[0].pending == 0

            await consume.wait_subscribed(10)
            worker = asyncio.ensure_future(work())
            for payload in before:
                await client.streams.append(stream, payload)
            await eventually_async(lambda: at_least(10))
            await asyncio.to_thread(restart)
            await asyncio.wait_for(consume.subscribed.wait(), 30)
            for payload in after:
                await client.streams.append(stream, payload)
            await eventually_async(settled, within=30)
            await consume.close()
            await asyncio.wait_for(worker, 10)  # closing ended the iteration
            return handled

        handled = with_client(address, scenario)
    assert handled == {*before, *after}


def test_wait_subscribed_gives_up_after_its_timeout_and_keeps_trying() -> None:
    """Nobody listens: wait_subscribed raises DeadlineExceeded, the consumer goes on
    trying (no failure of its own), and close() ends it at once."""
    with Client("127.0.0.1:1", timeout=1) as client:
        consumer = client.streams.consume("s", group="g", consumer="c")
        with pytest.raises(DeadlineExceeded, match=r"within 0\.3s"):
            consumer.wait_subscribed(timeout=0.3)
        with pytest.raises(DeadlineExceeded):
            consumer.wait_subscribed(timeout=0.3)
        started = time.monotonic()
        consumer.close()
        assert time.monotonic() - started < 5
        assert list(consumer) == []

    async def scenario() -> None:
        async with aio.Client("127.0.0.1:1", timeout=1) as client:
            consumer = client.streams.consume("s", group="g", consumer="c")
            with pytest.raises(DeadlineExceeded):
                await consumer.wait_subscribed(timeout=0.3)
            await consumer.close()
            assert [m async for m in consumer] == []

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_redis_down_mid_consume_then_back_redelivers_what_was_not_acknowledged(
    mode: str, own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """Redis goes away (what it saved kept) while a consumer holds two entries it has not
    acknowledged: its stream ends UNAVAILABLE, the consumer keeps trying, and once Redis
    is back it is subscribed again and gets those two again, delivery_count 2, and a new
    one (in either order: redeliveries come when their ack timeout is up)."""
    address, stream = server_on_own_redis().address, "payments"
    options: dict[str, Any] = {"group": "g", "consumer": "c", "ack_timeout": SECOND}

    def outage() -> None:
        own_redis.client().save()
        own_redis.stop()

    if mode == "sync":
        with (
            Client(address, timeout=10) as client,
            client.streams.consume(stream, **options) as messages,
        ):
            messages.wait_subscribed(10)
            ids = [client.streams.append(stream, b"%d" % n).id for n in range(2)]
            held = [next_within(messages), next_within(messages)]
            outage()
            later: list[Message] = []
            reader = threading.Thread(target=lambda: later.extend(islice(messages, 3)))
            reader.start()  # the iteration sees the stream end, and opens it again
            eventually(lambda: not messages.subscribed.is_set(), what="the stream ended")
            own_redis.start()
            messages.wait_subscribed(30)
            new = client.streams.append(stream, b"new").id
            reader.join(30)
            for message in later:
                message.ack()
            eventually(lambda: pending(client, stream, "g") == 0)
    else:

        async def scenario(client: aio.Client) -> tuple[list[Any], list[Any], list[str], str]:
            async with client.streams.consume(stream, **options) as messages:
                await messages.wait_subscribed(10)
                ids = [(await client.streams.append(stream, b"%d" % n)).id for n in range(2)]
                held = [await asyncio.wait_for(anext(messages), 10) for _ in range(2)]
                await asyncio.to_thread(outage)

                async def read() -> list[AsyncMessage]:
                    return [await anext(messages) for _ in range(3)]

                async def ended() -> bool:
                    return not messages.subscribed.is_set()

                reader = asyncio.ensure_future(read())  # sees the end, and opens again
                await eventually_async(ended)
                await asyncio.to_thread(own_redis.start)
                await messages.wait_subscribed(30)
                new = (await client.streams.append(stream, b"new")).id
                later = await asyncio.wait_for(reader, 30)
                for message in later:
                    await message.ack()
                return held, later, ids, new

        held, later, ids, new = with_client(address, scenario)
    assert [(m.id, m.delivery_count) for m in held] == [(i, 1) for i in ids]
    assert len(later) == 3
    assert {(m.id, m.delivery_count) for m in later} == {(ids[0], 2), (ids[1], 2), (new, 1)}


def test_acks_and_nacks_waiting_together_go_in_as_few_messages_as_allowed() -> None:
    """What the consumer writes when many acks wait (the server or the network slower
    than the handlers): every ack in one message of up to 10,000 ids, the nacks of each
    delay in one, and nothing lost or repeated."""
    acks = [pb.ConsumeRequest(ack=pb.Ack(ids=[f"{n}-0"])) for n in range(25_000)]
    later = [_nack(f"{n}-1", 5, timedelta(seconds=30)) for n in range(3)]
    now = [_nack(f"{n}-2", None, None) for n in range(2)]
    written = list(_coalesced([acks[0], later[0], *acks[1:], now[0], *later[1:], now[1], None]))
    assert [len(r.ack.ids) for r in written if r.HasField("ack")] == [10_000, 10_000, 5_000]
    assert [r.ack.ids[0] for r in written if r.HasField("ack")] == ["0-0", "10000-0", "20000-0"]
    nacks = [(list(r.nack.ids), r.nack.delay.ToTimedelta()) for r in written if r.HasField("nack")]
    assert nacks == [
        (["0-1", "1-1", "2-1"], timedelta(seconds=5)),
        (["0-2", "1-2"], timedelta(0)),
    ]
