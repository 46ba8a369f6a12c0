"""Redis for the patterns: one backend per process (`RedisBackend`), the key names it
hands out (`KeySpace`), and Lua scripts and commands (`LuaScript`, `Command`).

Modules: `backend` (the interface), `batcher` (shared round trips), `pubsub` (one Pub/Sub
connection for every stream), `wakeups` (waiting without polling), `leases` (a token's
right to something for a while: locks, cache fills), `keys`, `scripts`, `errors` (which
Redis failures mean "unavailable"), `redispy` (what this server changes in redis-py, in
one place), `embedded` (a private redis-server for development).
"""

from patterns_server.storage.backend import RedisBackend
from patterns_server.storage.keys import KeySpace
from patterns_server.storage.pubsub import Message, Subscription
from patterns_server.storage.scripts import Command, LuaScript

__all__ = ["Command", "KeySpace", "LuaScript", "Message", "RedisBackend", "Subscription"]
