"""The Python client's rate-limit checks over one shared RateLimiter.CheckStream
(`stream_checks`), blocking and asyncio, against a real server and Redis: the same
decisions and errors as unary Checks; 64 concurrent checks admitting exactly the limit
over one stream; late answers dropped after a pause; the stream opened again after the
server restarts (one stream for a burst of checks); a refused stream answered by unary
Checks; nothing left running after close(). The fallbacks over the stream (the server
paused, its Redis paused, a refused connection) are in tests/test_client_fallbacks.py."""

import asyncio
import re
import signal
import threading
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from devtools.processes import PatternsServer, RedisServer, free_port
from patterns_client import Cancelled, Client, Decision, InvalidArgument, PatternsError, Policy, aio
from tests.conftest import windows_of
from tests.test_metrics import Scrape
from tests.waiting import eventually

T = TypeVar("T")
HOUR = timedelta(hours=1)
# Exact over any rolling hour, so no window rolls over while a test runs.
LIMIT = 10
POLICY = Policy.sliding_window_log(LIMIT, HOUR)
HISTORY = [(1, False), (1, True), (2, False), (1, False), (1, False)]  # (cost, peek)
BAD = [
    ("", POLICY),  # an empty key
    ("k", Policy.fixed_window(0, HOUR)),  # a limit of 0
    ("k", Policy.gcra(3, timedelta(0))),  # no period
]
CONCURRENT = 64
PATIENT = timedelta(seconds=10)  # a fallback budget no busy machine exhausts
CHECK_STREAM = {"service": "patterns.ratelimit.v1.RateLimiter", "method": "CheckStream"}
MODES = ["sync", "aio"]


@dataclass
class Metered:
    """A server with metrics on, and a scraper of them."""

    server: PatternsServer
    url: str

    def scrape(self) -> Scrape:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            return Scrape(response.read().decode())

    def streams_open(self) -> float:
        return self.scrape()("patterns_streams_open", **CHECK_STREAM)

    def streams(self) -> tuple[float, float]:
        """(CheckStreams open, CheckStreams ended, whatever their status)."""
        scrape = self.scrape()
        ended = sum(
            value
            for (name, labels), value in scrape.samples.items()
            if name == "patterns_rpcs_total" and ("method", "CheckStream") in labels
        )
        return scrape("patterns_streams_open", **CHECK_STREAM), ended


def metered(start: Callable[..., PatternsServer], *flags: str) -> Metered:
    server = start("--metrics-listen", "127.0.0.1:0", *flags)
    server.wait_for_log("metrics on http://")
    match = re.search(r"metrics on (http://[\d.]+:\d+/metrics)", server.log)
    assert match
    return Metered(server, match.group(1))


def pause(server: PatternsServer) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)


def resume(server: PatternsServer) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGCONT)


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


def answers(checks: Callable[[Client | aio.Client], Any], address: str, mode: str) -> Any:
    """What `checks(client)` returns with a stream client, blocking or asyncio."""
    if mode == "sync":
        with Client(address, timeout=10, stream_checks=True) as client:
            return checks(client)

    async def scenario() -> Any:
        async with aio.Client(address, timeout=10, stream_checks=True) as client:
            return await checks(client)

    return run(scenario)


def same(decision: Decision) -> tuple[bool, int, int, bool, bool]:
    """What must agree between two checks of the same history on different keys (the
    times differ by the moments they were made)."""
    return (
        decision.allowed,
        decision.limit,
        decision.remaining,
        decision.retry_after > timedelta(0),
        decision.fallback,
    )


def error_of(error: PatternsError) -> tuple[Any, ...]:
    return (type(error), error.code, error.reason, error.message, error.field_violations)


def every_algorithm(period: timedelta) -> list[Policy]:
    return [
        Policy.fixed_window(3, period),
        Policy.sliding_window_log(3, period),
        Policy.sliding_window_counter(3, period),
        Policy.token_bucket(3, period, burst=4),
        Policy.gcra(3, period, burst=4),
    ]


def unary_history(address: str, policies: list[Policy]) -> tuple[list[Any], list[Any]]:
    """The decisions of each policy's HISTORY and the errors of BAD, from unary Checks."""
    decisions, errors = [], []
    with Client(address, timeout=10, stream_checks=False) as client:
        for number, policy in enumerate(policies):
            for cost, peek in HISTORY:
                key = f"unary:{number}"
                decisions.append(same(client.ratelimit.check(key, policy, cost=cost, peek=peek)))
        for key, policy in BAD:
            with pytest.raises(InvalidArgument) as raised:
                client.ratelimit.check(key, policy, on_unavailable="allow", fallback_after=PATIENT)
            errors.append(error_of(raised.value))
    return decisions, errors


