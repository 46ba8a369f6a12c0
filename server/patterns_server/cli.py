"""The `patterns-server` command: settings from flags and environment, logging, run."""

import asyncio
import logging
import sys
from collections.abc import Sequence

from patterns_server.app import ListenError, run
from patterns_server.core.settings import load_settings
from patterns_server.storage.embedded import RedisServerNotFound


def _event_loop_factory() -> "asyncio.AbstractEventLoop":
    try:
        import uvloop  # 10-20% more throughput with grpc.aio where it is available
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: Sequence[str] | None = None) -> None:
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # gRPC's own debug lines (event-loop bookkeeping) would drown the per-request lines.
    logging.getLogger("grpc").setLevel(max(logging.INFO, logging.root.level))
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory) as runner:
            runner.run(run(settings))
    except (ListenError, RedisServerNotFound) as error:
        logging.getLogger("patterns_server").error("%s", error)
        sys.exit(1)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        sys.exit(130)
