"""The UniqueCounter gRPC servicer: request messages in, UniqueCounter calls, responses out."""

import grpc
from patterns.counter.v1 import counter_pb2 as pb
from patterns.counter.v1 import counter_pb2_grpc

from patterns_server.counter.counter import UniqueCounter
from patterns_server.rpc.convert import optional_timedelta
from patterns_server.rpc.service import Runtime, Service


class UniqueCounterServicer(counter_pb2_grpc.UniqueCounterServicer):
    def __init__(self, counter: UniqueCounter) -> None:
        self._counter = counter

    async def Add(
        self, request: pb.AddRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddResponse:
        changed = await self._counter.add(
            request.key, request.items, optional_timedelta(request, "ttl")
        )
        return pb.AddResponse(changed=changed)

    async def Count(
        self, request: pb.CountRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountResponse:
        return pb.CountResponse(count=await self._counter.count(request.keys))

    async def Merge(
        self, request: pb.MergeRequest, context: grpc.aio.ServicerContext
    ) -> pb.MergeResponse:
        count = await self._counter.merge(
            request.destination, request.sources, optional_timedelta(request, "ttl")
        )
        return pb.MergeResponse(count=count)


def build(runtime: Runtime) -> Service:
    servicer = UniqueCounterServicer(UniqueCounter(runtime.redis))
    descriptor = pb.DESCRIPTOR.services_by_name["UniqueCounter"]
    return Service(servicer, descriptor)
