"""The one place where exceptions become gRPC statuses, and where each call is logged.

`guard` wraps each method of a servicer, unary or server-streaming alike:
- a `PatternError` becomes its category's code (one table), with a `google.rpc.ErrorInfo`
  carrying its reason, a `BadRequest` naming the field for `InvalidArgument`, and a
  `RetryInfo` when it says when to retry;
- anything else becomes INTERNAL, logged with an id that the status message repeats;
- a cancelled call (deadline passed, client gone) is left to gRPC: its task is cancelled,
  which also drops its Redis commands that are not yet sent;
- a stream still open at shutdown is ended with UNAVAILABLE (`OpenStreams.end_all`), so
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
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from patterns_server.runtime.errors import Category, InvalidArgument, PatternError, Unavailable

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("patterns_server.requests")

ERROR_DOMAIN = "patterns-server"

STATUS_CODES: dict[Category, int] = {
    Category.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    Category.NOT_FOUND: code_pb2.NOT_FOUND,
    Category.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    Category.ABORTED: code_pb2.ABORTED,
    Category.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    Category.UNAVAILABLE: code_pb2.UNAVAILABLE,
}
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

UnaryBehaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamBehaviour = Callable[[Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]]


@dataclass(eq=False)
class _Stream:
    task: "asyncio.Task[Any] | None"
    inside: bool = False  # suspended in the servicer's code (not in gRPC's write)
    ending: bool = False


class OpenStreams:
    """The server-streaming calls in progress, so that shutdown can end them."""

    def __init__(self) -> None:
        self._streams: set[_Stream] = set()
        self._ending = False

    def __len__(self) -> int:
        return len(self._streams)

    def end_all(self) -> None:
        """End every open stream (and any opened from now on) with UNAVAILABLE: at once
        where the servicer waits (by cancelling it), else as soon as gRPC has written the
        message in hand."""
        self._ending = True
        for stream in self._streams:
            stream.ending = True
            if stream.inside and stream.task is not None:
                stream.task.cancel()

    def _open(self) -> _Stream:
        stream = _Stream(asyncio.current_task(), ending=self._ending)
        self._streams.add(stream)
        return stream

    def _close(self, stream: _Stream) -> None:
        self._streams.discard(stream)


SHUTTING_DOWN = Unavailable("the server is shutting down: reconnect", "SHUTTING_DOWN")


def guard_unary(behaviour: UnaryBehaviour, method: str) -> UnaryBehaviour:
    """`behaviour` (one request, one response) with errors mapped and the call logged."""

    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        outcome = "OK"
        try:
            return await behaviour(request, context)
        except asyncio.CancelledError:
            outcome = _cancelled_outcome(context)
            raise
        except Exception as error:  # every failure leaves as a status, never a traceback
            status = status_for(error, method)
            outcome = _CODE_NAMES[status.code]
            await context.abort_with_status(rpc_status.to_status(status))
        finally:
            if request_logger.isEnabledFor(logging.DEBUG):
                request_logger.debug(
                    "%s %s %.2fms", method, outcome, (time.perf_counter() - started) * 1000
                )

    return guarded


def guard_stream(behaviour: StreamBehaviour, method: str, streams: OpenStreams) -> StreamBehaviour:
    """`behaviour` (one request, a stream of responses) with errors mapped, the stream
    logged once at its end, and ended with UNAVAILABLE by `streams.end_all()`."""

    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        started = time.perf_counter()
        outcome, sent = "OK", 0
        stream = streams._open()
        messages = behaviour(request, context)
        failure: Exception | None = None
        try:
            try:
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
                if not stream.ending:
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
                streams._close(stream)
                await messages.aclose()  # the servicer's own clean-up runs now
            if failure is not None:
                status = status_for(failure, method)
                outcome = _CODE_NAMES[status.code]
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
    if isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.description
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(error.retry_after)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    details.append(_error_info(error.reason))
    return _status(STATUS_CODES[error.category], error.message, *details)


def _error_info(reason: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)


def _status(code: int, message: str, *details: Any) -> status_pb2.Status:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return status_pb2.Status(code=code, message=message, details=packed)
