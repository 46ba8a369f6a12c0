"""Redis for the patterns: one backend per process (`RedisBackend`), the key names it
hands out (`KeySpace`), and Lua scripts and commands (`LuaScript`, `Command`).

Modules: `backend` (the interface), `batcher` (shared round trips), `pubsub` (one Pub/Sub
connection for every stream), `keys`, `scripts`, `errors` (which Redis failures mean
"unavailable"), `packing` (hiredis's packer for redis-py's asyncio connections).
"""

from patterns_server.storage.backend import RedisBackend
from patterns_server.storage.keys import KeySpace
from patterns_server.storage.pubsub import Message, Subscription
from patterns_server.storage.scripts import Command, LuaScript

__all__ = ["Command", "KeySpace", "LuaScript", "Message", "RedisBackend", "Subscription"]
