"""What a service is to the server: where it serves, and the lifecycle of its own work.

`App` builds each service in `SERVICES` from a `Runtime` (the process's Redis, settings
and open streams), adds it to the gRPC server, starts the services in order before
serving, and closes them in reverse order at shutdown, before Redis closes.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from patterns_server.runtime.calls import Calls, deserializer
from patterns_server.runtime.config import Settings
from patterns_server.runtime.guard import guard_stream, guard_unary
from patterns_server.storage import RedisBackend


@dataclass(frozen=True)
class Runtime:
    """What the runtime lends every service."""

    redis: RedisBackend
    settings: Settings
    calls: Calls


class Service(Protocol):
    """A gRPC service of the server."""

    @property
    def name(self) -> str:
        """The full name clients call (`patterns.ratelimit.v1.RateLimiter`)."""
        ...

    def add_to(self, server: grpc.aio.Server) -> None:
        """Register every method on `server` (before it starts)."""
        ...

    async def start(self) -> None:
        """Start background work, before the server serves."""
        ...

    async def close(self) -> None:
        """Stop background work, after the server stopped serving, before Redis closes."""
        ...


class GuardedService:
    """A servicer served through `guard`: every method the service's descriptor names,
    unary or server-streaming, with its errors mapped and its calls logged. Start and
    close do nothing; a service with work of its own overrides them."""

    def __init__(self, servicer: object, descriptor: ServiceDescriptor, calls: Calls) -> None:
        self._servicer = servicer
        self._descriptor = descriptor
        self._calls = calls

    @property
    def name(self) -> str:
        return str(self._descriptor.full_name)

    def add_to(self, server: grpc.aio.Server) -> None:
        handlers = {method.name: self._handler(method) for method in self._descriptor.methods}
        generic = grpc.method_handlers_generic_handler(self.name, handlers)
        server.add_generic_rpc_handlers((generic,))
        server.add_registered_method_handlers(self.name, handlers)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _handler(self, method: Any) -> grpc.RpcMethodHandler:
        behaviour = getattr(self._servicer, method.name)
        path = f"/{self.name}/{method.name}"
        if method.client_streaming or inspect.isasyncgenfunction(behaviour) != bool(
            method.server_streaming
        ):
            raise TypeError(
                f"{path}: the servicer's method must be an async generator exactly when the "
                "contract streams responses (client streaming is not supported)"
            )
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(
                guard_stream(behaviour, path, self._calls),
                request_deserializer=deserializer(request, None),
                response_serializer=_serializer(response),
            )
        return grpc.unary_unary_rpc_method_handler(
            guard_unary(behaviour, path, self._calls),
            request_deserializer=deserializer(request, self._calls),
            response_serializer=response.SerializeToString,
        )


def _serializer(message_class: type[Message]) -> Callable[[Any], bytes]:
    """Serializes a stream's messages; bytes pass as they are, so that a stream sending one
    message to many clients can serialize it once for all of them."""
    serialize = message_class.SerializeToString

    def serialized(message: Any) -> bytes:
        return message if message.__class__ is bytes else serialize(message)

    return serialized
