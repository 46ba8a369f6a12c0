"""Every recipe of the Python client, as a consumer uses it: the same steps, and the same
lines, as the Go, TypeScript and Java consumers (tests/test_polyglot.py drives them all).

    pip install ./clients/python
    PATTERNS_TARGET=localhost:50051 python examples/python-consumer/main.py

A line starting with "? " asks whoever runs it to restart, pause or resume the server, and
waits for a line on stdin.
"""

import os
import secrets
import sys
import time
from datetime import timedelta

from patterns_client import TLS, Client, Event, Gap, InvalidArgument, Policy

RUN = secrets.token_hex(4)  # in every name: runs never meet
BUDGET = timedelta(milliseconds=200)


def cue(what: str) -> None:
    print(f"? {what}", flush=True)
    sys.stdin.readline()


def connect() -> Client:
    """A client of the server the PATTERNS_* variables name."""
    env = os.environ
    tls = None
    if env.get("PATTERNS_CA_FILE"):
        tls = TLS(
            env["PATTERNS_CA_FILE"], env.get("PATTERNS_CERT_FILE"), env.get("PATTERNS_KEY_FILE")
        )
    target = env.get("PATTERNS_TARGET", "localhost:50051")
    return Client(target, api_key=env.get("PATTERNS_API_KEY"), tls=tls or False, timeout=10)


def payload(item: Event | Gap) -> str:
    return item.payload.decode() if isinstance(item, Event) else "gap"


class Failed(Exception):
    pass


def main() -> None:
    with connect() as client:
        policy = Policy.gcra(3, timedelta(minutes=1))
        decisions = [client.ratelimit.check(f"user:{RUN}", policy) for _ in range(4)]
        allowed = " ".join(str(d.allowed).lower() for d in decisions)
        waits = decisions[3].retry_after > timedelta(0)
        print(f"ratelimit: {allowed} retry_after>0 {str(waits).lower()}")

        try:
            client.ratelimit.check("", policy)
        except InvalidArgument as error:
            code = error.code.name if error.code else "?"
            print(f"error: {code} {error.field_violations[0].field} {error.reason}")

        client.counter.add(f"visitors:{RUN}", ["a", "b", "a"])
        print(f"counter: {client.counter.count(f'visitors:{RUN}')}")

        board = f"chess:{RUN}"
        client.leaderboard.submit(board, "ann", 10)
        client.leaderboard.submit(board, "bob", 5)
        first = client.leaderboard.top(board, 1).standings[0]
        print(f"leaderboard: {first.member} {first.rank} {client.leaderboard.size(board)}")

        session = client.sessions.create(f"user:{RUN}", ttl=timedelta(minutes=5))
        found = client.sessions.get(session.id) is not None
        client.sessions.destroy(session.id)
        after = client.sessions.get(session.id) is not None
        print(f"sessions: {str(found).lower()} {str(after).lower()}")

        computed = []

        def v1() -> bytes:
            computed.append(1)
            return b"v1"

        values = [
            client.cache.get_or_compute(f"page:{RUN}", v1, ttl=timedelta(minutes=1))
            for _ in range(2)
        ]
        print(f"cache: {values[1].decode()} computed {len(computed)}")

        def fails() -> bytes:
            raise Failed()

        try:
            client.cache.get_or_compute(f"report:{RUN}", fails, ttl=timedelta(minutes=1))
            propagated = False
        except Failed:
            propagated = True
        started = time.monotonic()
        client.cache.get_or_compute(
            f"report:{RUN}", lambda: b"r", ttl=timedelta(minutes=1), wait=timedelta(seconds=20)
        )
        at_once = time.monotonic() - started < 10
        print(f"cache failed compute: {str(propagated).lower()} {str(at_once).lower()}")

        with client.locks.hold(
            f"job:{RUN}", ttl=timedelta(seconds=5), wait=timedelta(seconds=5)
        ) as held:
            token = held.fencing_token
        free = not client.locks.inspect(f"job:{RUN}").held
        print(f"lock: true {str(token > 0).lower()} free {str(free).lower()}")

        with client.locks.hold(
            f"lost:{RUN}", ttl=timedelta(seconds=5), wait=timedelta(seconds=5)
        ) as held:
            client.locks.force_release(f"lost:{RUN}")
            lost = held.lost.wait(15)
        print(f"lock lost: {str(lost).lower()}")

        channel = f"orders:{RUN}"
        with client.events.subscribe(channels=[channel]) as subscription:
            subscription.wait_subscribed(timedelta(seconds=10))
            items = iter(subscription)
            client.events.publish(channel, b"1")
            print(f"events: {payload(next(items))}")
            cue("restart")
            gap = isinstance(next(items), Gap)
            client.events.publish(channel, b"2")
            print(f"events after restart: {'gap' if gap else 'no gap'} {payload(next(items))}")

        cue("pause")
        started = time.monotonic()
        decision = client.ratelimit.check(
            f"paused:{RUN}", policy, on_unavailable="allow", fallback_after=BUDGET
        )
        check_ms = round((time.monotonic() - started) * 1000)
        print(f"fail-open: {str(decision.allowed).lower()} {str(decision.fallback).lower()}")
        started = time.monotonic()
        value = client.cache.get_or_compute(f"fallback:{RUN}", lambda: b"v3", fallback_after=BUDGET)
        cache_ms = round((time.monotonic() - started) * 1000)
        print(f"cache fallback: {value.decode()}")
        print(f"fallbacks took {check_ms} {cache_ms}")
        cue("resume")
    print("done")


if __name__ == "__main__":
    main()
