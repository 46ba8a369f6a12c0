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

# Storage's own Lua functions, which a pattern's scripts include by asking for them.
LIBRARY = Path(__file__).parent / "lua"


@dataclass(frozen=True)
class LuaScript:
    """A Lua script made of `.lua` files; sent as EVALSHA, as EVAL where Redis lacks it."""

    body: Path  # the file of its own (the others are shared functions)
    source: str
    sha: str

    @classmethod
    def load(
        cls, module_file: str, *names: str, clock: bool = False, lease: bool = False
    ) -> "LuaScript":
        """The script of the pattern beside `module_file` (pass `__file__`) made of its
        `lua/<name>.lua` files joined in order, after the pattern's `lua/common.lua` when
        it has one, and after storage's clock functions (`clock`: now_ms, now_us,
        expire_no_sooner, from `lua/clock.lua`) and lease functions (`lease`: from
        `lua/lease.lua`, which need the clock). The last name is the script's body: its
        header says what it does, its KEYS, ARGV, reply and clock."""
        folder = Path(module_file).parent / "lua"
        files = []
        if clock or lease:
            files.append(LIBRARY / "clock.lua")
        if lease:
            files.append(LIBRARY / "lease.lua")
        if (folder / "common.lua").exists():
            files.append(folder / "common.lua")
        files.extend(folder / f"{name}.lua" for name in names)
        source = "\n".join(file.read_text() for file in files)
        return cls(files[-1], source, hashlib.sha1(source.encode()).hexdigest())


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
