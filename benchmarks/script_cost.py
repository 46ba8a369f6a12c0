"""What one call costs Redis at the limits: the longest single command (a script is one
command) that a call makes Redis run, read from SLOWLOG, for every call whose work grows with
its input or with the data it meets. While a command runs, Redis serves no one else.

`make bench ARGS="--script-cost"` starts a private redis-server, fills it in the server's
layout (through the patterns themselves), and for each case below resets SLOWLOG (logging
every command), makes the call --repeat times and reports, per call: the longest command
(its median and worst over the repeats, µs), how many commands the call sent, and their sum.

  session-list          Sessions.List(limit 1,000), first page, of a user with 10,000
  session-list-100      Sessions.List(limit 100), the default, of that user
  session-list-all      every page of that user's List (1,000 a page)
  session-destroy-all   Sessions.DestroyAll of a user with 10,000
  session-cap           a Create with max_per_user 1 for a user with 10,000
  session-prune         a touch after 10,000 of the user's sessions ended at once
  session-build         List(1,000) of a user with 10,000 sessions indexed by 0.1.0 (only
                        by their end): it builds the index by creation first
  cache-invalidate-tag  Cache.InvalidateTags of a tag on 10,000 entries
  cache-get-many        Cache.GetMany of 1,000 keys (1 KiB values)
  lb-remove             Leaderboard.Remove of 1,000 members of a board of 1,000,000
  lb-around-top         Leaderboard.Around(radius 500) of the best member of that board
  lb-around-bottom      Leaderboard.Around(radius 500) of the worst member
  lb-top-deep           Leaderboard.Top(1,000) at offset 999,000
  ratelimit-check-many  RateLimiter.CheckMany of 1,000 checks, each a refusal by a full
                        sliding log (100,000 admissions), the costliest check there is
  ratelimit-log-check   one Check refused by that full sliding log
"""

import argparse
import asyncio
import inspect
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis

from devtools.processes import RedisServer
from patterns_server.cache.cache import Cache
from patterns_server.leaderboard.leaderboard import Board, Leaderboard
from patterns_server.ratelimit.ratelimit import Algorithm, Check, Policy, RateLimiter
from patterns_server.session.session import Sessions, _tag
from patterns_server.storage import RedisBackend
from patterns_server.storage.embedded import find_redis_server

SESSIONS = 10_000
TAGGED = 10_000
BOARD_SIZE = 1_000_000
LOG_LIMIT = 100_000  # the largest SLIDING_WINDOW_LOG limit
HOUR = timedelta(hours=1)
ATTRIBUTES = {"agent": "Firefox 133", "ip": "203.0.113.7"}

CASES = (
    "session-list",
    "session-list-100",
    "session-list-all",
    "session-destroy-all",
    "session-cap",
    "session-prune",
    "session-build",
    "cache-invalidate-tag",
    "cache-get-many",
    "lb-remove",
    "lb-around-top",
    "lb-around-bottom",
    "lb-top-deep",
    "ratelimit-check-many",
    "ratelimit-log-check",
)


Call = Callable[[], Awaitable[object]]


@dataclass
class Cost:
    case: str
    longest_us: list[int]  # per repeat: the longest command of the call
    commands: list[int]  # per repeat: how many commands the call sent
    total_us: list[int]  # per repeat: their sum

    def row(self) -> str:
        return (
            f"| {self.case} | {statistics.median(self.longest_us) / 1000:.2f} "
            f"| {max(self.longest_us) / 1000:.2f} | {statistics.median(self.commands):,.0f} "
            f"| {statistics.median(self.total_us) / 1000:.2f} |"
        )


class Measured:
    """SLOWLOG of the Redis under test, around one call."""

    def __init__(self, client: redis.Redis, threshold_us: int) -> None:
        self._client = client
        client.config_set("slowlog-log-slower-than", threshold_us)
        client.config_set("slowlog-max-len", 100_000)

    async def call(self, call: Callable[[], Awaitable[object]]) -> tuple[int, int, int]:
        self._client.slowlog_reset()
        await call()
        # The call's own commands: not those its scripts ran (Redis 7 logs them too, from
        # client "?:0"), nor the measuring ones.
        entries = [
            entry
            for entry in self._client.slowlog_get(100_000)
            if entry["command"].split()[0].upper() not in (b"SLOWLOG", b"CONFIG")
            and entry.get("client_address", b"") not in (b"?:0", b"")
        ]
        durations = [int(entry["duration"]) for entry in entries]
        return max(durations, default=0), len(durations), sum(durations)


