"""The example web app (examples/python-web/app.py) as its users meet it: two instances under
uvicorn on real ports in front of a live patterns-server on Redis, every endpoint driven
over HTTP, a 429
with its headers, and the patterns server paused (SIGSTOP) under it: the rate-limited
endpoint still answers, within its small budget."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devtools.processes import PatternsServer, free_port
from tests.waiting import eventually

APP_DIR = Path(__file__).parents[1] / "examples" / "python-web"
UVICORN = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--log-level", "warning"]
HELLO_LIMIT = 3
# What the rate-limited endpoint may take while the patterns server is paused: the
# client's fallback budget (200 ms) and the app's own work, with room for a busy machine;
# far below the app's client timeout (2 s), which is what it took without a fallback.
PAUSED_BUDGET = 1.5


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Browser:
    """HTTP calls to the app, keeping its cookie as a browser would."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
        started = time.monotonic()
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                cookie, _, rest = value.partition(";")
                key, _, content = cookie.partition("=")
                if content in ('""', "") or "max-age=0" in rest.lower():
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = content
        headers_read = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, headers_read, payload, time.monotonic() - started)


@dataclass
class Apps:
    """Two instances of the app, as a deployment runs them, on one patterns-server."""

    first: Browser
    second: Browser
    server: PatternsServer


