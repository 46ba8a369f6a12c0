"""The Go, TypeScript and Java clients, tested the way their users meet them.

For each language, two tests:
- its own tests (`go test`, `node --test`, JUnit through Surefire), some of them against a
  live plaintext server on Redis 7 (PATTERNS_TARGET), their results counted;
- a consumer project under examples/<lang>-consumer/, outside the client's folder, that
  installs the client as the README says (Go: a `replace`; TypeScript: an `npm pack`
  tarball; Java: `mvn install`, then a Maven project of its own) and runs every recipe
  against a server with an API key over mutual TLS. The program prints one line per step
  and, at a line starting with "? ", waits while this driver restarts, pauses or resumes
  the server: a subscription resumes after a restart with a gap, a force-released lock
  reports its loss, and a paused server makes the rate limiter fail open and the cache
  fall back to the source, each within its budget.

Builds are cached between runs where the toolchain allows (Go's build cache, ~/.m2,
clients/ts/node_modules). A missing toolchain skips its language, and fails under CI=true.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import pytest
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc

from devtools.processes import PatternsServer, RedisServer, free_port
from patterns_server.runtime.auth import new_token
from tests.certificates import CertificateAuthority
from tests.conftest import require_tool
from tests.rpc import details, rpc_error
from tests.tenants import Tenant, write_auth_file

ROOT = Path(__file__).parents[1]
CLIENTS = ROOT / "clients"
EXAMPLES = ROOT / "examples"
# A first build downloads its dependencies: each step has a timeout of its own (1,200 s for
# Maven's builds, 600 s for any other step, though a warm run takes seconds), so the suite's
# 300 s per test is too short here.
pytestmark = [pytest.mark.timeout(2_400), pytest.mark.slow]
CONSUMERS = Tenant("consumers", "consumers", *new_token())
MAVEN_QUIET = ["-q", "-B", "-Dstyle.color=never"]

# What every consumer prints, the same in each language; "? " lines are the driver's cues.
EXPECTED = [
    "ratelimit: true true true false retry_after>0 true",
    "error: INVALID_ARGUMENT key INVALID_ARGUMENT",
    "counter: 2",
    "leaderboard: ann 1 2",
    "sessions: true false",
    "cache: v1 computed 1",
    "cache failed compute: true true",
    "lock: true true free true",
    "lock lost: true",
    "events: 1",
    "? restart",
    "events after restart: gap 2",
    "? pause",
    "fail-open: true true",
    "cache fallback: v3",
    "fallbacks took <ms> <ms>",
    "? resume",
    "done",
]
# The fallbacks' budget is 200 ms; the rest is room for a busy machine.
FALLBACK_BOUND_MS = 2_000
FALLBACKS_TOOK = re.compile(r"fallbacks took (\d+) (\d+)$")
LINE_TIMEOUT = 120  # seconds for any one line: a restart, or Maven starting a JVM


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA, a certificate for the server (localhost) and one for the consumers,
    and an auth file of one tenant with an API key."""
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(require_tool("openssl"), folder)
    served = ca.issue("server", "/CN=localhost", ["DNS:localhost", "IP:127.0.0.1"])
    client = ca.issue("client", "/O=Example/CN=consumers", ["DNS:consumers.internal"])
    return {
        "ca": ca.cert,
        "server_cert": served.cert,
        "server_key": served.key,
        "client_cert": client.cert,
        "client_key": client.key,
        "auth_file": write_auth_file(folder / "tenants.toml", [CONSUMERS]),
    }


@pytest.fixture(scope="module")
def plaintext(redis7: RedisServer) -> Iterator[dict[str, str]]:
    """The settings of the clients' own live tests: a plaintext server without keys
    (PATTERNS_TARGET), and its Prometheus metrics (PATTERNS_METRICS_URL), where a test can
    see which RPCs its client made (compare before and after: the languages share it)."""
    server = PatternsServer(redis7.url, "--metrics-listen", "127.0.0.1:0").start()
    try:
        server.wait_for_log("metrics on http://")
        metrics = re.search(r"metrics on (http://[\d.]+:\d+/metrics)", server.log)
        assert metrics
        yield {"PATTERNS_TARGET": server.address, "PATTERNS_METRICS_URL": metrics.group(1)}
    finally:
        server.stop()


@pytest.fixture
def guarded(redis7: RedisServer, pki: dict[str, Path]) -> Iterator[PatternsServer]:
    """A server of its own (the consumer restarts and pauses it) on a fixed address, with
    an auth file and mutual TLS, that refuses calls without the tenant's key."""
    server = PatternsServer(
        redis7.url, "--listen", f"127.0.0.1:{free_port()}",
        "--auth-file", str(pki["auth_file"]), "--tls-cert", str(pki["server_cert"]),
        "--tls-key", str(pki["server_key"]), "--tls-client-ca", str(pki["ca"]),
    ).start()  # fmt: skip
    try:
        credentials = grpc.ssl_channel_credentials(
            pki["ca"].read_bytes(), pki["client_key"].read_bytes(), pki["client_cert"].read_bytes()
        )
        with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
            count = counter_pb2_grpc.UniqueCounterStub(channel).Count
            refused = rpc_error(lambda: count(counter_pb2.CountRequest(keys=["k"]), timeout=10))
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
            assert details(refused)["ErrorInfo"].reason == "MISSING_CREDENTIALS"
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.pid, signal.SIGCONT)  # a consumer that failed while it was paused
        server.stop()