async def measure(
    measured: Measured,
    case: str,
    repeat: int,
    prepare: Callable[[], Awaitable[object]] | None,
    call: Callable[[], Awaitable[object]],
) -> Cost:
    cost = Cost(case, [], [], [])
    for _ in range(repeat):
        if prepare is not None:
            await prepare()
        longest, count, total = await measured.call(call)
        cost.longest_us.append(longest)
        cost.commands.append(count)
        cost.total_us.append(total)
    print(f"{case}: longest {max(cost.longest_us) / 1000:.2f} ms", file=sys.stderr)
    return cost


async def fill_sessions(sessions: Sessions, user: str, count: int, ttl: timedelta) -> None:
    for start in range(0, count, 500):
        await asyncio.gather(
            *(sessions.create(user, ATTRIBUTES, ttl) for _ in range(min(500, count - start)))
        )


async def list_page(
    sessions: Sessions, user: str, limit: int, token: str = ""
) -> tuple[int, int, str]:
    """Sessions listed, the user's total and the next page's token; also with the server
    of 0.1.0 (no pages), to measure it the same way."""
    lister: Any = sessions.list
    if "page_token" not in inspect.signature(lister).parameters:
        listed, total = await lister(user, limit)
        return len(listed), int(total), ""
    page = await lister(user, limit, token)
    return len(page.sessions), int(page.total), str(page.next_page_token)


