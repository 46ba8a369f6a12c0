"""hiredis's C command packer for redis-py's asyncio connections, installed at start-up.

redis-py's asyncio connections pack commands in Python (16 µs for one rate-limit EVALSHA, a
tenth of a whole RPC's budget); its sync connections use hiredis's C packer, which writes
the same bytes. `install()` gives every asyncio connection (TCP, TLS, unix, Cluster) the
C one. It replaces a method of redis-py's, so it checks first that redis-py is the version
it was written for (and `tests/test_storage.py` pins that the bytes are the same for
every command shape the server sends); with another version it leaves redis-py alone.
"""

import logging
from typing import Any

import redis
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

logger = logging.getLogger(__name__)

# The redis-py releases whose AbstractConnection.pack_command this replaces.
WRITTEN_FOR = ("8.1.",)

_original_pack_command = AbstractConnection.pack_command
_hiredis_packer = HiredisRespSerializer()


def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
    """The command `args` as RESP bytes, as redis-py's own packer writes them."""
    if isinstance(args[0], str) and " " not in args[0]:  # every command this server sends
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not take (memoryview, ...): redis-py checks
            pass
    packed: list[bytes] = _hiredis_packer.pack(*args)  # also splits "CONFIG GET"
    return packed


def install() -> bool:
    """Use hiredis's packer for asyncio connections; False (and a log line) when hiredis
    is missing or redis-py is a version this was not written for."""
    if not HIREDIS_AVAILABLE:
        logger.info("hiredis is not installed: redis-py packs commands in Python")
        return False
    if not redis.__version__.startswith(WRITTEN_FOR):
        logger.info(
            "redis-py %s is not a version the hiredis packer was checked against (%s): "
            "redis-py packs commands itself",
            redis.__version__,
            ", ".join(v + "x" for v in WRITTEN_FOR),
        )
        return False
    AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    """Back to redis-py's own packer (for tests that compare the two)."""
    AbstractConnection.pack_command = _original_pack_command  # type: ignore[method-assign]
