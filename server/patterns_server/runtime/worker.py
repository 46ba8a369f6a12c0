"""A worker's side of `--workers`: what its supervisor tells it, and what it tells back.

The supervisor (`runtime/supervisor.py`) starts each worker as `patterns-server worker`
with a `Worker` in the environment variable PATTERNS_WORKER (its settings, as JSON: an
environment is readable by its own user only, where arguments are shown to everyone by
`ps`, and the Redis URL may hold a password), and the descriptor of its end of a socket
pair. On that socket the worker says "ready" once it listens; through it, it learns that
the supervisor is gone (end of file, however the supervisor died: the kernel closes its
end) and then stops gracefully, so that no worker outlives its supervisor and holds the
port.
"""

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from patterns_server.core.settings import Settings

ENVIRONMENT = "PATTERNS_WORKER"
READY = b"ready\n"

logger = logging.getLogger("patterns_server")


@dataclass(frozen=True)
class Worker:
    number: int  # 1 to N; a worker started again in place of another keeps its number
    settings: Settings  # the supervisor's, with its port and Redis URL settled
    control: int  # descriptor of the worker's end of the socket pair
    metrics: bool  # count metrics (into PROMETHEUS_MULTIPROC_DIR) for the supervisor to serve

    def environment(self) -> dict[str, str]:
        """The variable that passes this to the worker process."""
        fields = dataclasses.asdict(self)
        return {ENVIRONMENT: json.dumps(fields)}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "Worker":
        fields = json.loads(environ[ENVIRONMENT])
        return cls(**{**fields, "settings": Settings(**fields["settings"])})

    def ready(self) -> None:
        """Tell the supervisor that this worker listens."""
        os.write(self.control, READY)  # a few bytes into an empty socket buffer: never blocks

    def watch_supervisor(self, gone: Callable[[], None]) -> None:
        """Call `gone` when the supervisor's end of the socket closes (it exited or died)."""
        loop = asyncio.get_running_loop()
        os.set_blocking(self.control, False)

        def readable() -> None:
            try:
                closed = os.read(self.control, 64) == b""
            except BlockingIOError:
                return
            except OSError:
                closed = True
            if closed:
                loop.remove_reader(self.control)
                logger.warning("the supervisor is gone: stopping")
                gone()

        loop.add_reader(self.control, readable)