async def run_cases(
    url: str, client: redis.Redis, cases: Sequence[str], repeat: int, threshold_us: int
) -> list[Cost]:
    backend = RedisBackend.from_url(url, prefix="patterns", timeout=30, batch_wait=0)
    measured = Measured(client, threshold_us)
    results: list[Cost] = []
    try:
        sessions = Sessions(backend)
        user = "user-with-10000"

        async def full_user() -> None:
            _, total, _ = await list_page(sessions, user, 1)
            await fill_sessions(sessions, user, SESSIONS - total, HOUR)

        async def list_all() -> None:
            token = ""
            while True:
                _, _, token = await list_page(sessions, user, 1_000, token)
                if not token:
                    return

        session_cases: dict[str, tuple[Callable[[], Awaitable[object]], ...]] = {
            "session-list": (full_user, lambda: sessions.list(user, 1_000)),
            "session-list-100": (full_user, lambda: sessions.list(user, 100)),
            "session-list-all": (full_user, list_all),
            "session-destroy-all": (full_user, lambda: sessions.destroy_all(user)),
            "session-cap": (full_user, lambda: sessions.create(user, {}, HOUR, max_per_user=1)),
        }
        for case, (prepare, call) in session_cases.items():
            if case in cases:
                results.append(await measure(measured, case, repeat, prepare, call))
        if "session-prune" in cases:
            expired: list[str] = []

            async def prepare_prune() -> None:
                await sessions.destroy_all(user)
                await fill_sessions(sessions, user, SESSIONS - 1, timedelta(seconds=3))
                expired[:] = [(await sessions.create(user, {}, HOUR)).id]
                await asyncio.sleep(3.5)

            results.append(
                await measure(
                    measured,
                    "session-prune",
                    repeat,
                    prepare_prune,
                    lambda: sessions.get(expired[0], touch=True),
                )
            )
        if "session-build" in cases:

            async def as_left_by_0_1_0() -> None:
                await full_user()
                client.delete(f"patterns:default:session:{{{_tag(user)}}}:c")

            results.append(
                await measure(
                    measured,
                    "session-build",
                    repeat,
                    as_left_by_0_1_0,
                    lambda: list_page(sessions, user, 1_000),
                )
            )
        await sessions.destroy_all(user)

        cache = Cache(backend, HOUR, 1 << 20)
        if "cache-invalidate-tag" in cases:

            async def tag_entries() -> None:
                for start in range(0, TAGGED, 500):
                    await asyncio.gather(
                        *(
                            cache.set(f"item:{n}", b"x" * 100, HOUR, tags=["big"])
                            for n in range(start, start + 500)
                        )
                    )

            results.append(
                await measure(
                    measured,
                    "cache-invalidate-tag",
                    repeat,
                    tag_entries,
                    lambda: cache.invalidate_tags(["big"]),
                )
            )
        if "cache-get-many" in cases:
            keys = [f"get:{n}" for n in range(1_000)]
            for start in range(0, len(keys), 500):
                await asyncio.gather(*(cache.set(k, bytes(1024), HOUR) for k in keys[start:][:500]))
            results.append(
                await measure(
                    measured, "cache-get-many", repeat, None, lambda: cache.get_many(keys)
                )
            )

        board_cases = [c for c in cases if c.startswith("lb-")]
        if board_cases:
            leaderboard = Leaderboard(backend)
            board = Board("cost")
            key = "patterns:default:leaderboard:{cost}:h:all"

            def fill_board() -> None:
                for start in range(0, BOARD_SIZE, 20_000):
                    batch = range(start, start + 20_000)
                    client.zadd(key, {f"player:{n}": -((n * 7_919) % BOARD_SIZE) for n in batch})

            fill_board()
            ends: Any = [client.zrange(key, 0, 0), client.zrange(key, -1, -1)]
            best, worst = (end[0].decode() for end in ends)
            removed = [f"player:{n}" for n in range(0, BOARD_SIZE, BOARD_SIZE // 1_000)]

            async def put_back() -> None:
                fill_board()

            board_calls: dict[str, tuple[Call | None, Call]] = {
                "lb-remove": (put_back, lambda: leaderboard.remove(board, removed)),
                "lb-around-top": (None, lambda: leaderboard.around(board, best, 500)),
                "lb-around-bottom": (None, lambda: leaderboard.around(board, worst, 500)),
                "lb-top-deep": (None, lambda: leaderboard.top(board, 1_000, BOARD_SIZE - 1_000)),
            }
            for case, (prepare_board, call) in board_calls.items():
                if case in cases:
                    results.append(await measure(measured, case, repeat, prepare_board, call))
                    fill_board()  # every member on the board again
            client.delete(key)

        if any(c.startswith("ratelimit-") for c in cases):
            limiter = RateLimiter(backend)
            policy = Policy(Algorithm.SLIDING_WINDOW_LOG, LOG_LIMIT, timedelta(hours=1))
            check = Check("full-log", policy)
            for _ in range(LOG_LIMIT // 1_000):  # 100,000 admissions of 1 unit
                await limiter.check_many([check] * 1_000, False)
            assert not (await limiter.check(check)).allowed  # full: every check now refuses
            if "ratelimit-check-many" in cases:
                results.append(
                    await measure(
                        measured,
                        "ratelimit-check-many",
                        repeat,
                        None,
                        lambda: limiter.check_many([check] * 1_000, False),
                    )
                )
            if "ratelimit-log-check" in cases:
                results.append(
                    await measure(
                        measured, "ratelimit-log-check", repeat, None, lambda: limiter.check(check)
                    )
                )
    finally:
        await backend.close()
    return results


def _realtime(pid: int) -> bool:
    """Run Redis at a real-time priority when allowed (root): on a busy machine, other
    processes would otherwise stretch SLOWLOG's figures (a wall-clock time) many times."""
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        return False
    return True


def report(results: list[Cost], version: str, repeat: int, realtime: bool) -> str:
    priority = "real-time (SCHED_FIFO)" if realtime else "normal (not root: noisier)"
    lines = [
        f"Redis {version} at {priority} priority; each call {repeat} times; SLOWLOG "
        "durations (Redis's own time per command, without the network)",
        "",
        "| call | longest command, median (ms) | worst (ms) | commands per call "
        "| all of them, median (ms) |",
        "|---|---|---|---|---|",
        *(cost.row() for cost in results),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES), help="from: " + ", ".join(CASES))
    parser.add_argument("--repeat", type=int, default=5, help="times to make each call")
    parser.add_argument(
        "--slower-than",
        type=int,
        default=0,
        help="SLOWLOG's threshold (µs): 0 logs every command, and counts them, but Redis 7 "
        "then also logs each command its scripts run, which adds to their time",
    )
    args, _ = parser.parse_known_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    directory = Path(tempfile.mkdtemp(prefix="patterns-script-cost-"))
    binary, _ = find_redis_server()
    server = RedisServer(directory, str(binary))
    server.start()
    assert server.process is not None
    realtime = _realtime(server.process.pid)
    try:
        client = server.client()
        version = str(client.info("server")["redis_version"])
        started = time.monotonic()
        results = asyncio.run(run_cases(server.url, client, cases, args.repeat, args.slower_than))
        print(f"measured in {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        server.stop()
    text = report(results, version, args.repeat, realtime)
    print(text)
    return text


if __name__ == "__main__":
    main()
