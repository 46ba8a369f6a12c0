"""The one place where exceptions become gRPC statuses, and where each request is logged.

- `errors.InvalidArgument` -> INVALID_ARGUMENT with a `google.rpc.BadRequest` naming fields;
- Redis unreachable, timing out, loading, failing over -> UNAVAILABLE with `RetryInfo`;
- anything else -> INTERNAL, logged with an id that the status message repeats.
Every error carries a `google.rpc.ErrorInfo` whose `reason` clients can switch on.
A cancelled call (deadline passed, client gone) is left to gRPC: its task is cancelled,
which also drops its Redis commands that are not yet sent.
"""

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from redis import exceptions as redis_errors

from patterns_server.errors import InvalidArgument
from patterns_server.redis import is_unavailable

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("patterns_server.requests")

ERROR_DOMAIN = "patterns-server"
RETRY_DELAY = duration_pb2.Duration(seconds=1)

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}

Servicer = TypeVar("Servicer")


def guard(servicer: Servicer, service: ServiceDescriptor) -> Servicer:
    """Wrap every RPC method of `servicer` (named by `service`) with status mapping and the
    per-request log line; done once at start-up, so no interceptor runs per call."""
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        setattr(servicer, method.name, _guarded(behaviour, f"/{service.full_name}/{method.name}"))
    return servicer


def _guarded(
    behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], method: str
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        outcome = "OK"
        try:
            return await behaviour(request, context)
        except asyncio.CancelledError:
            outcome = "CANCELLED"
            raise
        except Exception as error:  # every failure leaves as a status, never a traceback
            status = status_for(error, method)
            outcome = _STATUS_CODES[status.code].name
            await context.abort_with_status(rpc_status.to_status(status))
        finally:
            if request_logger.isEnabledFor(logging.DEBUG):
                request_logger.debug(
                    "%s %s %.2fms", method, outcome, (time.perf_counter() - started) * 1000
                )

    return guarded


def status_for(error: Exception, method: str) -> status_pb2.Status:
    """The `google.rpc.Status` a client receives for `error`."""
    if isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.description
        )
        bad_request = error_details_pb2.BadRequest(field_violations=[violation])
        return _status(code_pb2.INVALID_ARGUMENT, str(error), "INVALID_ARGUMENT", bad_request)
    if isinstance(error, redis_errors.TimeoutError | asyncio.TimeoutError):
        return _unavailable("Redis did not answer in time", "REDIS_TIMEOUT")
    if is_unavailable(error):
        return _unavailable("Redis is unreachable or cannot serve now", "REDIS_UNAVAILABLE")
    incident = uuid.uuid4().hex[:12]
    logger.error("internal error %s in %s", incident, method, exc_info=error)
    return _status(code_pb2.INTERNAL, f"internal error (incident {incident})", "INTERNAL")


def _unavailable(message: str, reason: str) -> status_pb2.Status:
    retry = error_details_pb2.RetryInfo(retry_delay=RETRY_DELAY)
    return _status(code_pb2.UNAVAILABLE, message, reason, retry)


def _status(code: int, message: str, reason: str, *details: Any) -> status_pb2.Status:
    packed = []
    for detail in (*details, error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)):
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return status_pb2.Status(code=code, message=message, details=packed)
