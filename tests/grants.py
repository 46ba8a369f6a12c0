"""A grant that lands after its caller has gone, made to happen on purpose.

Redis's writes are paused (CLIENT PAUSE WRITE on every node), so the script a server sends
to grant a lease waits inside Redis, where CLIENT LIST shows it (a blocked EVALSHA). The
caller then cancels its call; when the pause ends Redis runs the script and grants the
lease to a caller that will never learn its token. The server must give it back.

The server under test waits for Redis longer than the pause lasts (`patient_server`), and
probes its health seldom: a probe is a write too, and one held by the pause would hold the
server's next pipeline (and the script the test waits for) behind it.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from devtools.processes import PatternsServer
from tests.conftest import node_clients
from tests.waiting import eventually

PAUSE_MS = 60_000  # ended by CLIENT UNPAUSE; this bounds it only if the test dies first


def patient_server(backend_url: str) -> PatternsServer:
    """A server on `backend_url` that waits 30 s for Redis's answers, its first health
    probe done (the next one is an hour away)."""
    server = PatternsServer(backend_url, "--redis-timeout", "30", "--health-interval", "3600")
    server.start().wait_for_log("Redis is reachable: serving")
    return server


@contextmanager
def writes_paused(backend_url: str) -> Iterator[list[redis.Redis]]:
    """Redis's writes (every script among them) held on every node until the block ends;
    a client of each node."""
    nodes = node_clients(backend_url)
    for node in nodes:
        node.client_pause(PAUSE_MS, all=False)  # writes only
    try:
        yield nodes
    finally:
        for node in nodes:
            node.client_unpause()


def script_held(nodes: list[redis.Redis]) -> bool:
    """Whether some node holds a script sent during the pause."""
    return any(
        "b" in client["flags"] and client["cmd"] in ("evalsha", "eval")
        for node in nodes
        for client in node.client_list()
    )


def wait_until_script_held(nodes: list[redis.Redis]) -> None:
    eventually(lambda: script_held(nodes), within=20, what="the server's script held by the pause")


def sleep_past(expires_at_s: float) -> None:
    """Sleep until the instant `expires_at_s` (s since the epoch, this machine's clock,
    which Redis's shares) is 50 ms past."""
    time.sleep(max(0.0, expires_at_s + 0.05 - time.time()))
