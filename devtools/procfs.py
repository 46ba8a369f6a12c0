"""What Linux's /proc says of a running process: the CPU time it has used, the memory it
holds, its children. The benchmarks' figures per call, the tests' bounds on the server's
memory, and the workers of a server started with --workers."""

import os
from pathlib import Path


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which is in parentheses and
    may hold spaces): the state is [0], the parent [1], utime and stime [11] and [12]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int, command: str = "") -> list[int]:
    """The live child processes of `pid` (zombies not counted) whose command line holds
    `command` (its arguments joined by spaces), in pid order."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(entry.name)
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and command in line:
            found.append(int(entry.name))
    return sorted(found)


def memory_bytes(pid: int, figure: str = "VmRSS") -> int:
    """A memory figure of process `pid`, in bytes: VmRSS (resident now) or VmHWM (the
    highest it has been)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{figure}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no {figure} in /proc/{pid}/status")
