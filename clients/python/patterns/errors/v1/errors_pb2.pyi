from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    INVALID_ARGUMENT: _ClassVar[ErrorReason]
    MALFORMED_REQUEST: _ClassVar[ErrorReason]
    SESSION_NOT_FOUND: _ClassVar[ErrorReason]
    LEASE_LOST: _ClassVar[ErrorReason]
    OVERLOADED: _ClassVar[ErrorReason]
    SLOW_CONSUMER: _ClassVar[ErrorReason]
    REDIS_UNAVAILABLE: _ClassVar[ErrorReason]
    REDIS_TIMEOUT: _ClassVar[ErrorReason]
    SHUTTING_DOWN: _ClassVar[ErrorReason]
    CLOSED: _ClassVar[ErrorReason]
    INTERNAL: _ClassVar[ErrorReason]
    MISSING_CREDENTIALS: _ClassVar[ErrorReason]
    INVALID_API_KEY: _ClassVar[ErrorReason]
    CREDENTIALS_REVOKED: _ClassVar[ErrorReason]
    SERVICE_NOT_ALLOWED: _ClassVar[ErrorReason]
    TENANT_OVERLOADED: _ClassVar[ErrorReason]
    GROUP_DELETED: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
INVALID_ARGUMENT: ErrorReason
MALFORMED_REQUEST: ErrorReason
SESSION_NOT_FOUND: ErrorReason
LEASE_LOST: ErrorReason
OVERLOADED: ErrorReason
SLOW_CONSUMER: ErrorReason
REDIS_UNAVAILABLE: ErrorReason
REDIS_TIMEOUT: ErrorReason
SHUTTING_DOWN: ErrorReason
CLOSED: ErrorReason
INTERNAL: ErrorReason
MISSING_CREDENTIALS: ErrorReason
INVALID_API_KEY: ErrorReason
CREDENTIALS_REVOKED: ErrorReason
SERVICE_NOT_ALLOWED: ErrorReason
TENANT_OVERLOADED: ErrorReason
GROUP_DELETED: ErrorReason
