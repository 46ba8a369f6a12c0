"""Where in a rate-limit window a test's calls fall, chosen by the test, not by the hour.

Windows start at multiples of their period on the Redis clock, so with a fixed period (one
day, say) the hour decides whether calls land at a window's start, middle or end, and a
test's verdict could depend on the time of day. These helpers pick, from the Redis clock
at the moment, a period close to the one wanted that puts "now" at a chosen point of its
window: a test can then say "mid-window, no boundary during the test" or "one second after
a window began" and mean it at any hour.
"""

from collections.abc import Callable
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration

from tests.durations import duration_us

MICROSECOND = timedelta(microseconds=1)


def period_placing(now_us: int, elapsed_us: int, about_us: int) -> int:
    """A period (µs) of about `about_us` whose window holding `now_us` began between
    `elapsed_us` and `elapsed_us` + 1% of the period ago."""
    assert 0 <= elapsed_us < about_us
    tolerance = about_us // 100
    # Long periods: with q windows since the epoch, (now - elapsed) // q puts now within
    # q µs of the wanted point (q is 20,000 for a day: 20 ms).
    windows = now_us // about_us
    period = (now_us - elapsed_us) // windows
    if 0 <= now_us % period - elapsed_us <= tolerance:
        return period
    # Short periods: the phase of now jumps around as the period grows by 1 µs; a few
    # hundred candidates find one in the wanted 1%.
    for period in range(about_us, 2 * about_us):
        if 0 <= now_us % period - elapsed_us <= tolerance:
            return period
    raise AssertionError(f"no period near {about_us} µs puts now {elapsed_us} µs in")


class Windows:
    """Periods placed on the clock of one Redis (`clock` returns its TIME in µs)."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock

    def now_us(self) -> int:
        return self._clock()

    def period(self, about: timedelta, elapsed: float) -> Duration:
        """A period of about `about` whose current window is `elapsed` (a fraction, 0 to
        1) through, up to 1% later, at the moment of the call."""
        about_us = about // MICROSECOND
        period_us = period_placing(self._clock(), int(about_us * elapsed), about_us)
        return duration_us(period_us)

    def calm(self, about: timedelta) -> Duration:
        """A period whose current window has about half its length left: no window
        boundary falls inside a test that takes less than that."""
        return self.period(about, 0.4)
