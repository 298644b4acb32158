"""``check``: can io_uring be used here, and if not, why not; and what trio_uring needs.

Prints the machine (kernel, sysctl, seccomp), then opens a small ring and compares
what the kernel has with the tables in `trio_uring._requirements`.
"""

from __future__ import annotations

import platform
import textwrap

import trio

import trio_uring
from trio_uring import _ring
from trio_uring._requirements import (
    KERNEL_FLOOR,
    OPTIONAL_FEATURES,
    REQUIRED_FEATURES,
    USED_FLAGS,
    USED_OPCODES,
    kernel_version,
)
from trio_uring._restrict import current_state
from trio_uring._ring import (
    FEAT_CQE_SKIP,
    FEAT_RECVSEND_BUNDLE,
    SETUP_CLAMP,
    SETUP_SUBMIT_ALL,
    Ring,
    _read_text,
    _seccomp_mode,
)

__all__ = ["check"]

_COOP_TASKRUN = getattr(_ring, "SETUP_COOP_TASKRUN", None)

_SETUP_FLAG_NAMES = {
    1 << 0: "IOPOLL",
    1 << 1: "SQPOLL",
    1 << 2: "SQ_AFF",
    1 << 3: "CQSIZE",
    SETUP_CLAMP: "CLAMP",
    1 << 5: "ATTACH_WQ",
    1 << 6: "R_DISABLED",
    SETUP_SUBMIT_ALL: "SUBMIT_ALL",
    1 << 8: "COOP_TASKRUN",
    1 << 9: "TASKRUN_FLAG",
    1 << 10: "SQE128",
    1 << 11: "CQE32",
    1 << 12: "SINGLE_ISSUER",
    1 << 13: "DEFER_TASKRUN",
}

_DISABLED_MEANING = {
    "0": "io_uring allowed",
    "1": "only CAP_SYS_ADMIN or kernel.io_uring_group may use io_uring",
    "2": "io_uring disabled for everyone",
}


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _open_ring() -> Ring:
    """A small ring, set up as a plain run's ring is."""
    if _COOP_TASKRUN is not None:
        try:
            return Ring(8, 16, coop_taskrun=True)
        except TypeError:
            pass
    return Ring(8, 16)


def check() -> bool:
    """Print what this machine allows and what trio_uring needs. True if io_uring works."""
    kernel = kernel_version()
    floor = ".".join(map(str, KERNEL_FLOOR))
    verdict = "unknown" if kernel is None else ("ok" if kernel >= KERNEL_FLOOR else "TOO OLD")
    print(f"trio_uring {trio_uring.__version__}, Trio {trio.__version__}, Python {platform.python_version()}")
    print(f"kernel:              Linux {platform.release()} ({platform.machine()}); needs >= {floor}: {verdict}")
    disabled = _read_text("/proc/sys/kernel/io_uring_disabled")
    if disabled is None:
        print("io_uring_disabled:   n/a (no such sysctl: Linux < 6.6)")
    else:
        print(f"io_uring_disabled:   {disabled} ({_DISABLED_MEANING.get(disabled, 'unknown value')})")
    mode = _seccomp_mode()
    seccomp_modes = {"0": "none", "1": "strict", "2": "filter (a container's profile, or systemd's)"}
    seccomp = seccomp_modes.get(mode or "", "unknown")
    print(f"seccomp:             {seccomp}")
    try:
        ring = _open_ring()
    except trio_uring.UringUnavailableError as exc:
        print("io_uring:            UNAVAILABLE")
        for line in textwrap.wrap(str(exc), width=88):
            print(f"  {line}")
        return False
    try:
        flags = [name for bit, name in _SETUP_FLAG_NAMES.items() if ring.setup_flags & bit]
        print(
            f"io_uring:            available (ring fd {ring.fd}, "
            f"setup flags {ring.setup_flags:#x}: {' | '.join(flags)})"
        )
        print()
        print(f"  {'feature':<22} {'since':<6} {'here':<5} use")
        for name, (bit, since) in REQUIRED_FEATURES.items():
            print(f"  {name:<22} {since:<6} {_yes(bool(ring.features & bit)):<5} required")
        optional = {
            "CQE_SKIP": bool(ring.features & FEAT_CQE_SKIP),
            "SUBMIT_ALL": bool(ring.setup_flags & SETUP_SUBMIT_ALL),
            "COOP_TASKRUN": bool(ring.setup_flags & (_COOP_TASKRUN or 0)),
            "RECVSEND_BUNDLE": bool(ring.features & FEAT_RECVSEND_BUNDLE),
        }
        for name, (use, since) in OPTIONAL_FEATURES.items():
            print(f"  {name:<22} {since:<6} {_yes(optional[name]):<5} optional: {use}")
        print()
        print(f"  {'opcode':<22} {'since':<6} {'here':<5} used for")
        supported = ring.probe()
        for op, (use, since) in USED_OPCODES.items():
            print(f"  {'IORING_OP_' + op.name:<22} {since:<6} {_yes(op in supported):<5} {use}")
        for name, (use, since_v) in USED_FLAGS.items():
            here = "?" if kernel is None else _yes(kernel >= since_v)
            print(f"  {name:<22} {'.'.join(map(str, since_v)):<6} {here:<5} {use} (by kernel version)")
    finally:
        ring.close()
    # The ring a run would get: restricted to what trio_uring uses (trio_uring/_restrict.py)?
    restrictions = current_state(trio_uring.UringIOManager.restrict)
    print()
    for i, line in enumerate(textwrap.wrap(restrictions.describe(), width=80)):
        print(f"{'restrictions:' if i == 0 else '':<21}{line}")
    return True
