"""Conversions between protobuf well-known types and Python values, for the servicers."""

from datetime import timedelta

from google.protobuf import duration_pb2
from google.protobuf.message import Message


def optional_timedelta(message: Message, field: str) -> timedelta | None:
    """The Duration `field` of `message` as a timedelta (microseconds); None when unset."""
    if not message.HasField(field):
        return None
    duration: duration_pb2.Duration = getattr(message, field)
    return timedelta(seconds=duration.seconds, microseconds=duration.nanos // 1000)
