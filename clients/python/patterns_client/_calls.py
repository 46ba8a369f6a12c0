"""How the services' methods make calls: one deadline and metadata for every call, and
every failure raised as a PatternsError."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from patterns_client.errors import from_rpc_error

Metadata = Sequence["tuple[str, str | bytes]"]


class Calls:
    """Unary calls of the blocking client."""

    def __init__(self, timeout: float, metadata: Metadata) -> None:
        self.timeout = timeout
        self.metadata = tuple(metadata)

    def unary(self, method: Any, request: Any, *, longer_by: float = 0.0) -> Any:
        """`method(request)` with the client's deadline, `longer_by` seconds more for a call
        that waits on the server (a lock's wait, say)."""
        try:
            return method(request, timeout=self.timeout + longer_by, metadata=self.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


class AsyncCalls:
    """Unary calls of the asyncio client."""

    def __init__(self, timeout: float, metadata: Metadata) -> None:
        self.timeout = timeout
        self.metadata = tuple(metadata)

    async def unary(self, method: Any, request: Any, *, longer_by: float = 0.0) -> Any:
        """As Calls.unary, awaited."""
        try:
            return await method(request, timeout=self.timeout + longer_by, metadata=self.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
