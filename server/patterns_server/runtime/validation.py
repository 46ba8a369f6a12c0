"""Checks shared by the patterns for user-supplied names, lists and durations.

Each raises `InvalidArgument` naming the request field, so the caller learns exactly what to
fix. Limits are in bytes of UTF-8 because that is what Redis stores.
"""

from collections.abc import Sized
from datetime import timedelta

from patterns_server.runtime.errors import InvalidArgument

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


def optional_ttl_ms(field: str, ttl: timedelta | None, maximum: timedelta) -> int:
    """An optional expiry in whole milliseconds; 0 when unset or zero ("leave as it is")."""
    if ttl is None or ttl == timedelta(0):
        return 0
    if ttl < timedelta(milliseconds=1) or ttl > maximum:
        raise InvalidArgument(field, f"must be unset, or 1 ms to {maximum.days:,} days; got {ttl}")
    return ttl // timedelta(milliseconds=1)