@pytest.fixture
def apps(server_on_own_redis: Callable[..., PatternsServer], tmp_path: Path) -> Iterator[Apps]:
    server = server_on_own_redis()
    env = dict(
        os.environ,
        PATTERNS_TARGET=server.address,
        EXAMPLE_PREFIX=f"web-{uuid.uuid4().hex[:8]}",
        HELLO_LIMIT=str(HELLO_LIMIT),
    )
    processes: list[subprocess.Popen[bytes]] = []
    browsers: list[Browser] = []
    try:
        for number in range(2):
            port = free_port()
            log = tmp_path / f"app-{number}.log"
            with log.open("wb") as output:
                processes.append(
                    subprocess.Popen(
                        [*UVICORN, "app:app", "--app-dir", str(APP_DIR), "--port", str(port)],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
            browsers.append(Browser(port))
        for process, browser, number in zip(processes, browsers, range(2), strict=True):

            def up(
                process: subprocess.Popen[bytes] = process,
                browser: Browser = browser,
                log: Path = tmp_path / f"app-{number}.log",
            ) -> bool:
                try:
                    return browser.call("GET", "/", timeout=1).status == 200
                except OSError:
                    assert process.poll() is None, log.read_text(errors="replace")
                    return False

            eventually(up, within=30, what="the app answering")
        yield Apps(browsers[0], browsers[1], server)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_sessions(apps: Apps) -> None:
    browser = apps.first
    assert browser.call("GET", "/me").status == 401
    assert browser.call("POST", "/login", {"user": "ann"}).status == 200
    assert "sid" in browser.cookies
    me = browser.call("GET", "/me")
    assert me.status == 200 and me.json()["user"] == "ann"
    apps.second.cookies = dict(browser.cookies)  # the next request, to the other instance
    assert apps.second.call("GET", "/me").json()["user"] == "ann"
    assert browser.call("POST", "/logout").json() == {"ended": True}
    assert browser.call("GET", "/me").status == 401


def test_a_per_ip_limit_with_its_headers_then_a_429(apps: Apps) -> None:
    browser = apps.first
    replies = [browser.call("GET", "/hello") for _ in range(HELLO_LIMIT + 1)]
    assert [reply.status for reply in replies] == [200] * HELLO_LIMIT + [429]
    first, refused = replies[0], replies[-1]
    assert first.headers["ratelimit-limit"] == str(HELLO_LIMIT)
    assert first.headers["ratelimit-remaining"] == str(HELLO_LIMIT - 1)
    assert first.headers["ratelimit-policy"] == f"{HELLO_LIMIT};w=60"
    assert "retry-after" not in first.headers
    assert refused.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 60  # rounded up, never 0
    assert int(refused.headers["ratelimit-reset"]) >= 1


def test_cache_aside_with_tags(apps: Apps) -> None:
    browser = apps.first
    first = browser.call("GET", "/products/1")
    assert first.status == 200 and first.json()["name"] == "teapot"
    assert browser.call("GET", "/products/1").json() == first.json()  # from the cache
    updated = browser.call("PUT", "/products/1", {"price": 25})
    assert updated.status == 200 and updated.json()["invalidated"] == 1
    assert browser.call("GET", "/products/1").json()["price"] == 25  # read anew
    assert browser.call("GET", "/products/9").status == 404
    assert browser.call("GET", "/catalog").json() == ["1", "2"]
    assert browser.call("GET", "/catalog").json() == ["1", "2"]


def test_a_daily_leaderboard(apps: Apps) -> None:
    browser = apps.first
    browser.call("POST", "/scores/ann?points=5")
    browser.call("POST", "/scores/bob?points=3")
    again = browser.call("POST", "/scores/bob?points=4").json()
    assert again == {"user": "bob", "score": 7, "rank": 1}
    board = browser.call("GET", "/leaderboard").json()
    assert board["total"] == 2
    assert [(s["user"], s["score"], s["rank"]) for s in board["top"]] == [
        ("bob", 7, 1),
        ("ann", 5, 2),
    ]


def test_a_job_under_a_lock_runs_once_at_a_time(apps: Apps) -> None:
    """Both instances start the nightly job at once: one runs it, the other is told it
    runs elsewhere; the next run's fencing token is higher."""
    replies: list[Reply] = []

    def start(browser: Browser) -> None:
        replies.append(browser.call("POST", "/jobs/nightly?seconds=3"))

    both = [threading.Thread(target=start, args=(b,)) for b in (apps.first, apps.second)]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join(20)
    assert sorted(reply.status for reply in replies) == [200, 409]
    ran = next(reply for reply in replies if reply.status == 200).json()
    after = apps.second.call("POST", "/jobs/nightly")
    assert after.status == 200
    assert after.json()["fencing_token"] > ran["fencing_token"]


def test_an_sse_relay_of_events(apps: Apps) -> None:
    browser = apps.first
    connection = http.client.HTTPConnection("127.0.0.1", browser.port, timeout=10)
    try:
        connection.request("GET", "/events")
        stream = connection.getresponse()
        assert stream.status == 200
        assert stream.getheader("content-type", "").startswith("text/event-stream")
        assert stream.readline() == b": subscribed\n"  # live from here on
        assert stream.readline() == b"\n"
        published = apps.second.call("POST", "/news", b"hello, readers")  # the other instance
        assert published.json() == {"receivers": 1}
        assert stream.readline() == b"data: hello, readers\n"
    finally:
        connection.close()


def test_the_rate_limited_endpoint_answers_while_the_server_is_paused(
    apps: Apps,
) -> None:
    """SIGSTOP leaves connections open and unanswered, the hardest case for a client. The
    limit falls back to admitting (on_unavailable="allow") within its budget, and says so;
    before the fallbacks covered a paused server, each request took the client's whole
    timeout and failed (503 here)."""
    browser, server = apps.first, apps.server
    assert browser.call("GET", "/hello").status == 200  # the channel is up
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        replies = [browser.call("GET", "/hello") for _ in range(3)]
    finally:
        server.process.send_signal(signal.SIGCONT)
    times = [round(reply.seconds, 3) for reply in replies]
    print(f"answered in {times} s while the server was paused")
    assert [reply.status for reply in replies] == [200, 200, 200], [r.body for r in replies]
    assert all(reply.headers.get("x-ratelimit-fallback") == "allow" for reply in replies)
    assert max(times) < PAUSED_BUDGET, times
    # Back: the limit is Redis's again.
    eventually(lambda: "x-ratelimit-fallback" not in browser.call("GET", "/hello").headers)
