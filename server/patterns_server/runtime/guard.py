"""The one place where exceptions become gRPC statuses, and where each call is logged.

`guard` wraps each method of a servicer, unary, server-streaming or bidi alike:
- a `PatternError` becomes its category's code (one table), with a `google.rpc.ErrorInfo`
  carrying its reason, a `BadRequest` naming the field for `InvalidArgument`, and a
  `RetryInfo` when it says when to retry;
- anything else becomes INTERNAL, logged with an id that the status message repeats;
- a malformed request is INVALID_ARGUMENT (reason MALFORMED_REQUEST), and a unary call
  beyond the server's limits RESOURCE_EXHAUSTED (reason OVERLOADED): see `calls.py`;
- a cancelled call (deadline passed, client gone) is left to gRPC: its task is cancelled,
  which also drops its Redis commands that are not yet sent;
- a stream still open at shutdown is ended with UNAVAILABLE (`Calls.end_streams`), so
  its client reconnects elsewhere instead of waiting out the grace period; one whose
  credentials a new auth file revoked, with UNAUTHENTICATED (`Calls.revoke`);
- every call is first authenticated (`auth.Access`): its tenant decides its namespace
  (`core.tenancy`), the services it may call, and its share of the limits.
Each call leaves one debug line in the request log: method, outcome, duration, and for a
stream the number of messages sent.
"""

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from patterns_server.core.errors import PatternError
from patterns_server.core.tenancy import enter_namespace
from patterns_server.rpc.errors import failure_of
from patterns_server.runtime.auth import Access, Tenant
from patterns_server.runtime.calls import Calls, Malformed, Stream, request_size
from patterns_server.runtime.metrics import Metrics

if TYPE_CHECKING:  # imported by the host only when tracing is on
    from patterns_server.runtime.tracing import Tracing

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("patterns_server.requests")

ERROR_DOMAIN = "patterns-server"


UnaryBehaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamBehaviour = Callable[[Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]]


@dataclass(frozen=True)
class Gate:
    """What every call passes through: admission (`calls`), authentication (`access`),
    the count of calls (`metrics`), and, when on, a span per call (`tracing`)."""

    calls: Calls
    access: Access
    metrics: Metrics = field(default_factory=Metrics)
    tracing: "Tracing | None" = None


def guard_unary(behaviour: UnaryBehaviour, method: str, gate: Gate) -> UnaryBehaviour:
    """`behaviour` (one request, one response) with its caller authenticated, admitted
    within the server's and its tenant's limits, in its tenant's namespace, with errors
    mapped, and the call counted and logged."""
    service, name = _service_of(method), method.rsplit("/", 1)[1]
    calls, access, metrics, tracing = gate.calls, gate.access, gate.metrics, gate.tracing

    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        outcome = "OK"
        size = request_size()
        tenant: Tenant | None = None  # once authenticated
        admitted = False
        try:
            tenant = access.credential(context, service).tenant  # before it takes a place
            refusal = calls.admit(size, tenant)  # refused: maybe NOT_READ
            if refusal is not None:
                metrics.refused(refusal.reason, tenant.name)
                raise refusal
            admitted = True
            if request.__class__ is Malformed:
                raise request.error
            enter_namespace(tenant.namespace)
            return await behaviour(request, context)
        except asyncio.CancelledError:
            outcome = _cancelled_outcome(context)
            raise
        except Exception as error:  # every failure leaves as a status, never a traceback
            status = status_for(error, method)
            outcome = code_pb2.Code.Name(status.code)
            await context.abort_with_status(rpc_status.to_status(status))
        finally:
            elapsed = time.perf_counter() - started
            tenant_name = tenant.name if tenant is not None else "-"
            if admitted and tenant is not None:
                calls.release(size, tenant)
            metrics.call(service, name, outcome, tenant_name, elapsed)
            if tracing is not None:
                tracing.end_call(outcome, tenant_name)
            if request_logger.isEnabledFor(logging.DEBUG):
                _log_call(method, outcome, elapsed, tenant_name, context, tracing)

    if tracing is None:
        return guarded

    @functools.wraps(behaviour)
    async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with tracing.call(method, context.invocation_metadata() or ()):
            return await guarded(request, context)

    return traced


def guard_stream(behaviour: StreamBehaviour, method: str, gate: Gate) -> StreamBehaviour:
    """`behaviour` (one request, a stream of responses) with its caller authenticated and
    counted within the limits, in its tenant's namespace, errors mapped, the stream counted
    and logged once at its end, and ended early by `calls` (shutdown, revoked credentials)."""
    return _guard_responses(behaviour, method, gate, bidi=False)


def guard_bidi(behaviour: StreamBehaviour, method: str, gate: Gate) -> StreamBehaviour:
    """`behaviour` (a stream of requests, a stream of responses) guarded as `guard_stream`
    guards a server stream: the stream counts against the server's and its tenant's
    streams, and ends at shutdown or when its credentials are revoked. `behaviour` reads
    the requests through an iterator that raises the `InvalidArgument` (reason
    MALFORMED_REQUEST) of a malformed one, instead of handing it over: raised on from
    `behaviour`, it ends the stream INVALID_ARGUMENT (a malformed message has no id to
    answer it by)."""
    return _guard_responses(behaviour, method, gate, bidi=True)


