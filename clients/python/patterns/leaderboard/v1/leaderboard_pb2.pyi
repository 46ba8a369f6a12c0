from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Order(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_UNSPECIFIED: _ClassVar[Order]
    ORDER_HIGH_FIRST: _ClassVar[Order]
    ORDER_LOW_FIRST: _ClassVar[Order]

class Period(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERIOD_UNSPECIFIED: _ClassVar[Period]
    PERIOD_NONE: _ClassVar[Period]
    PERIOD_DAILY: _ClassVar[Period]
    PERIOD_WEEKLY: _ClassVar[Period]
    PERIOD_MONTHLY: _ClassVar[Period]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_SET: _ClassVar[Mode]
    MODE_INCREMENT: _ClassVar[Mode]
    MODE_BEST: _ClassVar[Mode]
ORDER_UNSPECIFIED: Order
ORDER_HIGH_FIRST: Order
ORDER_LOW_FIRST: Order
PERIOD_UNSPECIFIED: Period
PERIOD_NONE: Period
PERIOD_DAILY: Period
PERIOD_WEEKLY: Period
PERIOD_MONTHLY: Period
MODE_UNSPECIFIED: Mode
MODE_SET: Mode
MODE_INCREMENT: Mode
MODE_BEST: Mode

class SubmitRequest(_message.Message):
    __slots__ = ("board", "member", "score", "mode", "order", "period")
    BOARD_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    board: str
    member: str
    score: float
    mode: Mode
    order: Order
    period: Period
    def __init__(self, board: _Optional[str] = ..., member: _Optional[str] = ..., score: _Optional[float] = ..., mode: _Optional[_Union[Mode, str]] = ..., order: _Optional[_Union[Order, str]] = ..., period: _Optional[_Union[Period, str]] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("score", "rank", "updated")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    score: float
    rank: int
    updated: bool
    def __init__(self, score: _Optional[float] = ..., rank: _Optional[int] = ..., updated: _Optional[bool] = ...) -> None: ...

class GetRankRequest(_message.Message):
    __slots__ = ("board", "member", "order", "period", "period_offset")
    BOARD_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    board: str
    member: str
    order: Order
    period: Period
    period_offset: int
    def __init__(self, board: _Optional[str] = ..., member: _Optional[str] = ..., order: _Optional[_Union[Order, str]] = ..., period: _Optional[_Union[Period, str]] = ..., period_offset: _Optional[int] = ...) -> None: ...

class GetRankResponse(_message.Message):
    __slots__ = ("found", "rank", "score")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    rank: int
    score: float
    def __init__(self, found: _Optional[bool] = ..., rank: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("member", "score", "rank")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    member: str
    score: float
    rank: int
    def __init__(self, member: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class TopRequest(_message.Message):
    __slots__ = ("board", "limit", "offset", "order", "period", "period_offset")
    BOARD_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    board: str
    limit: int
    offset: int
    order: Order
    period: Period
    period_offset: int
    def __init__(self, board: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., order: _Optional[_Union[Order, str]] = ..., period: _Optional[_Union[Period, str]] = ..., period_offset: _Optional[int] = ...) -> None: ...

class TopResponse(_message.Message):
    __slots__ = ("entries", "total")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    total: int
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class AroundRequest(_message.Message):
    __slots__ = ("board", "member", "radius", "order", "period", "period_offset")
    BOARD_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    board: str
    member: str
    radius: int
    order: Order
    period: Period
    period_offset: int
    def __init__(self, board: _Optional[str] = ..., member: _Optional[str] = ..., radius: _Optional[int] = ..., order: _Optional[_Union[Order, str]] = ..., period: _Optional[_Union[Period, str]] = ..., period_offset: _Optional[int] = ...) -> None: ...

class AroundResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("board", "members", "order", "period", "period_offset")
    BOARD_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    board: str
    members: _containers.RepeatedScalarFieldContainer[str]
    order: Order
    period: Period
    period_offset: int
    def __init__(self, board: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., order: _Optional[_Union[Order, str]] = ..., period: _Optional[_Union[Period, str]] = ..., period_offset: _Optional[int] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class SizeRequest(_message.Message):
    __slots__ = ("board", "order", "period", "period_offset")
    BOARD_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    board: str
    order: Order
    period: Period
    period_offset: int
    def __init__(self, board: _Optional[str] = ..., order: _Optional[_Union[Order, str]] = ..., period: _Optional[_Union[Period, str]] = ..., period_offset: _Optional[int] = ...) -> None: ...

class SizeResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...
