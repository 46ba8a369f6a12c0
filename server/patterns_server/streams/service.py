"""The Streams gRPC servicer: Append, Read, Info, Trim, SetRetention, DeleteGroup, and
Consume as a bidi stream (the client's acks and nacks in, deliveries out)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from patterns.streams.v1 import streams_pb2 as pb
from patterns.streams.v1 import streams_pb2_grpc

from patterns_server.core.errors import InvalidArgument
from patterns_server.rpc.convert import duration, optional_datetime, optional_timedelta, timestamp
from patterns_server.rpc.service import Runtime, Service
from patterns_server.streams.streams import (
    Consumer,
    Delivery,
    Entry,
    Retention,
    Start,
    Streams,
)

_STARTS = {
    pb.START_POSITION_UNSPECIFIED: Start.NEW,
    pb.START_POSITION_NEW: Start.NEW,
    pb.START_POSITION_EARLIEST: Start.EARLIEST,
    pb.START_POSITION_AT_ID: Start.AT_ID,
    pb.START_POSITION_AT_TIME: Start.AT_TIME,
}


class StreamsServicer(streams_pb2_grpc.StreamsServicer):
    def __init__(self, streams: Streams) -> None:
        self._streams = streams

    async def Append(
        self, request: pb.AppendRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppendResponse:
        entry_id, duplicate = await self._streams.append(
            request.stream,
            request.payload,
            request.headers,
            request.idempotency_key,
            optional_timedelta(request, "idempotency_window"),
        )
        return pb.AppendResponse(id=entry_id, duplicate=duplicate)

    async def Read(
        self, request: pb.ReadRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReadResponse:
        after_id = request.after_id if request.WhichOneof("start") == "after_id" else None
        entries = await self._streams.read(
            request.stream, after_id, optional_datetime(request, "at_time"), request.limit
        )
        return pb.ReadResponse(entries=[_entry(entry) for entry in entries])

    async def Consume(
        self, requests: AsyncIterator[pb.ConsumeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConsumeResponse]:
        first = await anext(requests, None)
        if first is None:
            return  # the client closed without opening: nothing to do
        if first.WhichOneof("kind") != "open":
            raise InvalidArgument("open", "the first message must be `open`")
        opening = first.open
        start = _STARTS.get(opening.start)
        if start is None:
            raise InvalidArgument("open.start", f"unknown start position {opening.start}")
        try:
            consumer = await self._streams.consume(
                opening.stream,
                opening.group,
                opening.consumer,
                start,
                opening.start_id,
                optional_datetime(opening, "start_time"),
                opening.max_in_flight,
                optional_timedelta(opening, "ack_timeout"),
                opening.max_deliveries,
            )
        except InvalidArgument as error:
            raise error.under("open") from None
        async with consumer:
            settings = consumer.settings
            yield pb.ConsumeResponse(
                subscribed=pb.Subscribed(
                    group_created=consumer.group_created,
                    max_in_flight=settings.max_in_flight,
                    ack_timeout=duration(settings.ack_timeout),
                    max_deliveries=settings.max_deliveries,
                )
            )
            reader = asyncio.ensure_future(_read(requests, consumer))
            try:
                while True:
                    deliveries = await consumer.deliveries()
                    for delivery in deliveries:
                        yield pb.ConsumeResponse(delivery=_delivery(delivery))
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def Info(
        self, request: pb.InfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.InfoResponse:
        info = await self._streams.info(request.stream)
        if not info.exists:
            return pb.InfoResponse(exists=False)
        return pb.InfoResponse(
            exists=True,
            length=info.length,
            first_id=info.first_id,
            last_id=info.last_id,
            retention=_retention_message(info.retention),
            groups=[
                pb.GroupInfo(
                    name=group.name,
                    pending=group.pending,
                    last_delivered_id=group.last_delivered_id,
                    lag=group.lag,
                    consumers=[
                        pb.ConsumerInfo(
                            name=consumer.name,
                            pending=consumer.pending,
                            idle=duration(consumer.idle),
                        )
                        for consumer in group.consumers
                    ],
                )
                for group in info.groups
            ],
        )

    async def Trim(
        self, request: pb.TrimRequest, context: grpc.aio.ServicerContext
    ) -> pb.TrimResponse:
        bounds = _retention(request.bounds, "bounds")
        return pb.TrimResponse(deleted=await self._streams.trim(request.stream, bounds))

    async def SetRetention(
        self, request: pb.SetRetentionRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetRetentionResponse:
        retention = _retention(request.retention, "retention")
        deleted = await self._streams.set_retention(request.stream, retention)
        return pb.SetRetentionResponse(deleted=deleted)

    async def DeleteGroup(
        self, request: pb.DeleteGroupRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteGroupResponse:
        deleted = await self._streams.delete_group(request.stream, request.group)
        return pb.DeleteGroupResponse(deleted=deleted)


async def _read(requests: AsyncIterator[pb.ConsumeRequest], consumer: Consumer) -> None:
    """Apply the client's acks and nacks as they come; end the consumer with the first
    error (a bad message, Redis lost). When the client closes its side, deliveries go on
    (grpcurl closes it after its one message): the call ends when the client cancels it."""
    try:
        async for request in requests:
            kind = request.WhichOneof("kind")
            if kind == "ack":
                try:  # sent with the acks that follow it while Redis answers
                    consumer.ack_soon(request.ack.ids)
                except InvalidArgument as error:
                    raise error.under("ack") from None
            elif kind == "nack":
                try:
                    await consumer.nack(request.nack.ids, optional_timedelta(request.nack, "delay"))
                except InvalidArgument as error:
                    raise error.under("nack") from None
            elif kind == "open":
                raise InvalidArgument("open", "the consumer is open already: send ack or nack")
            else:
                raise InvalidArgument("kind", "send ack or nack")
    except Exception as error:
        consumer.fail(error)


def _entry(entry: Entry) -> pb.Entry:
    return pb.Entry(
        id=entry.id,
        payload=entry.payload,
        headers=entry.headers,
        appended_at=timestamp(entry.appended_at),
    )


def _delivery(delivery: Delivery) -> pb.Delivery:
    entry = delivery.entry
    return pb.Delivery(
        id=entry.id,
        payload=entry.payload,
        headers=entry.headers,
        delivery_count=delivery.delivery_count,
        first_delivered_at=timestamp(delivery.first_delivered_at),
        appended_at=timestamp(entry.appended_at),
    )


def _retention(message: pb.Retention, path: str) -> Retention:
    return Retention(message.max_len, optional_timedelta(message, "max_age", f"{path}.max_age"))


def _retention_message(retention: Retention) -> pb.Retention:
    message = pb.Retention(max_len=retention.max_len)
    if retention.max_age is not None:
        message.max_age.CopyFrom(duration(retention.max_age))
    return message


def build(runtime: Runtime) -> Service:
    descriptor = pb.DESCRIPTOR.services_by_name["Streams"]
    return Service(StreamsServicer(Streams(runtime.redis)), descriptor)