def _guard_responses(
    behaviour: StreamBehaviour, method: str, gate: Gate, bidi: bool
) -> StreamBehaviour:
    """`guard_stream` and `guard_bidi`: they differ only in how the requests are read."""
    service, name = _service_of(method), method.rsplit("/", 1)[1]
    calls, access, metrics, tracing = gate.calls, gate.access, gate.metrics, gate.tracing

    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        started = time.perf_counter()
        outcome, sent = "OK", 0
        stream: Stream | None = None
        tenant_name = "-"  # until authenticated
        messages = behaviour(_well_formed(request) if bidi else request, context)
        failure: Exception | None = None
        try:
            try:
                credential = access.credential(context, service)
                tenant_name = credential.tenant.name
                opened = calls.open_stream(credential)
                if isinstance(opened, PatternError):
                    metrics.refused(opened.reason, tenant_name)
                    raise opened
                stream = opened
                metrics.stream_opened(service, name)
                if not bidi and request.__class__ is Malformed:
                    raise request.error
                enter_namespace(credential.tenant.namespace)
                while stream.ending is None:
                    stream.inside = True
                    try:
                        message = await anext(messages)
                    except StopAsyncIteration:
                        break
                    finally:
                        stream.inside = False
                    yield message
                    sent += 1
                    metrics.stream_message(service, name)
                failure = stream.ending
            except asyncio.CancelledError:
                if stream is None or stream.ending is None:
                    outcome = _cancelled_outcome(context)
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # the cancellation was ours: answer it with a status
                failure = stream.ending
            except GeneratorExit:  # gRPC stopped reading: the client is gone
                outcome = "CANCELLED"
                raise
            except Exception as error:
                failure = error
            finally:
                if stream is not None:
                    calls.close_stream(stream)
                await messages.aclose()  # the servicer's own clean-up runs now
            if failure is not None:
                status = status_for(failure, method)
                outcome = code_pb2.Code.Name(status.code)
                await context.abort_with_status(rpc_status.to_status(status))
        finally:
            if stream is not None:
                metrics.stream_closed(service, name, outcome, tenant_name)
            else:
                metrics.stream_refused(service, name, outcome, tenant_name)
            if tracing is not None:
                tracing.end_call(outcome, tenant_name)
            if request_logger.isEnabledFor(logging.DEBUG):
                elapsed = time.perf_counter() - started
                _log_call(method, outcome, elapsed, tenant_name, context, tracing, sent)

    if tracing is None:
        return guarded

    @functools.wraps(behaviour)
    async def traced(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        with tracing.call(method, context.invocation_metadata() or ()):
            async for message in guarded(request, context):
                yield message

    return traced


async def _well_formed(requests: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    """The requests of a client stream, the first malformed one raised as its error."""
    async for request in requests:
        if request.__class__ is Malformed:
            raise request.error
        yield request


def _log_call(
    method: str,
    outcome: str,
    seconds: float,
    tenant: str,
    context: grpc.aio.ServicerContext,
    tracing: "Tracing | None",
    messages: int | None = None,
) -> None:
    """One line of the request log: the method, its outcome, its time and its tenant (and
    a stream's messages); as fields too, for the JSON log format, with the peer and, when
    tracing, the trace id."""
    fields: dict[str, Any] = {
        "method": method,
        "code": outcome,
        "duration_ms": round(seconds * 1000, 3),
        "tenant": tenant,
        "peer": context.peer(),
    }
    if tracing is not None:
        fields["trace_id"] = tracing.trace_id()
    if messages is None:
        request_logger.debug(
            "%s %s %.2fms tenant=%s", method, outcome, seconds * 1000, tenant, extra=fields
        )
    else:
        fields["messages"] = messages
        request_logger.debug(
            "%s %s %.2fms tenant=%s %d messages",
            method,
            outcome,
            seconds * 1000,
            tenant,
            messages,
            extra=fields,
        )


def _service_of(method: str) -> str:
    """ "patterns.lock.v1.Locker" of "/patterns.lock.v1.Locker/Acquire"."""
    return method.split("/")[1]


def _cancelled_outcome(context: grpc.aio.ServicerContext) -> str:
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


def status_for(error: Exception, method: str) -> status_pb2.Status:
    """The `google.rpc.Status` a client receives for `error` (`rpc.errors.failure_of`)."""
    failure = failure_of(error, method)
    details: list[Any] = []
    if failure.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=failure.field, description=failure.description
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if failure.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(failure.retry_after)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    details.append(_error_info(failure.reason))
    return _status(failure.code, failure.message, *details)


def _error_info(reason: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)


def _status(code: int, message: str, *details: Any) -> status_pb2.Status:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return status_pb2.Status(code=code, message=message, details=packed)
