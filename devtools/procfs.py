"""What Linux's /proc says of a running process: the CPU time it has used and the memory it
holds. The benchmarks' figures per call and the tests' bounds on the server's memory."""

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    # The fields after the command name, which is in parentheses and may hold spaces:
    # utime and stime are the 14th and 15th of the line, in clock ticks.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_bytes(pid: int, figure: str = "VmRSS") -> int:
    """A memory figure of process `pid`, in bytes: VmRSS (resident now) or VmHWM (the
    highest it has been)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{figure}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no {figure} in /proc/{pid}/status")
