"""The Cache gRPC servicer: request messages in, Cache calls, responses out."""

from datetime import timedelta

import grpc
from patterns.cache.v1 import cache_pb2 as pb
from patterns.cache.v1 import cache_pb2_grpc

from patterns_server.cache.cache import Cache, Entry, Pending
from patterns_server.rpc.convert import (
    duration,
    optional_datetime,
    optional_timedelta,
    time_left,
    timestamp,
)
from patterns_server.rpc.service import Runtime, Service


class CacheServicer(cache_pb2_grpc.CacheServicer):
    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        entry = await self._cache.get(request.key)
        if not entry.found:
            return pb.GetResponse()
        return pb.GetResponse(
            found=True, value=entry.value, ttl_remaining=duration(entry.ttl_remaining)
        )

    async def GetMany(
        self, request: pb.GetManyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetManyResponse:
        entries = await self._cache.get_many(request.keys)
        return pb.GetManyResponse(entries=[_entry(entry) for entry in entries])

    async def Set(
        self, request: pb.SetRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetResponse:
        stored = await self._cache.set(
            request.key,
            request.value,
            optional_timedelta(request, "ttl"),
            optional_datetime(request, "expire_at"),
            request.tags,
            request.only_if_absent,
            request.lease_token,
        )
        return pb.SetResponse(stored=stored)

    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResponse:
        return pb.DeleteResponse(deleted=await self._cache.delete(request.keys))

    async def InvalidateTags(
        self, request: pb.InvalidateTagsRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvalidateTagsResponse:
        return pb.InvalidateTagsResponse(deleted=await self._cache.invalidate_tags(request.tags))

    async def InvalidatePrefix(
        self, request: pb.InvalidatePrefixRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvalidatePrefixResponse:
        deleted = await self._cache.invalidate_prefix(request.prefix)
        return pb.InvalidatePrefixResponse(deleted=deleted)

    async def GetOrLease(
        self, request: pb.GetOrLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrLeaseResponse:
        answer = await self._cache.get_or_lease(
            request.key,
            optional_timedelta(request, "lease_ttl"),
            optional_timedelta(request, "wait_timeout"),
            time_left(context),
        )
        if isinstance(answer, Entry):
            hit = pb.Hit(value=answer.value, ttl_remaining=duration(answer.ttl_remaining))
            return pb.GetOrLeaseResponse(hit=hit)
        if isinstance(answer, Pending):
            return pb.GetOrLeaseResponse(pending=pb.Pending())
        lease = pb.Lease(token=answer.token, expires_at=timestamp(answer.expires_at))
        return pb.GetOrLeaseResponse(lease=lease)

    async def ReleaseLease(
        self, request: pb.ReleaseLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseLeaseResponse:
        released = await self._cache.release_lease(request.key, request.lease_token)
        return pb.ReleaseLeaseResponse(released=released)


def _entry(entry: Entry) -> pb.Entry:
    if not entry.found:
        return pb.Entry(key=entry.key)
    return pb.Entry(
        key=entry.key,
        found=True,
        value=entry.value,
        ttl_remaining=duration(entry.ttl_remaining),
    )


def build(runtime: Runtime) -> Service:
    settings = runtime.settings
    cache = Cache(
        runtime.redis,
        timedelta(seconds=settings.cache_default_ttl),
        settings.cache_max_value_bytes,
    )
    descriptor = pb.DESCRIPTOR.services_by_name["Cache"]
    return Service(CacheServicer(cache), descriptor)
