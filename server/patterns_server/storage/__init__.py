"""Redis for the patterns: one backend per process (`RedisBackend`), the key names it
hands out (`KeySpace`), and Lua scripts and commands (`LuaScript`, `Command`).

Modules: `backend` (the interface), `batcher` (shared round trips), `pubsub` (one Pub/Sub
connection for every stream), `wakeups` (waiting without polling), `keys`, `scripts`,
`errors` (which Redis failures mean "unavailable"), `packing` (hiredis's packer for
redis-py's asyncio connections).
"""

from patterns_server.storage.backend import RedisBackend
from patterns_server.storage.keys import KeySpace
from patterns_server.storage.pubsub import Subscription
from patterns_server.storage.scripts import CLOCK_LUA, Command, LuaScript
from patterns_server.storage.wakeups import until_woken

__all__ = [
    "CLOCK_LUA",
    "Command",
    "KeySpace",
    "LuaScript",
    "RedisBackend",
    "Subscription",
    "until_woken",
]
