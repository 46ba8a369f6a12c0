"""The Go, TypeScript and Java clients: each language's example is built and run against a
live server (on Redis 7), calling every service, and its output checked line by line.

Builds are cached between runs where the toolchain allows (Go's build cache, ~/.m2,
clients/ts/node_modules). A missing toolchain skips its language, and fails under CI=true.
"""

import re
import subprocess
from pathlib import Path

import pytest

from devtools.processes import PatternsServer
from tests.conftest import require_tool

CLIENTS = Path(__file__).parents[1] / "clients"
on_redis7 = pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
# A first build downloads its dependencies: each step has a timeout of its own (up to
# 1,200 s, 1,800 s for a whole example), so the suite's 300 s per test is too short here.
pytestmark = pytest.mark.timeout(2_400)

# What every example prints, in each language's own notation; one line per step.
EXPECTED = {
    "go": [
        "health: SERVING SERVING",
        "ratelimit check: [true true true false] retry_after>0: true",
        "ratelimit check_many: true 2",
        "counter count: 2",
        "events: true order 42",
        "locker: true RELEASE_STATUS_RELEASED true freed: true",
        "cache: <html> 1",
        "leaderboard: ann 1 2",
        "sessions: go true",
        "invalid: InvalidArgument key INVALID_ARGUMENT",
    ],
    "ts": [
        "health: SERVING SERVING",
        "ratelimit check: true,true,true,false retry_after>0: true",
        "ratelimit check_many: true 2",
        "counter count: 2",
        "events: true order 42",
        "locker: true RELEASE_STATUS_RELEASED true freed: true",
        "cache: <html> 1",
        "leaderboard: ann 1 2",
        "sessions: ts true",
        "invalid: 3 key INVALID_ARGUMENT",
    ],
    "java": [
        "health: SERVING SERVING",
        "ratelimit check: [true, true, true, false] retry_after>0: true",
        "ratelimit check_many: true 2",
        "counter count: 2",
        "events: true order 42",
        "locker: true RELEASE_STATUS_RELEASED true freed: true",
        "cache: <html> 1",
        "leaderboard: ann 1 2",
        "sessions: java true",
        "invalid: INVALID_ARGUMENT key INVALID_ARGUMENT",
    ],
}


def output_of(command: list[str], cwd: Path, timeout: float = 600) -> str:
    """What `command` printed; the test fails if it exits non-zero."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def assert_prints(output: str, language: str) -> None:
    # Maven 3.8 colours its output (a reset code) even in batch mode.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    lines = [line for line in plain.splitlines() if line.strip()]
    assert lines == EXPECTED[language], output


@on_redis7
@pytest.mark.slow
def test_the_go_example_calls_every_service(server: PatternsServer) -> None:
    go = require_tool("go")
    directory = CLIENTS / "go"
    output_of([go, "vet", "./..."], directory)
    assert output_of(["gofmt", "-l", "."], directory) == ""
    assert_prints(output_of([go, "run", "./cmd/example", server.address], directory), "go")


@on_redis7
@pytest.mark.slow
def test_the_typescript_example_calls_every_service(server: PatternsServer) -> None:
    npm = require_tool("npm")
    node = require_tool("node")
    directory = CLIENTS / "ts"
    lock = directory / "package-lock.json"
    installed = directory / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        output_of([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], directory)
    output_of([npm, "run", "--silent", "build"], directory)
    assert_prints(output_of([node, "dist/example.js", server.address], directory), "ts")


@on_redis7
@pytest.mark.slow
def test_the_java_example_calls_every_service(server: PatternsServer) -> None:
    mvn = require_tool("mvn")
    require_tool("java")
    directory = CLIENTS / "java"
    quiet = ["-q", "-B", "-Dstyle.color=never"]
    output_of([mvn, *quiet, "package"], directory, timeout=1_200)
    output = output_of([mvn, *quiet, "exec:java", f"-Dexec.args={server.address}"], directory)
    assert_prints(output, "java")
