"""Serving a `Service`: every method its descriptor names, unary, server-streaming or bidi,
registered on the gRPC server through `guard` (admission, errors as statuses, one log line
per call) with a request reader that never raises (see `calls.deserializer`)."""

import inspect
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message

from patterns_server.rpc.service import Service
from patterns_server.runtime.calls import deserializer
from patterns_server.runtime.guard import Gate, guard_bidi, guard_stream, guard_unary


def add_service(server: grpc.aio.Server, service: Service, gate: Gate) -> None:
    """Register every method of `service` on `server` (before it starts)."""
    handlers = {
        method.name: _handler(service, method, gate) for method in service.descriptor.methods
    }
    generic = grpc.method_handlers_generic_handler(service.name, handlers)
    server.add_generic_rpc_handlers((generic,))
    server.add_registered_method_handlers(service.name, handlers)


def _handler(service: Service, method: Any, gate: Gate) -> grpc.RpcMethodHandler:
    behaviour = getattr(service.servicer, method.name)
    path = f"/{service.name}/{method.name}"
    if inspect.isasyncgenfunction(behaviour) != bool(method.server_streaming) or (
        method.client_streaming and not method.server_streaming
    ):
        raise TypeError(
            f"{path}: the servicer's method must be an async generator exactly when the "
            "contract streams responses (client streaming alone is not supported)"
        )
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    if method.client_streaming:
        return grpc.stream_stream_rpc_method_handler(
            guard_bidi(behaviour, path, gate),
            request_deserializer=deserializer(request, None),
            response_serializer=_serializer(response),
        )
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(
            guard_stream(behaviour, path, gate),
            request_deserializer=deserializer(request, None),
            response_serializer=_serializer(response),
        )
    return grpc.unary_unary_rpc_method_handler(
        guard_unary(behaviour, path, gate),
        request_deserializer=deserializer(request, gate.calls),
        response_serializer=response.SerializeToString,
    )


def _serializer(message_class: type[Message]) -> Callable[[Any], bytes]:
    """Serializes a stream's messages; bytes pass as they are, so that a stream sending one
    message to many clients can serialize it once for all of them."""
    serialize = message_class.SerializeToString

    def serialized(message: Any) -> bytes:
        return message if message.__class__ is bytes else serialize(message)

    return serialized


class ListenError(RuntimeError):
    """The server cannot listen where it is told (a busy port, TLS files it cannot read)."""
