"""Checks shared by the patterns for user-supplied names, lists and durations.

Each raises `InvalidArgument` naming the request field, so the caller learns exactly what to
fix. Limits are in bytes of UTF-8 because that is what Redis stores.
"""

from collections.abc import Sequence, Sized
from datetime import timedelta

from patterns_server.core.errors import InvalidArgument
from patterns_server.core.units import MILLISECOND, seconds_text, span

MAX_NAME_BYTES = 512


def check_name(field: str, name: str, max_bytes: int = MAX_NAME_BYTES) -> None:
    """A key or other name: 1 to `max_bytes` bytes of UTF-8."""
    size = len(name.encode())
    if not 1 <= size <= max_bytes:
        raise InvalidArgument(field, f"must be 1 to {max_bytes} bytes of UTF-8, got {size}")


def check_count(field: str, values: Sized, low: int, high: int) -> None:
    """A repeated field holds `low` to `high` entries."""
    if not low <= len(values) <= high:
        raise InvalidArgument(field, f"must hold {low} to {high:,} entries, got {len(values):,}")


def check_names(
    field: str, names: Sequence[str], low: int, high: int, max_bytes: int = MAX_NAME_BYTES
) -> None:
    """A repeated field of `low` to `high` names, each checked as `check_name` does
    (errors name the entry: `keys[3]`)."""
    check_count(field, names, low, high)
    for index, name in enumerate(names):
        check_name(f"{field}[{index}]", name, max_bytes)


def checked_ms(
    field: str,
    value: timedelta | None,
    low: timedelta,
    high: timedelta,
    *,
    required: bool = False,
) -> int:
    """A length of time in whole milliseconds (at least 1 when not zero), `low` to `high`;
    unset or zero is 0 ("none", "leave as it is") unless `required`."""
    if value is None or value == timedelta(0):
        if required:
            raise InvalidArgument(field, f"is required: {span(low, high)}")
        return 0
    if not low <= value <= high:
        allowed = span(low, high) if required else f"unset, or {span(low, high)}"
        raise InvalidArgument(field, f"must be {allowed}; got {seconds_text(value)}")
    return max(1, value // MILLISECOND)


def optional_ttl_ms(field: str, ttl: timedelta | None, maximum: timedelta) -> int:
    """An optional expiry in whole milliseconds, 1 ms to `maximum`; 0 when unset or zero
    ("leave as it is")."""
    return checked_ms(field, ttl, MILLISECOND, maximum)
