"""The `patterns-server` command: settings from flags and environment, logging, run (one
process, or a supervisor of `--workers`); `patterns-server keys new`, which makes an API
key and the digest an auth file holds; and `patterns-server worker`, how a supervisor
starts each worker (runtime/supervisor.py)."""

import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from patterns_server.app import run
from patterns_server.core.settings import load_settings
from patterns_server.ratelimit.envoy_config import EnvoyConfigError
from patterns_server.runtime import logs
from patterns_server.runtime.auth import AuthFileError, new_token
from patterns_server.runtime.serving import ListenError
from patterns_server.runtime.supervisor import supervise
from patterns_server.runtime.worker import Worker
from patterns_server.storage.backend import RedisURLError
from patterns_server.storage.embedded import DataDirectoryError, RedisServerNotFound


def _event_loop_factory() -> "asyncio.AbstractEventLoop":
    try:
        import uvloop  # 10-20% more throughput with grpc.aio where it is available
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


KEYS_USAGE = """usage: patterns-server keys new

Prints a new random API key and its SHA-256 digest. Give the key to the team (it is shown
once: the server keeps only the digest) and put the digest in the tenant's `keys` in the
auth file. To rotate, add the new digest beside the old one, move the clients, then remove
the old one."""


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["keys"]:
        _keys(args[1:])
        return
    if args[:1] == ["worker"]:  # started by a supervisor, which says what in the environment
        worker = Worker.from_environment()
        logs.configure(worker.settings.log_level, worker.settings.log_format, worker.number)
        _run(run(worker.settings, worker))
        return
    settings = load_settings(args)
    logs.configure(settings.log_level, settings.log_format)
    if settings.workers > 1:
        sys.exit(_run(supervise(settings)))
    _run(run(settings))


def _run(main: Coroutine[Any, Any, int | None]) -> int | None:
    """Run `main` on the event loop: what it returns; exit 1 on an error that stops the
    server at start (logged, without a traceback)."""
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory) as runner:
            return runner.run(main)
    except (
        ListenError,
        RedisServerNotFound,
        DataDirectoryError,
        AuthFileError,
        RedisURLError,
        EnvoyConfigError,
    ) as error:
        logging.getLogger("patterns_server").error("%s", error)
        sys.exit(1)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        sys.exit(130)


def _keys(args: list[str]) -> None:
    if args != ["new"]:
        print(KEYS_USAGE, file=sys.stderr)
        sys.exit(0 if args in (["-h"], ["--help"]) else 2)
    token, digest = new_token()
    print(f"API key (give it to the team; shown once): {token}")
    print(f"digest (put it in the tenant's keys):      {digest}")
