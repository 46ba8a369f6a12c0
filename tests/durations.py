"""Protobuf Durations in the units the tests write: built from milliseconds or
microseconds, read back as milliseconds or microseconds (exact to the microsecond, the
server's resolution)."""

from google.protobuf.duration_pb2 import Duration


def duration_us(microseconds: int) -> Duration:
    """A Duration of `microseconds` (not negative)."""
    return Duration(seconds=microseconds // 1_000_000, nanos=microseconds % 1_000_000 * 1000)


def duration_ms(milliseconds: int) -> Duration:
    """A Duration of `milliseconds` (not negative)."""
    return duration_us(milliseconds * 1000)


def in_us(duration: Duration) -> int:
    """`duration` in whole microseconds."""
    return duration.ToMicroseconds()


def in_ms(duration: Duration) -> float:
    """`duration` in milliseconds, with the fraction (0.3 ms stays 0.3, not 0)."""
    return duration.ToMicroseconds() / 1000
