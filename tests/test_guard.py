"""`guard` on a real grpc.aio server: unary and server-streaming methods map every outcome
to the right status, leave one request-log line, and let the servicer clean up.

The servicer here is a stand-in for the streaming services (Events, Locker): it serves
grpc.health.v1.Health, whose Watch streams, and its behaviour is steered by the request's
`service` field ("count:3" sends three messages, "fail:2" two then an error, ...).
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from patterns_server.core.errors import InvalidArgument, ResourceExhausted
from patterns_server.core.settings import Settings
from patterns_server.rpc.service import Service
from patterns_server.runtime.auth import Access
from patterns_server.runtime.calls import Calls
from patterns_server.runtime.guard import Gate
from patterns_server.runtime.serving import add_service
from tests.rpc import details
from tests.waiting import eventually_async

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
WATCH = "/grpc.health.v1.Health/Watch"


class SteeredServicer:
    """Health, with a Watch that does what its request says and records its clean-up."""

    def __init__(self) -> None:
        self.cleaned_up = asyncio.Event()
        self.waiting = asyncio.Event()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service == "fail":
            raise InvalidArgument("service", "no such service")
        return SERVING

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse()

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        kind, _, count = request.service.partition(":")
        try:
            for _ in range(int(count or 0)):
                yield SERVING
            if kind == "fail":
                raise ResourceExhausted("the consumer fell behind", "SLOW_CONSUMER")
            if kind == "bug":
                raise RuntimeError("a bug")
            if kind == "forever":
                self.waiting.set()
                await asyncio.Event().wait()
        finally:
            self.cleaned_up.set()


@contextlib.asynccontextmanager
async def serving(
    servicer: SteeredServicer,
) -> AsyncIterator[tuple[health_pb2_grpc.HealthStub, Calls]]:
    streams = Calls.for_settings(Settings())
    server = grpc.aio.server()
    add_service(server, Service(servicer, HEALTH), Gate(streams, Access()))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield health_pb2_grpc.HealthStub(channel), streams
    finally:
        await server.stop(None)


def watch(service: str, timeout: float = 10) -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


async def parked(
    stub: health_pb2_grpc.HealthStub, servicer: SteeredServicer
) -> grpc.aio.UnaryStreamCall:
    """A Watch that has sent its one message and now waits, forever, in the servicer."""
    call = stub.Watch(watch("forever:1"), timeout=30)
    await call.read()
    await servicer.waiting.wait()
    return call


async def read_all(call: grpc.aio.UnaryStreamCall) -> tuple[int, grpc.aio.AioRpcError | None]:
    """(messages read, the error that ended the stream or None)."""
    received = 0
    try:
        while await call.read() is not grpc.aio.EOF:
            received += 1
    except grpc.aio.AioRpcError as error:
        return received, error
    return received, None


@pytest.fixture
def request_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="patterns_server.requests")
    return caplog


def stream_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(WATCH)]


def test_a_stream_that_ends_well(request_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[int, grpc.aio.AioRpcError | None]:
        servicer = SteeredServicer()
        async with serving(servicer) as (stub, streams):
            outcome = await read_all(stub.Watch(watch("count:3"), timeout=10))
            assert servicer.cleaned_up.is_set() and streams.streams == 0
            return outcome

    assert asyncio.run(scenario()) == (3, None)
    (line,) = stream_lines(request_log)
    assert " OK " in line and line.endswith(" 3 messages")


@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        ("fail", grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOW_CONSUMER"),
        ("bug", grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
def test_an_error_mid_stream_ends_it_with_its_status(
    request_log: pytest.LogCaptureFixture, kind: str, code: grpc.StatusCode, reason: str
) -> None:
    async def scenario() -> tuple[int, grpc.aio.AioRpcError | None]:
        servicer = SteeredServicer()
        async with serving(servicer) as (stub, _):
            outcome = await read_all(stub.Watch(watch(f"{kind}:2"), timeout=10))
            assert servicer.cleaned_up.is_set()
            return outcome

    received, error = asyncio.run(scenario())
    assert received == 2 and error is not None
    assert error.code() == code
    assert "Traceback" not in (error.details() or "")
    assert details(error)["ErrorInfo"].reason == reason
    (line,) = stream_lines(request_log)
    assert f" {code.name} " in line and line.endswith(" 2 messages")


def test_a_cancelled_stream_cleans_up_at_once(request_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        servicer = SteeredServicer()
        async with serving(servicer) as (stub, streams):
            call = await parked(stub, servicer)
            call.cancel()
            await asyncio.wait_for(servicer.cleaned_up.wait(), 5)
            await eventually_async(lambda: streams.streams == 0)

    asyncio.run(scenario())
    (line,) = stream_lines(request_log)
    assert " CANCELLED " in line and line.endswith(" 1 messages")


def test_a_stream_past_its_deadline_cleans_up(request_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[int, grpc.aio.AioRpcError | None]:
        servicer = SteeredServicer()
        async with serving(servicer) as (stub, _):
            outcome = await read_all(stub.Watch(watch("forever:1"), timeout=0.5))
            await asyncio.wait_for(servicer.cleaned_up.wait(), 5)
            await eventually_async(lambda: bool(stream_lines(request_log)))
            return outcome

    received, error = asyncio.run(scenario())
    assert received == 1 and error is not None
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    (line,) = stream_lines(request_log)
    assert " DEADLINE_EXCEEDED " in line


def test_shutdown_ends_open_streams_with_unavailable(request_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[tuple[int, grpc.aio.AioRpcError | None]]:
        servicer = SteeredServicer()
        async with serving(servicer) as (stub, streams):
            open_call = await parked(stub, servicer)
            streams.end_streams()
            ended = await read_all(open_call)
            assert servicer.cleaned_up.is_set()
            # A stream that arrives once shutdown began ends at once too.
            late = await read_all(stub.Watch(watch("forever:1"), timeout=30))
            return [ended, late]

    for received, error in asyncio.run(scenario()):
        assert received == 0 and error is not None
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert details(error)["ErrorInfo"].reason == "SHUTTING_DOWN"
        assert details(error)["RetryInfo"].retry_delay.seconds >= 0
    lines = stream_lines(request_log)
    assert len(lines) == 2 and all(" UNAVAILABLE " in line for line in lines)


def test_unary_errors_are_mapped_too(request_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> grpc.aio.AioRpcError:
        async with serving(SteeredServicer()) as (stub, _):
            assert (await stub.Check(watch("ok"), timeout=10)) == SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(watch("fail"), timeout=10)
            return caught.value

    error = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = details(error)["BadRequest"].field_violations
    assert [v.field for v in violations] == ["service"]
    lines = [r.getMessage() for r in request_log.records]
    assert any("/Check OK " in line for line in lines)
    assert any("/Check INVALID_ARGUMENT " in line for line in lines)


def test_a_servicer_that_breaks_the_contract_is_refused_at_start() -> None:
    class Unary(SteeredServicer):
        async def Watch(self, request: object, context: object) -> None:  # type: ignore[override]
            return None

    async def scenario() -> None:
        add_service(
            grpc.aio.server(),
            Service(Unary(), HEALTH),
            Gate(Calls.for_settings(Settings()), Access()),
        )

    with pytest.raises(TypeError, match="Watch"):
        asyncio.run(scenario())
