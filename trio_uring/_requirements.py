"""What trio_uring needs from the kernel: the tables ``python -m trio_uring check``
prints and the docs' requirements page shows (docs/source/conf.py), in one place;
the opcodes' rows come from the ops table itself (trio_uring/_ops.py).

Data, and one small function; no I/O. The ring layer's hard requirements
(`REQUIRED_FEATURES`, `REQUIRED_OPCODES`: a ring without them is refused at set-up)
live in `trio_uring._ring` and are re-exported here, so readers need only this module.
"""

from __future__ import annotations

import platform
import re

from . import _ring
from ._ops import OPS
from ._ring import REQUIRED_FEATURES, REQUIRED_OPCODES, Opcode

__all__ = [
    "KERNEL_FLOOR",
    "OPTIONAL_FEATURES",
    "REQUIRED_FEATURES",
    "REQUIRED_OPCODES",
    "USED_FLAGS",
    "USED_OPCODES",
    "kernel_version",
]

#: The Linux release trio_uring is built and tested for.
KERNEL_FLOOR = (6, 1)

def _used_opcodes() -> dict[Opcode, tuple[str, str]]:
    # Each op in the ops table (trio_uring/_ops.py) says what it is used for and the
    # first Linux that has it; ops that share an opcode share its row.
    uses: dict[Opcode, list[str]] = {}
    since: dict[Opcode, str] = {}
    for op in OPS:
        if op.used_for not in uses.setdefault(op.opcode, []):
            uses[op.opcode].append(op.used_for)
        if op.opcode not in since or _version(op.since) < _version(since[op.opcode]):
            since[op.opcode] = op.since
    return {opcode: ("; ".join(what), since[opcode]) for opcode, what in uses.items()}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


#: The opcodes trio_uring submits: what for, and the first Linux that has them.
USED_OPCODES: dict[Opcode, tuple[str, str]] = _used_opcodes()

#: Variants of those ops that the opcode probe cannot see: judged by kernel version.
USED_FLAGS: dict[str, tuple[str, tuple[int, int]]] = {
    "multishot ACCEPT": ("a listener's accept queue", (5, 19)),
    "multishot POLL_ADD": ("wait_writable after a peer's shutdown", (5, 13)),
    "ASYNC_CANCEL_ANY": ("cancelling what is left when a run ends", (5, 19)),
    "FILE_INDEX_ALLOC": ("direct sockets: the kernel picks their slot", (5, 19)),
}
if hasattr(_ring, "BufferRing"):  # receives that wait take a kernel-chosen buffer
    USED_FLAGS["PBUF_RING"] = ("recv() waits without a buffer of its own", (5, 19))

#: Things the backend uses when the kernel has them, and does without otherwise.
OPTIONAL_FEATURES: dict[str, tuple[str, str]] = {
    "CQE_SKIP": ("successful cancels post no CQE", "5.17"),
    "SUBMIT_ALL": ("a bad SQE does not strand the SQEs behind it", "5.18"),
    "RECVSEND_BUNDLE": (
        "send bundles (trio_uring.bundles, lowlevel.SendRing; off by default: 64 B fan-out 29x stock Trio, "
        "0.35x joining in Python); receive bundles (TRIO_URING_RECV_MODE=bundle; not faster)",
        "6.10",
    ),
}
if getattr(_ring, "SETUP_COOP_TASKRUN", None) is not None:  # plain (non-guest) runs ask for it
    OPTIONAL_FEATURES["COOP_TASKRUN"] = ("completions are processed when the loop enters the kernel", "5.19")


def kernel_version(release: str | None = None) -> tuple[int, int] | None:
    """(major, minor) of ``platform.release()``, or None if it does not parse."""
    match = re.match(r"(\d+)\.(\d+)", release if release is not None else platform.release())
    return (int(match.group(1)), int(match.group(2))) if match else None
