"""The Go, TypeScript and Java clients: each language's example is built once and run
twice against live servers (on Redis 7), calling every service, its output checked line by
line: plaintext without a key, as on a developer's machine; and with an API key over mutual
TLS (a throwaway private CA) to a server with an auth file, which refuses calls without one.

Builds are cached between runs where the toolchain allows (Go's build cache, ~/.m2,
clients/ts/node_modules). A missing toolchain skips its language, and fails under CI=true.
"""

import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import pytest
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from patterns_server.runtime.auth import new_token
from tests.certificates import CertificateAuthority
from tests.conftest import require_tool
from tests.rpc import details, rpc_error
from tests.tenants import Tenant, write_auth_file

CLIENTS = Path(__file__).parents[1] / "clients"
on_redis7 = pytest.mark.parametrize("backend_url", ["redis7"], indirect=True)
# A first build downloads its dependencies: each step has a timeout of its own (1,200 s for
# Maven's build, 600 s for any other step, though a warm run takes seconds), so the suite's
# 300 s per test is too short here.
pytestmark = pytest.mark.timeout(2_400)
EXAMPLES = Tenant("examples", "examples", *new_token())

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


@pytest.fixture(scope="module")
def guarded(
    redis7: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The settings (PATTERNS_* variables) of a server with an auth file of one tenant and
    mutual TLS: its target, the tenant's API key, the private CA and a client certificate."""
    folder = tmp_path_factory.mktemp("guarded")
    ca = CertificateAuthority(require_tool("openssl"), folder / "pki")
    served = ca.issue("server", "/CN=localhost", ["DNS:localhost", "IP:127.0.0.1"])
    client = ca.issue("client", "/O=Example/CN=examples", ["DNS:examples.internal"])
    auth_file = write_auth_file(folder / "tenants.toml", [EXAMPLES])
    server = PatternsServer(
        redis7.url, "--auth-file", str(auth_file), "--tls-cert", str(served.cert),
        "--tls-key", str(served.key), "--tls-client-ca", str(ca.cert),
    ).start()  # fmt: skip
    try:
        # Without the key every call but health's is refused: an example that passes here
        # sent it (the tenant names no certificate, so the client's does not stand in).
        credentials = grpc.ssl_channel_credentials(
            ca.cert.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
        )
        with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
            count = counter_pb2_grpc.UniqueCounterStub(channel).Count
            refused = rpc_error(lambda: count(counter_pb2.CountRequest(keys=["k"]), timeout=10))
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
            assert details(refused)["ErrorInfo"].reason == "MISSING_CREDENTIALS"
        yield {
            "PATTERNS_TARGET": f"localhost:{server.port}",  # the name its certificate holds
            "PATTERNS_API_KEY": EXAMPLES.token,
            "PATTERNS_CA_FILE": str(ca.cert),
            "PATTERNS_CERT_FILE": str(client.cert),
            "PATTERNS_KEY_FILE": str(client.key),
        }
    finally:
        server.stop()


def output_of(
    command: list[str], cwd: Path, timeout: float = 600, settings: Mapping[str, str] | None = None
) -> str:
    """What `command` printed; the test fails if it exits non-zero. Its environment is this
    process's with `settings` as the only PATTERNS_* variables (none of the shell's)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PATTERNS_")}
    env.update(settings or {})
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def assert_prints(output: str, language: str) -> None:
    # Maven 3.8 colours its output (a reset code) even in batch mode.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    lines = [line for line in plain.splitlines() if line.strip()]
    assert lines == EXPECTED[language], output


@on_redis7
@pytest.mark.slow
def test_the_go_example_calls_every_service(
    server: PatternsServer, guarded: dict[str, str], tmp_path: Path
) -> None:
    go = require_tool("go")
    directory = CLIENTS / "go"
    output_of([go, "vet", "./..."], directory)
    assert output_of(["gofmt", "-l", "."], directory) == ""
    example = str(tmp_path / "example")
    output_of([go, "build", "-o", example, "./cmd/example"], directory)
    assert_prints(output_of([example, server.address], directory), "go")
    assert_prints(output_of([example], directory, settings=guarded), "go")


@on_redis7
@pytest.mark.slow
def test_the_typescript_example_calls_every_service(
    server: PatternsServer, guarded: dict[str, str]
) -> None:
    npm = require_tool("npm")
    node = require_tool("node")
    directory = CLIENTS / "ts"
    lock = directory / "package-lock.json"
    installed = directory / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        output_of([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], directory)
    output_of([npm, "run", "--silent", "build"], directory)
    assert_prints(output_of([node, "dist/example.js", server.address], directory), "ts")
    assert_prints(output_of([node, "dist/example.js"], directory, settings=guarded), "ts")


@on_redis7
@pytest.mark.slow
def test_the_java_example_calls_every_service(
    server: PatternsServer, guarded: dict[str, str]
) -> None:
    mvn = require_tool("mvn")
    require_tool("java")
    directory = CLIENTS / "java"
    quiet = ["-q", "-B", "-Dstyle.color=never"]
    output_of([mvn, *quiet, "package"], directory, timeout=1_200)
    output = output_of([mvn, *quiet, "exec:java", f"-Dexec.args={server.address}"], directory)
    assert_prints(output, "java")
    assert_prints(output_of([mvn, *quiet, "exec:java"], directory, settings=guarded), "java")
