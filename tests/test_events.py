"""Events contract: Publish and the Subscribe stream, on every backend (standalone 7, 6.2,
Cluster), and what streams do when clients, Redis or the server go away."""

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Sequence

import grpc
import pytest
from patterns.events.v1 import events_pb2 as pb
from patterns.events.v1 import events_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from patterns_server.app import start
from patterns_server.core.settings import Settings
from tests.conftest import node_client, node_clients
from tests.rpc import assert_invalid, details, stub_for
from tests.waiting import eventually

Stub = events_pb2_grpc.EventsStub


async def subscribed(
    stub: Stub, channels: Sequence[str] = (), patterns: Sequence[str] = (), batch: bool = False
) -> grpc.aio.UnaryStreamCall:
    """A Subscribe call (30 s deadline) whose `subscribed` message has arrived."""
    request = pb.SubscribeRequest(channels=channels, patterns=patterns, batch=batch)
    call = stub.Subscribe(request, timeout=30)
    first = await call.read()
    assert first.WhichOneof("kind") == "subscribed", first
    return call


async def next_event(call: grpc.aio.UnaryStreamCall, within: float = 10) -> pb.Event:
    async with asyncio.timeout(within):
        response = await call.read()
    assert response is not grpc.aio.EOF and response.WhichOneof("kind") == "event", response
    return response.event


def name(new_key: Callable[[], str]) -> str:
    return new_key().replace(":", ".")


# The contract


def test_subscribed_comes_first_then_events_in_order(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    channel = name(new_key)

    async def scenario() -> list[bytes]:
        async with stub_for(server.address, Stub) as stub:
            call = stub.Subscribe(pb.SubscribeRequest(channels=[channel, channel]), timeout=30)
            first = await call.read()
            assert list(first.subscribed.channels) == [channel]  # without duplicates
            for n in range(200):
                await stub.Publish(pb.PublishRequest(channel=channel, payload=b"%d" % n))
            events = [await next_event(call) for _ in range(200)]
            call.cancel()
        assert {e.channel for e in events} == {channel} and {e.pattern for e in events} == {""}
        assert all(abs(e.received_at.ToSeconds() - time.time()) < 60 for e in events)
        return [e.payload for e in events]

    assert asyncio.run(scenario()) == [b"%d" % n for n in range(200)]


# A stream that is not read takes what gRPC's flow-control window holds (well under 4 MiB),
# then the server's writes wait: what is published meanwhile waits in its buffer (1,000
# messages or 16 MiB by default), where batches form.
BLOCKERS = [b"%03d" % n + bytes(65_536) for n in range(64)]  # 4 MiB


def test_a_batched_stream_gets_every_event_in_order_in_batches(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    channel = name(new_key)
    small = [b"%d" % n for n in range(300)]

    async def scenario() -> list[pb.SubscribeResponse]:
        async with stub_for(server.address, Stub) as stub:
            request = pb.SubscribeRequest(channels=[channel], patterns=[channel], batch=True)
            call = stub.Subscribe(request, timeout=30)
            first = await call.read()
            assert first.WhichOneof("kind") == "subscribed", first
            for payload in BLOCKERS + small:  # not read meanwhile
                await stub.Publish(pb.PublishRequest(channel=channel, payload=payload))
            responses: list[pb.SubscribeResponse] = []
            while sum(len(r.batch.events) for r in responses) < 2 * (len(BLOCKERS) + 300):
                async with asyncio.timeout(10):
                    responses.append(await call.read())
            call.cancel()
        return responses

    responses = asyncio.run(scenario())
    assert {r.WhichOneof("kind") for r in responses} == {"batch"}
    events = [event for r in responses for event in r.batch.events]
    for pattern in ("", channel):  # each subscription delivers every message once, in order
        assert [e.payload for e in events if e.pattern == pattern] == BLOCKERS + small
    assert {e.channel for e in events} == {channel}
    assert all(abs(e.received_at.ToSeconds() - time.time()) < 60 for e in events)
    # The small ones waited behind the blockers, and came together.
    assert len([r for r in responses if len(r.batch.events[-1].payload) < 10]) < 100


def test_a_batch_holds_at_most_a_mebibyte_of_payload(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    channel = name(new_key)
    payloads = [b"%02d" % n + bytes(300_000) for n in range(40)]  # 12 MB: most of them wait

    async def scenario() -> list[list[bytes]]:
        async with stub_for(server.address, Stub) as stub:
            call = stub.Subscribe(pb.SubscribeRequest(channels=[channel], batch=True), timeout=30)
            await call.read()
            for payload in payloads:
                await stub.Publish(pb.PublishRequest(channel=channel, payload=payload))
            batches: list[list[bytes]] = []
            while sum(map(len, batches)) < len(payloads):
                async with asyncio.timeout(10):
                    batches.append([e.payload for e in (await call.read()).batch.events])
            call.cancel()
        return batches

    batches = asyncio.run(scenario())
    assert [p for batch in batches for p in batch] == payloads
    # three payloads of 300,002 bytes fit in 1 MiB, four do not: the waiting ones come 3 at a time.
    assert max(map(len, batches)) == 3


def test_patterns_match_and_say_which(server: PatternsServer, new_key: Callable[[], str]) -> None:
    base = name(new_key)

    async def scenario() -> list[tuple[str, str]]:
        async with stub_for(server.address, Stub) as stub:
            call = await subscribed(stub, channels=[f"{base}.eu"], patterns=[f"{base}.*"])
            await stub.Publish(pb.PublishRequest(channel=f"{base}.eu", payload=b"a"))
            await stub.Publish(pb.PublishRequest(channel=f"{base}.us", payload=b"b"))
            await stub.Publish(pb.PublishRequest(channel=f"{base}eu", payload=b"not matched"))
            events = [await next_event(call) for _ in range(3)]
            call.cancel()
        return sorted((e.channel, e.pattern) for e in events)

    base_eu, base_us, pattern = f"{base}.eu", f"{base}.us", f"{base}.*"
    # A channel subscription and a pattern that matches it: the message comes once for each.
    assert asyncio.run(scenario()) == sorted(
        [(base_eu, ""), (base_eu, pattern), (base_us, pattern)]
    )


def test_a_subscription_starts_exactly_at_subscribed(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    """Never a message published before Subscribe was called (even when another stream
    of the server already listened to the channel); always one published after
    `subscribed` arrived."""
    channel = name(new_key)

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            earlier = await subscribed(stub, channels=[channel])  # the channel is live
            for n in range(50):
                await stub.Publish(pb.PublishRequest(channel=channel, payload=b"before-%d" % n))
            later = await subscribed(stub, channels=[channel])
            await stub.Publish(pb.PublishRequest(channel=channel, payload=b"after"))
            assert (await next_event(later)).payload == b"after"
            seen = [(await next_event(earlier)).payload for _ in range(51)]
            assert seen[-1] == b"after"
            earlier.cancel()
            later.cancel()

    for _ in range(5):
        asyncio.run(scenario())


def test_receivers_counts_server_processes(
    server: PatternsServer, backend_url: str, new_key: Callable[[], str]
) -> None:
    channel = name(new_key)

    async def scenario() -> list[int]:
        async with stub_for(server.address, Stub) as stub:
            counts = [(await stub.Publish(pb.PublishRequest(channel=channel))).receivers]
            calls = [await subscribed(stub, channels=[channel]) for _ in range(3)]
            counts.append((await stub.Publish(pb.PublishRequest(channel=channel))).receivers)
            for call in calls:
                call.cancel()
            return counts

    counts = asyncio.run(scenario())
    assert counts[0] == 0
    # Three streams, one server process: one Redis subscriber (on a Cluster too: every
    # process's Pub/Sub connection and every PUBLISH go to one node).
    assert counts[1] == 1


def test_namespaces_and_prefixes_keep_channels_apart(
    server: PatternsServer, backend_url: str, new_key: Callable[[], str]
) -> None:
    """A pattern only ever matches channels of its own namespace: `*` does not see the
    channels other servers (or anything else) publish on the same Redis."""
    channel = name(new_key)

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            call = await subscribed(stub, patterns=["*"])
            other = node_client(backend_url)
            other.publish(f"elsewhere:{channel}", b"outside")
            other.publish(f"patterns:other-tenant:events:{channel}", b"other namespace")
            await stub.Publish(pb.PublishRequest(channel=channel, payload=b"inside"))
            while (event := await next_event(call)).channel != channel:
                pass  # other tests of this session may publish meanwhile
            assert event.payload == b"inside" and event.pattern == "*"
            call.cancel()

    asyncio.run(scenario())


def test_hostile_names_are_taken_literally(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    base = name(new_key)
    names = [f"{base}#h", f"{base}}}", f"{base}{{x}}", f"{base}é 🙂", f"{base}[ab]"]

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            call = await subscribed(stub, channels=names, patterns=[rf"{base}\[ab\]"])
            for channel in names:
                await stub.Publish(pb.PublishRequest(channel=channel, payload=channel.encode()))
            events = [await next_event(call) for _ in range(len(names) + 1)]
            call.cancel()
        assert sorted(e.channel for e in events if not e.pattern) == sorted(names)
        assert [e.channel for e in events if e.pattern] == [f"{base}[ab]"]
        assert all(e.payload == e.channel.encode() for e in events)

    asyncio.run(scenario())


def test_the_largest_payload_is_published(
    server: PatternsServer, new_key: Callable[[], str]
) -> None:
    channel = name(new_key)

    async def scenario() -> bytes:
        async with stub_for(server.address, Stub) as stub:
            call = await subscribed(stub, channels=[channel])
            payload = bytes(range(256)) * 4096  # 1 MiB
            await stub.Publish(pb.PublishRequest(channel=channel, payload=payload))
            event = await next_event(call)
            call.cancel()
            return event.payload

    assert asyncio.run(scenario()) == bytes(range(256)) * 4096


def bad_publishes() -> list[tuple[pb.PublishRequest, str]]:
    return [
        (pb.PublishRequest(channel=""), "channel"),
        (pb.PublishRequest(channel="c" * 513), "channel"),
        (pb.PublishRequest(channel="c", payload=b"x" * ((1 << 20) + 1)), "payload"),
    ]


@pytest.mark.parametrize(("request_", "field"), bad_publishes())
def test_publish_rejects_bad_input(
    channel: grpc.Channel, request_: pb.PublishRequest, field: str
) -> None:
    assert_invalid(lambda: Stub(channel).Publish(request_), field)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.SubscribeRequest(), "channels"),
        (pb.SubscribeRequest(channels=["a"] * 60, patterns=["b"] * 41), "channels"),
        (pb.SubscribeRequest(channels=["a", ""]), "channels[1]"),
        (pb.SubscribeRequest(channels=["a"], patterns=["p" * 513]), "patterns[0]"),
    ],
)
def test_subscribe_rejects_bad_input(
    channel: grpc.Channel, request_: pb.SubscribeRequest, field: str
) -> None:
    assert_invalid(lambda: list(Stub(channel).Subscribe(request_, timeout=10)), field)


# Streams that end


def pubsub_numbers(url: str, channel: str) -> tuple[int, int]:
    """(subscribers of `channel`, patterns) in Redis, across every node of a Cluster."""
    channel_name = f"patterns:default:events:{channel}"
    nodes = node_clients(url)
    channels = sum(node.pubsub_numsub(channel_name)[0][1] for node in nodes)
    return channels, sum(int(node.pubsub_numpat()) for node in nodes)


def test_cancelled_streams_leave_no_subscription(
    server: PatternsServer, backend_url: str, new_key: Callable[[], str]
) -> None:
    """1,000 subscribe/cancel cycles: nothing subscribed in Redis afterwards."""
    channel = name(new_key)
    _, patterns_before = pubsub_numbers(backend_url, channel)

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            for _ in range(20):
                calls = await asyncio.gather(
                    *(
                        subscribed(stub, channels=[channel], patterns=[f"{channel}.{n}.*"])
                        for n in range(50)
                    )
                )
                for call in calls:
                    call.cancel()

    asyncio.run(scenario())
    eventually(
        lambda: pubsub_numbers(backend_url, channel) == (0, patterns_before),
        what="no subscription left in Redis",
    )


@pytest.mark.parametrize("batch", [False, True], ids=["events", "batches"])
def test_a_slow_subscriber_is_ended_alone(
    server_on_own_redis: Callable[..., PatternsServer], batch: bool
) -> None:
    server = server_on_own_redis("--events-buffer", "20")

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            slow = await subscribed(stub, channels=["busy"], batch=batch)
            reader = await subscribed(stub, channels=["busy"])
            # Enough that gRPC's own flow-control window (which holds what was written to
            # a stream and not yet read) fills, and then the server's buffer of 20.
            for n in range(500):
                payload = b"%05d" % n + bytes(32_768)
                await stub.Publish(pb.PublishRequest(channel="busy", payload=payload))
                assert (await next_event(reader)).payload == payload
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    async with asyncio.timeout(10):
                        await slow.read()
            assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details(ended.value)["ErrorInfo"].reason == "SLOW_CONSUMER"
            await stub.Publish(pb.PublishRequest(channel="busy", payload=b"still"))
            assert (await next_event(reader)).payload == b"still"
            reader.cancel()

    asyncio.run(scenario())


def test_losing_redis_ends_streams_then_subscriptions_work_again(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    server = server_on_own_redis("--redis-timeout", "1")

    async def scenario() -> None:
        async with stub_for(server.address, Stub) as stub:
            call = await subscribed(stub, channels=["news"])
            own_redis.stop()
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await call.read()
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 3
            own_redis.start()
            deadline = time.monotonic() + 10
            while True:
                try:
                    again = await subscribed(stub, channels=["news"])
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            await stub.Publish(pb.PublishRequest(channel="news", payload=b"back"))
            assert (await next_event(again)).payload == b"back"
            again.cancel()

    asyncio.run(scenario())


def test_shutdown_ends_streams_with_unavailable(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    server = server_on_own_redis("--shutdown-grace", "5")

    async def scenario() -> list[grpc.StatusCode]:
        async with stub_for(server.address, Stub) as stub:
            calls = [await subscribed(stub, channels=[f"c{n}"]) for n in range(20)]
            assert server.process is not None
            started = time.monotonic()
            server.process.terminate()
            codes = []
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await call.read()
                codes.append(ended.value.code())
                assert details(ended.value)["ErrorInfo"].reason == "SHUTTING_DOWN"
            assert time.monotonic() - started < 4  # not held for the grace period
            return codes

    assert set(asyncio.run(scenario())) == {grpc.StatusCode.UNAVAILABLE}
    assert server.wait() == 0


def test_a_thousand_streams_share_one_redis_connection_and_leave_nothing(
    own_redis: RedisServer,
) -> None:
    """In one process with the server, to count its tasks: 1,000 streams, one Pub/Sub
    connection in Redis; all cancelled, the server is back to the tasks it had."""

    async def scenario() -> tuple[int, int, int]:
        app = await start(Settings(listen="127.0.0.1:0", redis_url=own_redis.url))
        try:
            async with stub_for(f"127.0.0.1:{app.port}", Stub) as stub:
                await subscribed(stub, channels=["warm-up"])  # the hub's reader exists
                baseline = len(asyncio.all_tasks())
                calls = await asyncio.gather(
                    *(subscribed(stub, channels=[f"c{n % 10}"]) for n in range(1_000))
                )
                connections = len(own_redis.client().client_list(_type="pubsub"))
                await stub.Publish(pb.PublishRequest(channel="c3", payload=b"x"))
                assert all([(await next_event(c)).payload == b"x" for c in calls[3::10]])
                for call in calls:
                    call.cancel()
                for _ in range(200):
                    await asyncio.sleep(0.05)
                    if len(asyncio.all_tasks()) <= baseline and app.calls.streams == 1:
                        break
                return connections, len(asyncio.all_tasks()) - baseline, app.calls.streams
        finally:
            await app.stop()

    connections, extra_tasks, streams = asyncio.run(scenario())
    assert connections == 1
    assert extra_tasks <= 0 and streams == 1


# grpcurl


def test_grpcurl_subscribes_and_receives(
    grpcurl_path: str, server: PatternsServer, new_key: Callable[[], str]
) -> None:
    channel = name(new_key)
    process = subprocess.Popen(
        [
            grpcurl_path,
            "-plaintext",
            "-max-time",
            "10",
            "-d",
            json.dumps({"channels": [channel]}),
            server.address,
            "patterns.events.v1.Events/Subscribe",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # wait for `subscribed` before publishing
        lines.append(line)
        if line.startswith("}"):
            break
    with grpc.insecure_channel(server.address) as opened:
        Stub(opened).Publish(pb.PublishRequest(channel=channel, payload=b"hello"), timeout=10)
    for line in process.stdout:
        lines.append(line)
        if line.startswith("}"):
            break
    process.kill()
    process.wait()
    messages = "".join(lines).replace("}\n{", "}\n\n{").split("\n\n")
    first, second = (json.loads(message) for message in messages)
    assert first == {"subscribed": {"channels": [channel]}}
    assert second["event"]["channel"] == channel and second["event"]["payload"] == "aGVsbG8="
    assert "receivedAt" in second["event"]
