"""Conversions between protobuf well-known types and Python values, for the servicers."""

from datetime import timedelta

from google.protobuf import duration_pb2
from google.protobuf.message import Message

# Durations go up to 10,000 years, beyond what timedelta holds. Every field that takes one
# has a far smaller limit, so clamping keeps the value out of range, for the limit check
# to refuse with its own message, instead of overflowing.
_CLAMP_SECONDS = 10**10


def to_timedelta(seconds: int, nanos: int) -> timedelta:
    """A Duration's fields as a timedelta (microsecond precision), clamped to ±317 years."""
    seconds = max(-_CLAMP_SECONDS, min(_CLAMP_SECONDS, seconds))
    return timedelta(seconds=seconds, microseconds=nanos // 1000)


def optional_timedelta(message: Message, field: str) -> timedelta | None:
    """The Duration `field` of `message` as a timedelta; None when unset."""
    if not message.HasField(field):
        return None
    duration: duration_pb2.Duration = getattr(message, field)
    return to_timedelta(duration.seconds, duration.nanos)