@pytest.mark.parametrize("mode", MODES)
def test_the_stream_answers_as_unary_checks_do(
    mode: str, own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    served = metered(server_on_own_redis)
    address = served.server.address
    # About an hour, its window half gone: no window boundary while the test runs.
    policies = every_algorithm(windows_of(own_redis.url).calm(HOUR).ToTimedelta())
    expected = unary_history(address, policies)
    streams_open = []

    def sync_checks(client: Client) -> tuple[list[Any], list[Any]]:
        decisions, errors = [], []
        for number, policy in enumerate(policies):
            for cost, peek in HISTORY:
                key = f"stream:{number}"
                decisions.append(same(client.ratelimit.check(key, policy, cost=cost, peek=peek)))
        for key, policy in BAD:
            with pytest.raises(InvalidArgument) as raised:
                client.ratelimit.check(key, policy, on_unavailable="allow", fallback_after=PATIENT)
            errors.append(error_of(raised.value))
        streams_open.append(served.streams_open())
        return decisions, errors

    async def aio_checks(client: aio.Client) -> tuple[list[Any], list[Any]]:
        decisions, errors = [], []
        for number, policy in enumerate(policies):
            for cost, peek in HISTORY:
                key = f"stream:{number}"
                decided = await client.ratelimit.check(key, policy, cost=cost, peek=peek)
                decisions.append(same(decided))
        for key, policy in BAD:
            with pytest.raises(InvalidArgument) as raised:
                await client.ratelimit.check(
                    key, policy, on_unavailable="deny", fallback_after=PATIENT
                )
            errors.append(error_of(raised.value))
        streams_open.append(await asyncio.to_thread(served.streams_open))
        return decisions, errors

    got = answers(sync_checks if mode == "sync" else aio_checks, address, mode)  # type: ignore[arg-type]
    assert got == expected
    assert [violation for *_, violation in got[1]] == [violation for *_, violation in expected[1]]
    fields = [violations[0].field for *_, violations in got[1]]
    assert fields == ["key", "policy.limit", "policy.period"]
    assert streams_open == [1]  # every check went over the one stream
    eventually(lambda: served.streams_open() == 0, what="the stream closed with the client")


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_checks_over_one_stream_admit_exactly_the_limit(
    mode: str, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    served = metered(server_on_own_redis)
    address = served.server.address
    if mode == "sync":
        start = threading.Barrier(CONCURRENT)
        with Client(address, timeout=10, stream_checks=True) as client:

            def check() -> Decision:
                start.wait(10)
                return client.ratelimit.check("one", POLICY)

            decisions: list[Decision] = []
            threads = [
                threading.Thread(target=lambda: decisions.append(check()))
                for _ in range(CONCURRENT)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            opened = served.streams_open()
    else:

        async def scenario() -> tuple[list[Decision], float]:
            async with aio.Client(address, timeout=10, stream_checks=True) as client:
                checks = [client.ratelimit.check("one", POLICY) for _ in range(CONCURRENT)]
                decided = await asyncio.gather(*checks)
                return decided, await asyncio.to_thread(served.streams_open)

        decisions, opened = run(scenario)
    assert len(decisions) == CONCURRENT
    assert not any(decision.fallback for decision in decisions)
    assert sum(decision.allowed for decision in decisions) == LIMIT
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(LIMIT))
    assert opened == 1


@pytest.mark.parametrize("mode", MODES)
def test_late_answers_are_dropped_and_the_stream_goes_on(
    mode: str, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """Checks that fell back while the server was paused are answered once it resumes:
    those answers are dropped, and each later check gets its own, on the same stream."""
    served = metered(server_on_own_redis)
    server = served.server
    budget = timedelta(milliseconds=300)
    fresh = Policy.fixed_window(5, HOUR)

    streams = []

    def sync_checks(client: Client) -> list[Decision]:
        client.ratelimit.check("warm", POLICY)  # the stream is open
        pause(server)
        try:
            stale = [
                client.ratelimit.check(
                    f"stale:{n}", POLICY, on_unavailable="deny", fallback_after=budget
                )
                for n in range(5)
            ]
        finally:
            resume(server)
        later = [client.ratelimit.check(f"fresh:{n}", fresh) for n in range(20)]
        streams.append(served.streams())
        return stale + later

    async def aio_checks(client: aio.Client) -> list[Decision]:
        await client.ratelimit.check("warm", POLICY)
        pause(server)
        try:
            stale = list(
                await asyncio.gather(
                    *(
                        client.ratelimit.check(
                            f"stale:{n}", POLICY, on_unavailable="deny", fallback_after=budget
                        )
                        for n in range(5)
                    )
                )
            )
        finally:
            resume(server)
        later = [await client.ratelimit.check(f"fresh:{n}", fresh) for n in range(20)]
        streams.append(await asyncio.to_thread(served.streams))
        return stale + later

    decisions = answers(sync_checks if mode == "sync" else aio_checks, server.address, mode)  # type: ignore[arg-type]
    stale, later = decisions[:5], decisions[5:]
    assert all(d.fallback and not d.allowed for d in stale)
    # Each fresh key checked once: its own answer has 4 left; a stale answer would not.
    assert [(d.allowed, d.remaining, d.fallback) for d in later] == [(True, 4, False)] * 20
    assert streams == [(1, 0)]  # the one stream, which the pause did not end


def burst(client: Client, key: str) -> list[Decision]:
    """CONCURRENT checks of `key` at once, from as many threads."""
    start = threading.Barrier(CONCURRENT)
    decisions: list[Decision] = []

    def check() -> None:
        start.wait(10)
        decisions.append(client.ratelimit.check(key, POLICY))

    threads = [threading.Thread(target=check) for _ in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return decisions


def exactly_the_limit(decisions: list[Decision]) -> bool:
    return (
        len(decisions) == CONCURRENT
        and not any(decision.fallback for decision in decisions)
        and sum(decision.allowed for decision in decisions) == LIMIT
    )


@pytest.mark.parametrize("mode", MODES)
def test_the_stream_is_opened_again_after_the_server_restarts(
    mode: str, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """The server stops (its stream ends SHUTTING_DOWN): checks fall back while nobody
    listens; once it is back on the same address, the next checks open one new stream,
    shared by a burst of 64, which admits exactly the limit."""
    listen = ("--listen", f"127.0.0.1:{free_port()}")
    first = metered(server_on_own_redis, *listen)
    address = first.server.address
    allow = {"on_unavailable": "allow"}
    back: list[Metered] = []

    def restart() -> None:
        first.server.stop()
        back.append(metered(server_on_own_redis, *listen))

    if mode == "sync":
        with Client(address, timeout=10, stream_checks=True) as client:
            assert not client.ratelimit.check("before", POLICY).fallback
            first.server.stop()
            assert client.ratelimit.check("down", POLICY, **allow).fallback  # type: ignore[arg-type]
            back.append(metered(server_on_own_redis, *listen))
            eventually(
                lambda: not client.ratelimit.check("probe", POLICY, **allow).fallback,  # type: ignore[arg-type]
                within=30,
                what="a check answered by the restarted server",
            )
            decisions = burst(client, "after")
            streams = back[0].streams()
    else:

        async def scenario() -> tuple[list[Decision], tuple[float, float]]:
            async with aio.Client(address, timeout=10, stream_checks=True) as client:
                check = client.ratelimit.check
                assert not (await check("before", POLICY)).fallback
                await asyncio.to_thread(first.server.stop)
                assert (await check("down", POLICY, on_unavailable="allow")).fallback
                back.append(await asyncio.to_thread(metered, server_on_own_redis, *listen))
                for _ in range(300):
                    if not (await check("probe", POLICY, on_unavailable="allow")).fallback:
                        break
                    await asyncio.sleep(0.1)
                decided = await asyncio.gather(*(check("after", POLICY) for _ in range(64)))
                return list(decided), await asyncio.to_thread(back[0].streams)

        decisions, streams = run(scenario)
    assert exactly_the_limit(decisions)
    assert streams == (1, 0)  # one stream on the restarted server, for all those checks


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_stream_is_answered_by_unary_checks(
    mode: str, server_on_own_redis: Callable[..., PatternsServer]
) -> None:
    """With --max-streams 1 taken by another client, the stream is refused
    RESOURCE_EXHAUSTED before it decides anything: the checks are sent as unary Checks
    instead, each decided exactly once. Several clients, one after the other: grpc.aio
    reports some refusals as its own INTERNAL (when the refusal meets a write),
    which must end the same way."""
    served = metered(server_on_own_redis, "--max-streams", "1")
    address = served.server.address
    clients = 1 if mode == "sync" else 12
    with Client(address, timeout=10, stream_checks=True) as holder:
        holder.ratelimit.check("holder", POLICY)  # the one stream the server allows
        assert served.streams_open() == 1
        if mode == "sync":
            with Client(address, timeout=10, stream_checks=True) as client:
                rounds = [burst(client, "refused:0")]
        else:

            async def scenario(key: str) -> list[Decision]:
                async with aio.Client(address, timeout=10, stream_checks=True) as client:
                    checks = (client.ratelimit.check(key, POLICY) for _ in range(CONCURRENT))
                    return list(await asyncio.gather(*checks))

            rounds = [asyncio.run(scenario(f"refused:{n}")) for n in range(clients)]
        scrape = served.scrape()
    assert all(exactly_the_limit(decisions) for decisions in rounds)
    check = {"service": CHECK_STREAM["service"], "method": "Check", "tenant": "default"}
    assert scrape("patterns_rpcs_total", **check, code="OK") == CONCURRENT * clients
    refused = scrape(
        "patterns_rpcs_total", **CHECK_STREAM, code="RESOURCE_EXHAUSTED", tenant="default"
    )
    assert clients <= refused <= CONCURRENT * clients


def check_stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "patterns-client-check-stream"]


def test_close_ends_the_stream_its_checks_and_its_threads(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    served = metered(server_on_own_redis)
    server = served.server
    before = set(threading.enumerate())
    client = Client(server.address, timeout=30, stream_checks=True)
    client.ratelimit.check("k", POLICY)
    assert served.streams_open() == 1 and len(check_stream_threads()) == 1
    outcome: list[BaseException] = []

    def waiting_check() -> None:
        try:
            client.ratelimit.check("paused", POLICY)
        except BaseException as error:  # what close() makes of it
            outcome.append(error)

    pause(server)
    try:
        in_progress = threading.Thread(target=waiting_check)
        in_progress.start()
        # The one look inside the client: the check has been sent, and waits.
        stream = client._check_stream
        assert stream is not None
        eventually(lambda: stream.in_progress() == 1, what="the check sent")
        client.close()
        in_progress.join(5)
    finally:
        resume(server)
    assert not in_progress.is_alive()
    assert [type(error) for error in outcome] == [Cancelled]
    assert check_stream_threads() == []
    eventually(lambda: set(threading.enumerate()) <= before, what="gRPC's threads gone too")
    eventually(lambda: served.streams_open() == 0, what="the server saw the stream end")


def test_close_ends_the_stream_its_checks_and_its_tasks_aio(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    served = metered(server_on_own_redis)
    server = served.server

    async def scenario() -> tuple[float, Any, set[asyncio.Task[Any]]]:
        client = aio.Client(server.address, timeout=30, stream_checks=True)
        await client.ratelimit.check("k", POLICY)
        opened = await asyncio.to_thread(served.streams_open)
        pause(server)
        try:
            waiting = asyncio.ensure_future(client.ratelimit.check("paused", POLICY))
            await asyncio.sleep(0.2)  # the check is sent, and waits
            await client.close()
            outcome = await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 5)
        finally:
            resume(server)
        return opened, outcome[0], asyncio.all_tasks() - {asyncio.current_task()}

    opened, outcome, left = run(scenario)
    assert opened == 1
    assert isinstance(outcome, Cancelled)
    assert left == set()
    eventually(lambda: served.streams_open() == 0, what="the server saw the stream end")


def test_checks_beyond_the_streams_1000_in_progress_go_unary(
    server_on_own_redis: Callable[..., PatternsServer],
) -> None:
    """1,100 checks sent at once from one loop (each task sends before any answer is
    read): 1,000 go over the stream, the 100 beyond its limit as unary Checks, rather than
    being refused OVERLOADED by the server; exactly the limit is admitted."""
    served = metered(server_on_own_redis)

    async def scenario() -> list[Decision]:
        async with aio.Client(served.server.address, timeout=30) as client:
            checks = (client.ratelimit.check("many", POLICY) for _ in range(1_100))
            return list(await asyncio.gather(*checks))

    decisions = run(scenario)
    assert sum(d.allowed for d in decisions) == LIMIT and not any(d.fallback for d in decisions)
    check = {"service": CHECK_STREAM["service"], "method": "Check", "tenant": "default"}
    assert served.scrape()("patterns_rpcs_total", **check, code="OK") == 100
