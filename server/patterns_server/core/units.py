"""Lengths of time and instants, between Python's `timedelta`/`datetime` (what patterns
take and give) and the whole milliseconds or microseconds Redis and the scripts count in
(what each pattern uses inside, one unit per pattern). Instants are Redis clock readings:
aware UTC datetimes."""

from datetime import UTC, datetime, timedelta

MICROSECOND = timedelta(microseconds=1)
MILLISECOND = timedelta(milliseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_ms(milliseconds: int) -> timedelta:
    return timedelta(milliseconds=milliseconds)


def from_us(microseconds: int) -> timedelta:
    return timedelta(microseconds=microseconds)


def instant_ms(milliseconds: int) -> datetime:
    """The instant `milliseconds` after the epoch (exact: no float on the way)."""
    return EPOCH + timedelta(milliseconds=milliseconds)


def instant_us(microseconds: int) -> datetime:
    """The instant `microseconds` after the epoch (exact: no float on the way)."""
    return EPOCH + timedelta(microseconds=microseconds)


def epoch_ms(instant: datetime) -> int:
    """Whole milliseconds since the epoch of an aware `instant`, rounded down."""
    return (instant - EPOCH) // MILLISECOND


def seconds_text(value: timedelta) -> str:
    """A length of time as the contract writes a Duration in JSON: "30s", "0.0005s"."""
    return f"{value.total_seconds():.6f}".rstrip("0").rstrip(".") + "s"


def span(low: timedelta, high: timedelta) -> str:
    """A range of lengths of time for people: "1 ms to 365 days"."""
    return f"{length(low)} to {length(high)}"


_UNITS = (
    (timedelta(days=1), "day"),
    (timedelta(hours=1), "hour"),
    (timedelta(minutes=1), "minute"),
    (timedelta(seconds=1), "second"),
)


def length(value: timedelta) -> str:
    """A length of time in the largest unit it is a whole number of ("3,650 days")."""
    if not value:
        return "0 seconds"
    for unit, name in _UNITS:
        if value % unit == timedelta(0):
            count = value // unit
            return f"{count:,} {name}{'s' if count != 1 else ''}"
    return f"{value / MILLISECOND:g} ms"
