"""The UniqueCounter gRPC servicer: request messages in, UniqueCounter calls, responses out."""

import grpc
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc

from patterns_server.config import Settings
from patterns_server.counter.unique_counter import UniqueCounter
from patterns_server.proto_types import optional_timedelta
from patterns_server.redis import RedisBackend
from patterns_server.rpc_errors import guard


class UniqueCounterService(counter_pb2_grpc.UniqueCounterServicer):
    def __init__(self, counter: UniqueCounter) -> None:
        self._counter = counter

    async def Add(
        self, request: counter_pb2.AddRequest, context: grpc.aio.ServicerContext
    ) -> counter_pb2.AddResponse:
        changed = await self._counter.add(
            request.key, request.items, optional_timedelta(request, "ttl")
        )
        return counter_pb2.AddResponse(changed=changed)

    async def Count(
        self, request: counter_pb2.CountRequest, context: grpc.aio.ServicerContext
    ) -> counter_pb2.CountResponse:
        return counter_pb2.CountResponse(count=await self._counter.count(request.keys))

    async def Merge(
        self, request: counter_pb2.MergeRequest, context: grpc.aio.ServicerContext
    ) -> counter_pb2.MergeResponse:
        count = await self._counter.merge(
            request.destination, request.sources, optional_timedelta(request, "ttl")
        )
        return counter_pb2.MergeResponse(count=count)


def register(server: grpc.aio.Server, redis: RedisBackend, settings: Settings) -> str:
    """Serve UniqueCounter on `server`; returns the service's full name."""
    service = counter_pb2.DESCRIPTOR.services_by_name["UniqueCounter"]
    servicer = guard(UniqueCounterService(UniqueCounter(redis)), service)
    counter_pb2_grpc.add_UniqueCounterServicer_to_server(servicer, server)
    return str(service.full_name)
