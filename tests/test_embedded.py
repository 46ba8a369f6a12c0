"""The embedded Redis (a server started without --redis-url) keeps its data across
restarts in its data directory (--embedded-dir), so that fencing tokens go on growing; one
server at a time uses a directory; 'none' keeps nothing."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from devtools.processes import PatternsServer
from patterns_client import Client
from patterns_server.storage.embedded import data_directory
from tests.conftest import require_tool

MINUTE = timedelta(minutes=1)
SERVER = [sys.executable, "-m", "patterns_server"]


def remember(server: PatternsServer, value: bytes) -> None:
    with Client(server.address, timeout=10) as client:
        client.cache.set("remembered", value, ttl=timedelta(hours=1))


def recall(server: PatternsServer) -> bytes | None:
    with Client(server.address, timeout=10) as client:
        entry = client.cache.get("remembered")
        return None if entry is None else entry.value


def fencing_token(server: PatternsServer, name: str) -> int:
    """Take the lock `name` and give it back: the fencing token it was granted."""
    with Client(server.address, timeout=10) as client:
        lease = client.locks.acquire(name, ttl=MINUTE)
        assert lease is not None
        client.locks.release(lease)
        return lease.fencing_token


@pytest.fixture(autouse=True)
def _redis_server() -> None:
    require_tool("redis-server")


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_fencing_tokens_grow_across_a_restart_with_the_same_directory(
    tmp_path: Path, stop: str
) -> None:
    """Before: the embedded Redis kept nothing, and the token after a restart was 1
    again (7 -> 1). Also when the server is killed: its Redis is signalled and writes its
    last before it exits, and the next server waits for it."""
    data = tmp_path / "data"
    first = PatternsServer(None, "--embedded-dir", str(data)).start()
    try:
        tokens = [fencing_token(first, "job") for _ in range(7)]
        remember(first, b"kept")
    finally:
        if stop == "SIGKILL":
            assert first.process is not None
            first.process.kill()
            first.wait()
        else:
            assert first.stop() == 0
    assert tokens == sorted(tokens) and len(set(tokens)) == 7
    assert "data in " + str(data) in first.log
    second = PatternsServer(None, "--embedded-dir", str(data)).start()
    try:
        after = fencing_token(second, "job")
        kept = recall(second)
    finally:
        assert second.stop() == 0
    assert after > tokens[-1], (tokens, after)
    assert kept == b"kept"  # the data itself, not only a token from the clock


def test_the_variable_names_the_directory_and_none_keeps_nothing(tmp_path: Path) -> None:
    data = tmp_path / "from-the-variable"
    env = dict(os.environ, PATTERNS_EMBEDDED_DIR=str(data))
    server = PatternsServer(None, env=env).start()
    try:
        fencing_token(server, "job")
    finally:
        server.stop()
    assert any(data.iterdir())  # the append-only file and the lock file
    recalled = []
    for _ in range(2):
        server = PatternsServer(None, "--embedded-dir", "none").start()
        try:
            recalled.append(recall(server))
            remember(server, b"lost at the stop")
        finally:
            server.stop()
        assert "nothing kept" in server.log
    assert recalled == [None, None]


def test_one_server_at_a_time_uses_a_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = PatternsServer(None, "--embedded-dir", str(data)).start()
    try:
        second = subprocess.run(
            [*SERVER, "--listen", "127.0.0.1:0", "--embedded-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second.stderr
        assert f"data directory {data} is in use by another patterns-server" in second.stderr
        assert "Traceback" not in second.stderr
        fencing_token(first, "job")  # the first goes on
    finally:
        first.stop()


def test_the_default_directory_is_under_the_users_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert data_directory("") == tmp_path / "patterns-server"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert data_directory("") == Path.home() / ".local" / "state" / "patterns-server"
    assert data_directory("none") is None
    assert data_directory("~/x") == Path.home() / "x"


def test_an_unusable_default_directory_keeps_nothing_and_says_so(tmp_path: Path) -> None:
    """The default directory, under a home that cannot hold it: the server starts all the
    same, keeping nothing, and its log says why. A directory given explicitly fails."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = dict(os.environ, XDG_STATE_HOME=str(blocker))
    env.pop("PATTERNS_EMBEDDED_DIR", None)
    server = PatternsServer(None, env=env).start()
    try:
        assert fencing_token(server, "job") >= 1
    finally:
        server.stop()
    assert "the embedded Redis keeps nothing" in server.log
    assert "nothing kept" in server.log
    explicit = subprocess.run(
        [*SERVER, "--listen", "127.0.0.1:0", "--embedded-dir", str(blocker / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert explicit.returncode == 1
    assert f"cannot use {blocker / 'data'} for the embedded Redis's data" in explicit.stderr
