"""The Sessions gRPC servicer: request messages in, Sessions calls, responses out."""

import grpc
from patterns.session.v1 import session_pb2 as pb
from patterns.session.v1 import session_pb2_grpc

from patterns_server.rpc.convert import optional_timedelta, timestamp
from patterns_server.rpc.service import Runtime, Service
from patterns_server.session.session import Session, Sessions


class SessionsServicer(session_pb2_grpc.SessionsServicer):
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def Create(
        self, request: pb.CreateRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateResponse:
        session = await self._sessions.create(
            request.user_id,
            request.attributes,
            optional_timedelta(request, "ttl"),
            request.max_per_user,
        )
        return pb.CreateResponse(session=_message(session))

    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        session = await self._sessions.get(request.id, request.touch)
        return pb.GetResponse(session=_message(session))

    async def Update(
        self, request: pb.UpdateRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateResponse:
        session = await self._sessions.update(request.id, request.set, request.remove)
        return pb.UpdateResponse(session=_message(session))

    async def Destroy(
        self, request: pb.DestroyRequest, context: grpc.aio.ServicerContext
    ) -> pb.DestroyResponse:
        return pb.DestroyResponse(destroyed=await self._sessions.destroy(request.id))

    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponse:
        page = await self._sessions.list(request.user_id, request.limit, request.page_token)
        return pb.ListResponse(
            sessions=[_message(s) for s in page.sessions],
            total=page.total,
            next_page_token=page.next_page_token,
        )

    async def DestroyAll(
        self, request: pb.DestroyAllRequest, context: grpc.aio.ServicerContext
    ) -> pb.DestroyAllResponse:
        destroyed = await self._sessions.destroy_all(request.user_id, request.except_id)
        return pb.DestroyAllResponse(destroyed=destroyed)

    async def Rotate(
        self, request: pb.RotateRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateResponse:
        return pb.RotateResponse(session=_message(await self._sessions.rotate(request.id)))


def _message(session: Session) -> pb.Session:
    return pb.Session(
        id=session.id,
        user_id=session.user_id,
        attributes=session.attributes,
        created_at=timestamp(session.created_at),
        last_seen_at=timestamp(session.last_seen_at),
        expires_at=timestamp(session.expires_at),
    )


def build(runtime: Runtime) -> Service:
    descriptor = pb.DESCRIPTOR.services_by_name["Sessions"]
    sessions = Sessions(runtime.redis, runtime.settings.sessions_max_per_user)
    return Service(SessionsServicer(sessions), descriptor)