def settings_for(server: PatternsServer, pki: dict[str, Path]) -> dict[str, str]:
    """The PATTERNS_* variables of a consumer of the guarded server."""
    return {
        "PATTERNS_TARGET": f"localhost:{server.port}",  # the name its certificate holds
        "PATTERNS_API_KEY": CONSUMERS.token,
        "PATTERNS_CA_FILE": str(pki["ca"]),
        "PATTERNS_CERT_FILE": str(pki["client_cert"]),
        "PATTERNS_KEY_FILE": str(pki["client_key"]),
    }


def environment(settings: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment with `settings` as the only PATTERNS_* variables."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PATTERNS_")}
    env.update(settings or {})
    return env


def output_of(
    command: list[str], cwd: Path, timeout: float = 600, settings: Mapping[str, str] | None = None
) -> str:
    """What `command` printed; the test fails if it exits non-zero."""
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=environment(settings),
    )  # fmt: skip
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def plain(line: str) -> str:
    """A line without terminal colours (Maven 3.8 writes a reset code even in batch mode)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip()


def drive(
    command: list[str], cwd: Path, server: PatternsServer, settings: Mapping[str, str]
) -> None:
    """Run a consumer program, answering its cues, and check every line it prints."""
    process = subprocess.Popen(
        command, cwd=cwd, env=environment(settings), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    errors: list[str] = []

    def read(stream: "object", into: "queue.Queue[str | None] | list[str]") -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.put(line) if isinstance(into, queue.Queue) else into.append(line)
        if isinstance(into, queue.Queue):
            into.put(None)

    threading.Thread(target=read, args=(process.stdout, lines), daemon=True).start()
    threading.Thread(target=read, args=(process.stderr, errors), daemon=True).start()
    printed: list[str] = []

    def failure(what: str) -> str:
        return f"{what}\nprinted:\n" + "\n".join(printed) + "\nstderr:\n" + "".join(errors)

    def next_line(expected: str) -> str:
        """The next line that is not blank, or the test fails."""
        while True:
            try:
                raw = lines.get(timeout=LINE_TIMEOUT)
            except queue.Empty:
                pytest.fail(failure(f"no line in {LINE_TIMEOUT} s; expected {expected!r}"))
            if raw is None:
                pytest.fail(failure(f"the program ended; expected {expected!r}"))
            if plain(raw):
                return plain(raw)

    try:
        for expected in EXPECTED:
            line = next_line(expected)
            printed.append(line)
            took = FALLBACKS_TOOK.match(line)
            if took:
                assert all(int(ms) < FALLBACK_BOUND_MS for ms in took.groups()), failure(line)
                line = "fallbacks took <ms> <ms>"
            assert line == expected, failure(f"expected {expected!r}")
            if line == "? restart":
                server.stop()
                server.start()
            elif line == "? pause":
                os.kill(server.pid, signal.SIGSTOP)
            elif line == "? resume":
                os.kill(server.pid, signal.SIGCONT)
            if line.startswith("? "):
                process.stdin.write("ok\n")
                process.stdin.flush()
        assert process.wait(timeout=60) == 0, failure("the program exited non-zero")
        rest = []
        while (raw := lines.get(timeout=30)) is not None:  # the reader's end, after the exit
            rest.append(plain(raw))
        assert not any(rest), failure(f"more than expected: {rest}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def counted(passed: int, failed: int, minimum: int, output: str) -> None:
    """The verdict of a language's own test run: none failed, and the tests ran."""
    print(f"{passed} passed, {failed} failed")
    assert failed == 0, output
    assert passed >= minimum, f"only {passed} tests ran:\n{output}"


# Python: the reference the others follow, driven the same way ----------------------------


def test_a_python_consumer_uses_every_recipe(guarded: PatternsServer, pki: dict[str, Path]) -> None:
    program = [sys.executable, str(EXAMPLES / "python-consumer" / "main.py")]
    drive(program, ROOT, guarded, settings_for(guarded, pki))


# Go ---------------------------------------------------------------------------------------


