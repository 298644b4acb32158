"""What a benchmark server knows about itself, as one JSON line, and the difference of two.

Servers call `snapshot()` inside their Trio run (at the edges of the measured window, or
before and after a fan-out); the drivers call `delta()` on two of them. Every public
field of `trio.lowlevel.current_statistics().io_statistics` is kept as it is (on
trio_uring: `ops_submitted`, SQEs per opcode; on epoll: nothing countable), so a
counter the backend gains later (completions, say) shows up in the reports without a
change here.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Mapping
from typing import Any


def snapshot() -> str:
    import trio  # only servers call this, inside a run

    io = trio.lowlevel.current_statistics().io_statistics
    fields: dict[str, Any] = {}
    for name in dir(io):
        if name.startswith("_"):
            continue
        value = getattr(io, name)
        if isinstance(value, Mapping):
            fields[name] = {str(k): v for k, v in value.items()}
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            fields[name] = value
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return json.dumps({"t": time.monotonic(), "cpu_s": ru.ru_utime + ru.ru_stime, "user_s": ru.ru_utime,
                       "sys_s": ru.ru_stime, "io": fields})


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """after - before for every number, also inside mappings (ops_submitted per opcode).
    Gauges (tasks waiting, ops in flight) come out as differences too: read only counters."""
    out: dict[str, Any] = {}
    for k, v in after.items():
        b = before.get(k)
        if isinstance(v, Mapping):
            d = delta(b if isinstance(b, Mapping) else {}, v)
            if d:
                out[k] = d
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v - (b if isinstance(b, (int, float)) else 0)
    return out


def read_snapshots(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []
