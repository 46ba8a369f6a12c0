"""The Events gRPC servicer: Publish, and Subscribe as a server stream."""

from collections.abc import AsyncIterator

import grpc
from patterns.events.v1 import events_pb2 as pb
from patterns.events.v1 import events_pb2_grpc

from patterns_server.events.events import Event, Events
from patterns_server.rpc.service import Runtime, Service


class EventsServicer(events_pb2_grpc.EventsServicer):
    def __init__(self, events: Events) -> None:
        self._events = events

    async def Publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishResponse:
        receivers = await self._events.publish(request.channel, request.payload)
        return pb.PublishResponse(receivers=receivers)

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SubscribeResponse | bytes]:
        async with await self._events.subscribe(request.channels, request.patterns) as stream:
            subscribed = pb.Subscribed(channels=stream.channels, patterns=stream.patterns)
            yield pb.SubscribeResponse(subscribed=subscribed)
            if request.batch:  # one gRPC message for all the events waiting
                while True:
                    yield _batch(await stream.batch())
            else:
                async for event in stream:
                    yield _memo(event, "response", _EVENT_TAG)


# The responses are built as protobuf's wire format lays them out, from each event's Event
# message serialized once for every stream it reaches (the runtime passes bytes through as
# they are): a length-delimited field is its tag, its length as a varint and its bytes, and
# a repeated one is that, once per element, so a batch is its events' pieces joined.
def _varint(value: int) -> bytes:
    """`value` (≥ 0) as a protobuf varint: 7 bits a byte, low first, high bit = more."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(message: type[pb.SubscribeResponse] | type[pb.EventBatch], field: str) -> bytes:
    """The tag of a length-delimited field (wire type 2), one byte for numbers below 16."""
    return _varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | 2)


_EVENT_TAG = _tag(pb.SubscribeResponse, "event")
_BATCH_TAG = _tag(pb.SubscribeResponse, "batch")
_EVENTS_TAG = _tag(pb.EventBatch, "events")


def _batch(events: list[Event]) -> bytes:
    """The serialized SubscribeResponse of a batch of `events`."""
    body = b"".join([_memo(event, "entry", _EVENTS_TAG) for event in events])
    return _BATCH_TAG + _varint(len(body)) + body


def _memo(event: Event, kind: str, tag: bytes) -> bytes:
    """`event`'s Event message as the field `tag` (the whole SubscribeResponse for
    "response", an element of EventBatch.events for "entry"), made once per event."""
    piece: bytes | None = event.memo.get(kind)
    if piece is None:
        message = _serialized(event)
        piece = event.memo[kind] = tag + _varint(len(message)) + message
    return piece


def _serialized(event: Event) -> bytes:
    """The event's Event message, serialized once for every stream it reaches."""
    data: bytes | None = event.memo.get("event")
    if data is None:
        message = pb.Event(channel=event.channel, pattern=event.pattern, payload=event.payload)
        message.received_at.FromDatetime(event.received_at)
        data = event.memo["event"] = message.SerializeToString()
    return data


def build(runtime: Runtime) -> Service:
    settings = runtime.settings
    events = Events(runtime.redis, settings.events_buffer, settings.events_max_payload_bytes)
    descriptor = pb.DESCRIPTOR.services_by_name["Events"]
    return Service(EventsServicer(events), descriptor)
