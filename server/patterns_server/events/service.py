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
            async for event in stream:
                yield event.memo.get("response") or _serialized(event)


def _serialized(event: Event) -> bytes:
    """The event's SubscribeResponse, serialized once for every stream it reaches (the
    runtime passes bytes through as they are)."""
    response = pb.SubscribeResponse()
    message = response.event
    message.channel = event.channel
    message.pattern = event.pattern
    message.payload = event.payload
    message.received_at.FromDatetime(event.received_at)
    data: bytes = response.SerializeToString()
    event.memo["response"] = data
    return data


def build(runtime: Runtime) -> Service:
    settings = runtime.settings
    events = Events(runtime.redis, settings.events_buffer, settings.events_max_payload_bytes)
    descriptor = pb.DESCRIPTOR.services_by_name["Events"]
    return Service(EventsServicer(events), descriptor)
