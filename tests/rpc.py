"""Making calls and reading their outcome: stubs on asyncio channels, calls retried through
an outage, what a failed call carried (its code and google.rpc details), and grpcurl."""

import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from patterns.errors.v1 import errors_pb2

from devtools.processes import PatternsServer

T = TypeVar("T")

# The reasons the contract lists (patterns.errors.v1.ErrorReason). `details()` refuses an
# ErrorInfo with any other, so every suite that reads an error's details also checks that
# the server sent a reason the contract lists.
LISTED_REASONS = frozenset(errors_pb2.ErrorReason.keys()) - {"ERROR_REASON_UNSPECIFIED"}
ERROR_DOMAIN = "patterns-server"


@asynccontextmanager
async def stub_for(address: str, stub_class: Callable[[grpc.aio.Channel], T]) -> AsyncIterator[T]:
    """A stub of `stub_class` on an asyncio channel to `address`, closed after."""
    async with grpc.aio.insecure_channel(address) as channel:
        yield stub_class(channel)


def once_answered(call: Callable[[], T], within: float = 10.0) -> T:
    """`call()`'s result once the server answers it again (after an outage): it is tried
    every 0.1 s while it fails with an RpcError, for up to `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except grpc.RpcError:
            assert time.monotonic() < deadline, "no answer in time"
            time.sleep(0.1)


class HasToken(Protocol):
    @property
    def token(self) -> str: ...


def bearer(tenant: HasToken) -> tuple[tuple[str, str]]:
    """The metadata that authenticates a call as `tenant` (its API key, as a bearer token)."""
    return (("authorization", f"Bearer {tenant.token}"),)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """The RpcError that `call()` raises (the test fails if it succeeds)."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def details(error: grpc.RpcError) -> dict[str, Any]:
    """The status details of `error`, by message name (BadRequest, ErrorInfo, ...); an
    ErrorInfo must be of the server's domain, with a reason the contract lists."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error}"
    found: dict[str, Any] = {}
    for packed in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
        ):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    info = found.get("ErrorInfo")
    if info is not None:
        assert info.domain == ERROR_DOMAIN, f"an ErrorInfo of another domain: {info}"
        assert info.reason in LISTED_REASONS, (
            f"reason {info.reason!r} is not in patterns.errors.v1.ErrorReason "
            "(protos/patterns/errors/v1/errors.proto)"
        )
    return found


def retry_delay(error: grpc.RpcError) -> float | None:
    """Seconds the error's RetryInfo asks the client to wait; None without one."""
    status = rpc_status.from_call(error)
    for packed in status.details if status is not None else ():
        if packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            packed.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def assert_invalid(call: Callable[[], Any], field: str) -> None:
    """`call()` fails INVALID_ARGUMENT with a BadRequest naming exactly `field`."""
    error = rpc_error(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    found = details(error)
    assert [v.field for v in found["BadRequest"].field_violations] == [field]
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT"


def assert_unavailable(call: Callable[[], Any]) -> None:
    """`call()` fails UNAVAILABLE, telling the client when to retry."""
    error = rpc_error(call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    found = details(error)
    assert found["RetryInfo"].retry_delay.seconds > 0
    assert found["ErrorInfo"].reason.startswith("REDIS_")


def grpcurl(
    grpcurl_path: str,
    server: PatternsServer,
    *command: str,
    data: Mapping[str, object] | None = None,
) -> str:
    """Run `grpcurl -plaintext [-d data] <server> <command...>`; its output."""
    options = ["-plaintext"] + (["-d", json.dumps(data)] if data is not None else [])
    result = subprocess.run(
        [grpcurl_path, *options, server.address, *command],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def grpcurl_call(
    grpcurl_path: str, server: PatternsServer, method: str, data: Mapping[str, object]
) -> Any:
    """`method` called by grpcurl with `data` (JSON); its answer, parsed."""
    return json.loads(grpcurl(grpcurl_path, server, method, data=data))
