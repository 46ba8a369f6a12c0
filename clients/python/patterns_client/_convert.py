"""Python values to and from the protobuf well-known types."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from google.protobuf import duration_pb2, timestamp_pb2


def duration(value: timedelta | None) -> duration_pb2.Duration | None:
    """A Duration, or None (the field left unset) for None."""
    if value is None:
        return None
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp, or None for None; a naive datetime is taken as UTC (as protobuf does)."""
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def to_datetime(message: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime."""
    return message.ToDatetime(tzinfo=timezone.utc)


def seconds(value: float | timedelta) -> float:
    """Seconds, from seconds or a timedelta."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def one_or_many(names: str | Sequence[str]) -> list[str]:
    """A name, or names, as a list (for the calls that take one or more keys)."""
    return [names] if isinstance(names, str) else list(names)
