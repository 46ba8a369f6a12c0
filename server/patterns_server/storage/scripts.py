"""Lua scripts and the commands that run them.

A script is read once from its `.lua` files and sent as EVALSHA; the batcher sends its
source (EVAL) only to a Redis that answers NOSCRIPT (after a restart or failover), which
also caches it there. Scripts are never retried after a connection error: Redis may have
run them already.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The clock functions every pattern's scripts may use (now_ms, now_us, expire_no_sooner):
# name it first in `LuaScript.beside`.
CLOCK_LUA = str(Path(__file__).parent / "lua" / "clock.lua")


@dataclass(frozen=True)
class LuaScript:
    """A Lua script read from `.lua` files; sent as EVALSHA, as EVAL where Redis lacks it."""

    source: str
    sha: str

    @classmethod
    def beside(cls, module_file: str, *filenames: str) -> "LuaScript":
        """The script made of `filenames`, joined in order, relative to the folder of the
        module `module_file` (pass `__file__`), or absolute (CLOCK_LUA): shared Lua
        functions go in the first files."""
        folder = Path(module_file).parent
        source = "\n".join((folder / filename).read_text() for filename in filenames)
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


@dataclass(frozen=True)
class Command:
    """One Redis command; `script` is set for EVALSHA so a NOSCRIPT reply can be retried;
    `route`, when set, is the key whose Cluster node takes the command (else its own)."""

    args: tuple[Any, ...]
    script: LuaScript | None = None
    route: str | None = None

    @classmethod
    def eval(cls, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> "Command":
        return cls(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    @property
    def size(self) -> int:
        """About how many bytes the command takes on the wire."""
        return sum(len(arg) if isinstance(arg, str | bytes) else 20 for arg in self.args)

    @property
    def routing_key(self) -> Any:
        """The key that picks a Cluster node: after the script and key count for EVALSHA."""
        if self.route is not None:
            return self.route
        return self.args[3] if self.args[0] in ("EVALSHA", "EVAL") else self.args[1]

    def as_eval(self) -> tuple[Any, ...]:
        """EVALSHA sent as EVAL, with the script's source."""
        assert self.script is not None
        return ("EVAL", self.script.source, *self.args[2:])
