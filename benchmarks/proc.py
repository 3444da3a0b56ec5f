"""What a running process costs, read from Linux's ``/proc``: CPU seconds and memory."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds", "memory"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (/proc/PID/stat)."""
    # The command name (field 2) may hold spaces: the fields after its ")" start at field 3.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> dict[str, int]:
    """Resident set size now and its peak (``VmRSS``, ``VmHWM``) of ``pid``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) * 1024
    return out