def test_the_go_client_passes_its_own_tests(plaintext: dict[str, str]) -> None:
    go = require_tool("go")
    directory = CLIENTS / "go"
    output_of([go, "vet", "./..."], directory)
    assert output_of(["gofmt", "-l", "."], directory) == ""
    result = subprocess.run(
        [go, "test", "-count=1", "-json", "./..."], cwd=directory, capture_output=True,
        text=True, timeout=600, env=environment(plaintext),
    )  # fmt: skip
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    tests = [e for e in events if e.get("Test") and e["Action"] in ("pass", "fail")]
    failed = sum(e["Action"] == "fail" for e in tests)
    counted(len(tests) - failed, failed, 10, result.stdout[-20_000:] + result.stderr)
    assert result.returncode == 0, result.stderr


def test_a_go_consumer_uses_every_recipe(
    guarded: PatternsServer, pki: dict[str, Path], tmp_path: Path
) -> None:
    go = require_tool("go")
    directory = EXAMPLES / "go-consumer"
    output_of([go, "vet", "./..."], directory)
    program = str(tmp_path / "consumer")
    output_of([go, "build", "-o", program, "."], directory)
    drive([program], directory, guarded, settings_for(guarded, pki))


# TypeScript ---------------------------------------------------------------------------------


def npm_ci(npm: str, directory: Path) -> None:
    """`npm ci` in `directory` unless its node_modules is newer than its lock file."""
    lock = directory / "package-lock.json"
    installed = directory / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        output_of([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], directory)


def test_the_typescript_client_passes_its_own_tests(plaintext: dict[str, str]) -> None:
    npm = require_tool("npm")
    directory = CLIENTS / "ts"
    npm_ci(npm, directory)
    result = subprocess.run(
        [npm, "test", "--silent", "--", "--test-reporter=tap"], cwd=directory,
        capture_output=True, text=True, timeout=600,
        env=environment(plaintext),
    )  # fmt: skip
    tap = result.stdout
    passed, failed = (
        int(match.group(1)) if (match := re.search(rf"^# {word} (\d+)$", tap, re.M)) else 0
        for word in ("pass", "fail")
    )
    counted(passed, failed, 10, tap[-20_000:] + result.stderr)
    assert result.returncode == 0, result.stderr


def test_a_typescript_consumer_uses_every_recipe(
    guarded: PatternsServer, pki: dict[str, Path], tmp_path: Path
) -> None:
    npm = require_tool("npm")
    node = require_tool("node")
    npm_ci(npm, CLIENTS / "ts")
    # As a consumer does: a tarball of the package (its `prepare` builds it), installed
    # into a project of its own beside no copy of the repository.
    packed = output_of(
        [npm, "pack", "--silent", "--pack-destination", str(tmp_path)], CLIENTS / "ts"
    )
    tarball = tmp_path / packed.strip().splitlines()[-1]
    consumer = tmp_path / "consumer"
    shutil.copytree(
        EXAMPLES / "ts-consumer", consumer, ignore=shutil.ignore_patterns("node_modules", "dist")
    )
    quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
    output_of([npm, "install", *quiet], consumer)
    output_of([npm, "install", *quiet, str(tarball)], consumer)
    output_of([npm, "run", "--silent", "build"], consumer)
    drive([node, "dist/main.js"], consumer, guarded, settings_for(guarded, pki))


# Java ---------------------------------------------------------------------------------------


def test_the_java_client_passes_its_own_tests(plaintext: dict[str, str]) -> None:
    mvn = require_tool("mvn")
    require_tool("java")
    directory = CLIENTS / "java"
    reports = directory / "target" / "surefire-reports"
    shutil.rmtree(reports, ignore_errors=True)
    # `install` runs the tests, then puts the jar in ~/.m2 for the consumer's build.
    output_of([mvn, *MAVEN_QUIET, "install"], directory, timeout=1_200,
              settings=plaintext)  # fmt: skip
    passed = failed = 0
    for report in reports.glob("TEST-*.xml"):
        suite = ElementTree.parse(report).getroot()
        total, broken = (
            int(suite.get("tests", 0)),
            int(suite.get("failures", 0)) + int(suite.get("errors", 0)),
        )
        skipped = int(suite.get("skipped", 0))
        passed += total - broken - skipped
        failed += broken + skipped  # a skipped test did not show what it tests
    counted(passed, failed, 10, "\n".join(p.name for p in reports.glob("*")))


def test_a_java_consumer_uses_every_recipe(
    guarded: PatternsServer, pki: dict[str, Path], tmp_path: Path
) -> None:
    mvn = require_tool("mvn")
    require_tool("java")
    # The client as `mvn install` puts it in the local repository (its tests are the other
    # test's business: skipped here, as a consumer who trusts the build might).
    output_of([mvn, *MAVEN_QUIET, "-DskipTests", "install"], CLIENTS / "java", timeout=1_200)
    consumer = tmp_path / "consumer"
    shutil.copytree(EXAMPLES / "java-consumer", consumer, ignore=shutil.ignore_patterns("target"))
    output_of([mvn, *MAVEN_QUIET, "compile"], consumer, timeout=1_200)
    drive([mvn, *MAVEN_QUIET, "exec:java"], consumer, guarded, settings_for(guarded, pki))
