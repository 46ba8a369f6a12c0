"""The one place where exceptions become gRPC statuses, and where each call is logged.

`guard` wraps each method of a servicer, unary or server-streaming alike:
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
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from patterns_server.core.errors import InvalidArgument, PatternError
from patterns_server.core.tenancy import enter_namespace
from patterns_server.runtime.auth import Access, Tenant
from patterns_server.runtime.calls import Calls, Malformed, Stream, request_size

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("patterns_server.requests")

ERROR_DOMAIN = "patterns-server"


UnaryBehaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamBehaviour = Callable[[Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]]


def guard_unary(
    behaviour: UnaryBehaviour, method: str, calls: Calls, access: Access
) -> UnaryBehaviour:
    """`behaviour` (one request, one response) with its caller authenticated, admitted
    within the server's and its tenant's limits, in its tenant's namespace, with errors
    mapped, and the call logged."""
    service = _service_of(method)

    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        outcome = "OK"
        size = request_size()
        tenant: Tenant | None = None  # set once admitted
        try:
            credential = access.credential(context, service)  # before it takes a place
            refusal = calls.admit(size, credential.tenant)  # refused: maybe NOT_READ
            if refusal is not None:
                raise refusal
            tenant = credential.tenant
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
            if tenant is not None:
                calls.release(size, tenant)
            if request_logger.isEnabledFor(logging.DEBUG):
                request_logger.debug(
                    "%s %s %.2fms tenant=%s",
                    method,
                    outcome,
                    (time.perf_counter() - started) * 1000,
                    tenant.name if tenant is not None else "-",
                )

    return guarded


def guard_stream(
    behaviour: StreamBehaviour, method: str, calls: Calls, access: Access
) -> StreamBehaviour:
    """`behaviour` (one request, a stream of responses) with its caller authenticated and
    counted within the limits, in its tenant's namespace, errors mapped, the stream logged
    once at its end, and ended early by `calls` (shutdown, revoked credentials)."""
    service = _service_of(method)

    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        started = time.perf_counter()
        outcome, sent = "OK", 0
        stream: Stream | None = None
        messages = behaviour(request, context)
        failure: Exception | None = None
        try:
            try:
                credential = access.credential(context, service)
                opened = calls.open_stream(credential)
                if isinstance(opened, PatternError):
                    raise opened
                stream = opened
                if request.__class__ is Malformed:
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
            if request_logger.isEnabledFor(logging.DEBUG):
                request_logger.debug(
                    "%s %s %.2fms tenant=%s %d messages",
                    method,
                    outcome,
                    (time.perf_counter() - started) * 1000,
                    stream.credential.tenant.name if stream is not None else "-",
                    sent,
                )

    return guarded


def _service_of(method: str) -> str:
    """ "patterns.lock.v1.Locker" of "/patterns.lock.v1.Locker/Acquire"."""
    return method.split("/")[1]


def _cancelled_outcome(context: grpc.aio.ServicerContext) -> str:
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


def status_for(error: Exception, method: str) -> status_pb2.Status:
    """The `google.rpc.Status` a client receives for `error`."""
    if not isinstance(error, PatternError):
        incident = uuid.uuid4().hex[:12]
        logger.error("internal error %s in %s", incident, method, exc_info=error)
        message = f"internal error (incident {incident})"
        return _status(code_pb2.INTERNAL, message, _error_info("INTERNAL"))
    details: list[Any] = []
    if isinstance(error, InvalidArgument) and error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.description
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(error.retry_after)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    details.append(_error_info(error.reason))
    # A category is named as its google.rpc.Code.
    return _status(code_pb2.Code.Value(error.category.value), error.message, *details)


def _error_info(reason: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)


def _status(code: int, message: str, *details: Any) -> status_pb2.Status:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return status_pb2.Status(code=code, message=message, details=packed)
