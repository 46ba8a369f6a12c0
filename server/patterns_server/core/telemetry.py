"""What the patterns and storage count and trace, for whoever reads it: a `Recorder` and
a `Tracer` that do nothing until the host installs ones that export (`runtime/metrics.py`,
Prometheus; `runtime/tracing.py`, OpenTelemetry).

Patterns and storage call `record()` at the moments worth counting (a decision, a cache
hit, a lock handed over, a Redis round trip); they know nothing of Prometheus, and with
metrics off each call costs one method call on an object that does nothing. Arguments are
small, bounded vocabularies (an algorithm, an outcome), never a key, channel or user.
"""


class Recorder:
    """Receives what happens. This base class ignores it all: metrics off."""

    # Redis (storage)
    def redis_round_trip(self, commands: int, seconds: float) -> None:
        """One pipeline (or lone command) sent and answered: its size and its time."""

    def redis_queue(self, waiting: int) -> None:
        """Calls waiting for the next pipeline, as one is sent."""

    def redis_up(self, up: bool) -> None:
        """What the health probe found: Redis can serve, or cannot."""

    def redis_reconnect(self, connection: str) -> None:
        """A connection made anew: "pubsub" (the hub's), "pool" (a closed one replaced)."""

    # RateLimiter
    def decisions(self, algorithm: str, allowed: int, refused: int) -> None:
        """Checks decided by Redis under `algorithm`."""

    def failed_open(self, checks: int) -> None:
        """Checks admitted unchecked because Redis could not decide (failure mode open)."""

    # Events
    def deliveries(self, count: int) -> None:
        """Events handed to subscriber streams."""

    def slow_consumer(self) -> None:
        """A subscriber ended for falling behind."""

    # Locker
    def lock_granted(self, waited: bool) -> None:
        """A lease granted, at once or after waiting (a hand-off)."""

    def lock_wait(self) -> None:
        """An acquire that found the lock held and waits for it."""

    # Cache
    def cache_lookups(self, hits: int, misses: int) -> None:
        """Reads of entries: found, or not."""

    def cache_lease(self, granted: bool) -> None:
        """A miss of GetOrLease: a fill lease granted, or another caller's fill pending."""

    def cache_fill_refused(self) -> None:
        """A Set with a lease that was no longer valid (ended, or its tags invalidated)."""


class Span:
    """A span being recorded; this one records nothing."""

    def set(self, name: str, value: str | int) -> None:
        """An attribute of the span."""

    def __enter__(self) -> "Span":
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


NO_SPAN = Span()


class Tracer:
    """Makes the spans of a call's Redis work. This one makes none: tracing off."""

    enabled = False

    def redis_span(self, scripts: str, commands: int) -> Span:
        """A span around a call's Redis commands (`scripts`: the names of the scripts
        they run), a child of the call's own span."""
        return NO_SPAN


_recorder = Recorder()
_tracer = Tracer()


def record() -> Recorder:
    """The recorder in force (the do-nothing one unless the host installed another)."""
    return _recorder


def install(recorder: Recorder) -> None:
    global _recorder
    _recorder = recorder


def trace() -> Tracer:
    """The tracer in force (the one that makes no spans unless the host installed one)."""
    return _tracer


def install_tracer(tracer: Tracer) -> None:
    global _tracer
    _tracer = tracer
