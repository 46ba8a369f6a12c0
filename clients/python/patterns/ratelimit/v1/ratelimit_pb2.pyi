import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Algorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALGORITHM_UNSPECIFIED: _ClassVar[Algorithm]
    ALGORITHM_FIXED_WINDOW: _ClassVar[Algorithm]
    ALGORITHM_SLIDING_WINDOW_LOG: _ClassVar[Algorithm]
    ALGORITHM_SLIDING_WINDOW_COUNTER: _ClassVar[Algorithm]
    ALGORITHM_TOKEN_BUCKET: _ClassVar[Algorithm]
    ALGORITHM_GCRA: _ClassVar[Algorithm]
ALGORITHM_UNSPECIFIED: Algorithm
ALGORITHM_FIXED_WINDOW: Algorithm
ALGORITHM_SLIDING_WINDOW_LOG: Algorithm
ALGORITHM_SLIDING_WINDOW_COUNTER: Algorithm
ALGORITHM_TOKEN_BUCKET: Algorithm
ALGORITHM_GCRA: Algorithm

class Policy(_message.Message):
    __slots__ = ("algorithm", "limit", "period", "burst")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    algorithm: Algorithm
    limit: int
    period: _duration_pb2.Duration
    burst: int
    def __init__(self, algorithm: _Optional[_Union[Algorithm, str]] = ..., limit: _Optional[int] = ..., period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., burst: _Optional[int] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("key", "policy", "cost", "peek")
    KEY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    PEEK_FIELD_NUMBER: _ClassVar[int]
    key: str
    policy: Policy
    cost: int
    peek: bool
    def __init__(self, key: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., cost: _Optional[int] = ..., peek: _Optional[bool] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("allowed", "limit", "remaining", "reset_after", "retry_after")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    limit: int
    remaining: int
    reset_after: _duration_pb2.Duration
    retry_after: _duration_pb2.Duration
    def __init__(self, allowed: _Optional[bool] = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CheckManyRequest(_message.Message):
    __slots__ = ("checks", "all_or_nothing")
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    ALL_OR_NOTHING_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[CheckRequest]
    all_or_nothing: bool
    def __init__(self, checks: _Optional[_Iterable[_Union[CheckRequest, _Mapping]]] = ..., all_or_nothing: _Optional[bool] = ...) -> None: ...

class CheckManyResponse(_message.Message):
    __slots__ = ("results", "allowed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CheckResponse]
    allowed: bool
    def __init__(self, results: _Optional[_Iterable[_Union[CheckResponse, _Mapping]]] = ..., allowed: _Optional[bool] = ...) -> None: ...

class CheckStreamRequest(_message.Message):
    __slots__ = ("id", "check")
    ID_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    id: int
    check: CheckRequest
    def __init__(self, id: _Optional[int] = ..., check: _Optional[_Union[CheckRequest, _Mapping]] = ...) -> None: ...

class CheckStreamResponse(_message.Message):
    __slots__ = ("id", "result", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    result: CheckResponse
    error: CheckError
    def __init__(self, id: _Optional[int] = ..., result: _Optional[_Union[CheckResponse, _Mapping]] = ..., error: _Optional[_Union[CheckError, _Mapping]] = ...) -> None: ...

class CheckError(_message.Message):
    __slots__ = ("code", "reason", "message", "field", "retry_after")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    field: str
    retry_after: _duration_pb2.Duration
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("key", "policy")
    KEY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    key: str
    policy: Policy
    def __init__(self, key: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
