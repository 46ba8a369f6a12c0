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
  its client reconnects elsewhere instead of waiting out the grace period.
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
from patterns_server.runtime.calls import SHUTTING_DOWN, Calls, Malformed, request_size

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("patterns_server.requests")

ERROR_DOMAIN = "patterns-server"


UnaryBehaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamBehaviour = Callable[[Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]]


def guard_unary(behaviour: UnaryBehaviour, method: str, calls: Calls) -> UnaryBehaviour:
    """`behaviour` (one request, one response) with errors mapped, admitted within the
    server's limits, and the call logged."""

    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        outcome = "OK"
        size = request_size()
        refusal = calls.admit(size)  # refused, the request may be NOT_READ
        try:
            if refusal is not None:
                raise refusal
            if request.__class__ is Malformed:
                raise request.error
            return await behaviour(request, context)
        except asyncio.CancelledError:
            outcome = _cancelled_outcome(context)
            raise
        except Exception as error:  # every failure leaves as a status, never a traceback
            status = status_for(error, method)
            outcome = code_pb2.Code.Name(status.code)
            await context.abort_with_status(rpc_status.to_status(status))
        finally:
            if refusal is None:
                calls.release(size)
            if request_logger.isEnabledFor(logging.DEBUG):
                request_logger.debug(
                    "%s %s %.2fms", method, outcome, (time.perf_counter() - started) * 1000
                )

    return guarded


def guard_stream(behaviour: StreamBehaviour, method: str, calls: Calls) -> StreamBehaviour:
    """`behaviour` (one request, a stream of responses) with errors mapped, the stream
    logged once at its end, and ended with UNAVAILABLE by `calls.end_streams()`."""

    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        started = time.perf_counter()
        outcome, sent = "OK", 0
        stream = calls.open_stream()
        messages = behaviour(request, context)
        failure: Exception | None = None
        try:
            try:
                if isinstance(stream, PatternError):
                    raise stream
                if request.__class__ is Malformed:
                    raise request.error
                while not stream.ending:
                    stream.inside = True
                    try:
                        message = await anext(messages)
                    except StopAsyncIteration:
                        break
                    finally:
                        stream.inside = False
                    yield message
                    sent += 1
                if stream.ending:
                    failure = SHUTTING_DOWN
            except asyncio.CancelledError:
                if isinstance(stream, PatternError) or not stream.ending:
                    outcome = _cancelled_outcome(context)
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # the cancellation was ours: answer it with a status
                failure = SHUTTING_DOWN
            except GeneratorExit:  # gRPC stopped reading: the client is gone
                outcome = "CANCELLED"
                raise
            except Exception as error:
                failure = error
            finally:
                if not isinstance(stream, PatternError):
                    calls.close_stream(stream)
                await messages.aclose()  # the servicer's own clean-up runs now
            if failure is not None:
                status = status_for(failure, method)
                outcome = code_pb2.Code.Name(status.code)
                await context.abort_with_status(rpc_status.to_status(status))
        finally:
            if request_logger.isEnabledFor(logging.DEBUG):
                request_logger.debug(
                    "%s %s %.2fms %d messages",
                    method,
                    outcome,
                    (time.perf_counter() - started) * 1000,
                    sent,
                )

    return guarded


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
