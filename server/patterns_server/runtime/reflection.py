"""Server reflection that keeps the contract's comments, so `grpcurl describe` shows them.

grpcio-reflection rebuilds each file from the runtime descriptors, which hold no comments.
This servicer answers from `contract.binpb` instead, the descriptor set that `make protos`
writes with source info, and falls back to the library for files not in it.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer
from grpc_status import rpc_status

# ErrorReason is in no service's messages, so nothing else loads its file, and reflection
# finds only what is loaded: `grpcurl describe patterns.errors.v1.ErrorReason` needs this.
from patterns.errors.v1 import errors_pb2  # noqa: F401

from patterns_server.core.errors import PatternError
from patterns_server.runtime.auth import Access
from patterns_server.runtime.guard import status_for

# Written by `make protos`: the contract's, and that of the vendored Envoy protos.
CONTRACT = Path(__file__).parents[1] / "contract.binpb"
ENVOY_CONTRACT = Path(__file__).parents[1] / "envoy.binpb"


class CommentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    """With `access` (--reflection authenticated), only callers it knows may reflect."""

    def __init__(self, service_names: list[str], access: Access | None = None) -> None:
        super().__init__(service_names)
        self._access = access
        self._documented = {
            file.name: file.SerializeToString()
            for path in (CONTRACT, ENVOY_CONTRACT)
            for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
        }

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        if self._access is not None:
            try:
                self._access.identify(context)
            except PatternError as error:
                status = status_for(error, "/grpc.reflection.v1alpha.ServerReflection")
                await context.abort_with_status(rpc_status.to_status(status))
        async for response in super().ServerReflectionInfo(request_iterator, context):
            yield response

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            return self._respond(request, self._pool.FindFileByName(filename))
        except KeyError:
            return super()._file_by_filename(request, filename)

    def _file_containing_symbol(self, request: Any, symbol: str) -> Any:
        try:
            return self._respond(request, self._pool.FindFileContainingSymbol(symbol))
        except KeyError:
            return super()._file_containing_symbol(request, symbol)

    def _respond(self, request: Any, file: FileDescriptor) -> Any:
        """The file and its transitive imports, each with comments where we have them."""
        files: dict[str, FileDescriptor] = {}
        pending = [file]
        while pending:
            current = pending.pop()
            if current.name not in files:
                files[current.name] = current
                pending.extend(current.dependencies)
        return reflection_pb2.ServerReflectionResponse(
            original_request=request,
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[self._serialized(f) for f in files.values()]
            ),
        )

    def _serialized(self, file: FileDescriptor) -> bytes:
        if file.name in self._documented:
            return self._documented[file.name]
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        return proto.SerializeToString()
