"""Conversions between what a call carries and Python values, for the servicers.

Durations and Timestamps are checked here, once for every field, against what
google.protobuf defines them to be (nanos within range, the signs of a Duration's parts
alike); each field's own bounds are then checked by the pattern that takes it.
"""

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from patterns_server.core.errors import InvalidArgument

# google.protobuf.Duration spans ±10,000 years, beyond what timedelta holds. Every field
# that takes one has a far smaller limit, so clamping keeps the value out of range, for
# the field's check to refuse with its own message, instead of overflowing.
MAX_DURATION_SECONDS = 315_576_000_000
_CLAMP_SECONDS = 10**10
MAX_NANOS = 999_999_999
# google.protobuf.Timestamp spans 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
# A deadline's answer needs time to travel back: a fifth of the time left, 20 ms at least.
DEADLINE_MARGIN = 0.2
MIN_DEADLINE_MARGIN = 0.02


def to_timedelta(seconds: int, nanos: int, field: str) -> timedelta:
    """A Duration's fields as a timedelta, in whole microseconds rounded towards zero, but
    never zero for a non-zero Duration (999 ns reads as 1 µs, for the field's bounds to
    refuse); INVALID_ARGUMENT on `field` when they do not form a valid Duration."""
    if not -MAX_DURATION_SECONDS <= seconds <= MAX_DURATION_SECONDS:
        raise InvalidArgument(
            field, f"is not a valid Duration: seconds must be within ±{MAX_DURATION_SECONDS:,}"
        )
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        raise InvalidArgument(field, "is not a valid Duration: nanos must be within ±999,999,999")
    if (seconds > 0 > nanos) or (seconds < 0 < nanos):
        raise InvalidArgument(
            field, "is not a valid Duration: seconds and nanos must have the same sign"
        )
    seconds = max(-_CLAMP_SECONDS, min(_CLAMP_SECONDS, seconds))
    microseconds = int(nanos / 1000)
    if seconds == 0 and microseconds == 0 and nanos != 0:
        microseconds = 1 if nanos > 0 else -1
    return timedelta(seconds=seconds, microseconds=microseconds)


def optional_timedelta(message: Message, field: str, path: str = "") -> timedelta | None:
    """The Duration `field` of `message` as a timedelta; None when unset. Errors name
    `path` (the field's path in the request), or else `field`."""
    if not message.HasField(field):
        return None
    duration: duration_pb2.Duration = getattr(message, field)
    return to_timedelta(duration.seconds, duration.nanos, path or field)


def optional_datetime(message: Message, field: str, path: str = "") -> datetime | None:
    """The Timestamp `field` of `message` as an aware UTC datetime (microsecond precision,
    rounded down); None when unset; INVALID_ARGUMENT when it is not a valid Timestamp."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    if not MIN_TIMESTAMP_SECONDS <= stamp.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(
            path or field, "is not a valid Timestamp: it must fall in the years 1 to 9999"
        )
    if not 0 <= stamp.nanos <= MAX_NANOS:
        raise InvalidArgument(
            path or field, "is not a valid Timestamp: nanos must be 0 to 999,999,999"
        )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def time_left(
    context: grpc.aio.ServicerContext, min_margin: float = MIN_DEADLINE_MARGIN
) -> float | None:
    """Seconds the caller still waits for an answer, less the margin the answer needs to
    reach it (a fifth of the time left, at least `min_margin` seconds); None when the call
    has no deadline."""
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return None
    return max(0.0, remaining - max(min_margin, remaining * DEADLINE_MARGIN))


# The other way: what a pattern answers (datetime and timedelta) as messages.


def timestamp(instant: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def duration(length: timedelta) -> duration_pb2.Duration:
    """A Duration of `length`, never negative (a key without expiry has no time left)."""
    message = duration_pb2.Duration()
    message.FromTimedelta(max(timedelta(0), length))
    return message


def set_duration_us(field: duration_pb2.Duration, microseconds: int) -> None:
    """Sets a message's Duration `field` to `microseconds` in place: on the hot path,
    twice as fast as building a Duration message and copying it in."""
    field.seconds, remainder = divmod(microseconds, 1_000_000)
    field.nanos = remainder * 1000
