"""A ring restricted to what trio_uring uses (IORING_REGISTER_RESTRICTIONS).

Why
===

io_uring is a large kernel interface: about sixty opcodes (files, sockets, futexes,
xattrs, zero-copy receive, ...), a dozen SQE flags and thirty-odd register
operations, each a path into the kernel that a bug or an attacker can take. Google
turned io_uring off on its servers and in ChromeOS, and Docker's default seccomp
profile refuses it, all or nothing. A Trio backend needs a dozen opcodes.

What the kernel offers (Linux 5.10)
===================================

A ring created with IORING_SETUP_R_DISABLED accepts no SQE until it is enabled.
Before that, one IORING_REGISTER_RESTRICTIONS call may list what the ring will ever
allow: SQE opcodes (IORING_RESTRICTION_SQE_OP), SQE flags (SQE_FLAGS_ALLOWED, and
SQE_FLAGS_REQUIRED) and io_uring_register opcodes (REGISTER_OP). The list takes
effect at IORING_REGISTER_ENABLE_RINGS and cannot be changed or lifted for the
ring's life. From then on the kernel fails an SQE outside it with ``-EACCES`` in its
CQE, and an io_uring_register call outside it with EACCES. (ENABLE_RINGS itself
need not be listed: the list is not enforced until it has run, and a second call
would only fail.)

What trio_uring does
====================

Every ring `UringIOManager` creates (plain runs, and the guest-mode ring that
``_start`` makes) goes through `open_ring`: created disabled, restricted to
`allowed()` (what the backend submits, `BACKEND_OPCODES` & co., plus what was
declared with `allow_opcodes` / `allow_sqe_flags` / `allow_register_ops` before
the ring was created), then enabled. Opcodes the kernel does not support are left
out of the list (the kernel refuses the whole list if one is unknown to it; such an
op fails with EINVAL anyway).

Support is found out by trying: if the kernel refuses R_DISABLED, the restriction
list or ENABLE_RINGS (an old kernel, a seccomp filter), the run gets an
unrestricted ring and `RingRestrictions.reason` says why. The cost is two
io_uring_register calls per ring (measured in docs/source/security.rst). Opt out
with ``UringIOManager.restrict = False`` or ``TRIO_URING_RESTRICT=0``.
"""

from __future__ import annotations

import errno
import functools
import operator
import os
from typing import Final

import attrs

from ._config import env_flag
from ._ops import OPS
from ._ring import (
    IOSQE_ASYNC,
    IOSQE_BUFFER_SELECT,
    IOSQE_CQE_SKIP_SUCCESS,
    IOSQE_FIXED_FILE,
    IOSQE_IO_DRAIN,
    IOSQE_IO_HARDLINK,
    IOSQE_IO_LINK,
    Opcode,
    Ring,
    UringUnavailableError,
)
from ._ring_cffi import ffi

__all__ = [
    "BACKEND_OPCODES",
    "BACKEND_REGISTER_OPS",
    "BACKEND_SQE_FLAGS",
    "Allowlist",
    "RingRestrictions",
    "allow_opcodes",
    "allow_register_ops",
    "allow_sqe_flags",
    "allowed",
    "current_state",
    "open_ring",
    "restrict_enabled",
]

# Setup flag, register opcodes, restriction kinds: the uapi values
# (include/uapi/linux/io_uring.h), defined here so no header version matters.
SETUP_R_DISABLED: Final = 1 << 6  # 5.10

REGISTER_PROBE: Final = 8
REGISTER_RESTRICTIONS: Final = 11  # 5.10
REGISTER_ENABLE_RINGS: Final = 12  # 5.10
REGISTER_RING_FDS: Final = 20  # 5.18
UNREGISTER_RING_FDS: Final = 21  # 5.18
REGISTER_PBUF_RING: Final = 22  # 5.19
UNREGISTER_PBUF_RING: Final = 23  # 5.19
REGISTER_FILES2: Final = 13  # 5.13 (IORING_RSRC_REGISTER_SPARSE: 5.19)
REGISTER_PBUF_STATUS: Final = 26  # 6.8

RESTRICTION_REGISTER_OP: Final = 0
RESTRICTION_SQE_OP: Final = 1
RESTRICTION_SQE_FLAGS_ALLOWED: Final = 2
RESTRICTION_SQE_FLAGS_REQUIRED: Final = 3

SQE_FLAG_NAMES: Final = {
    IOSQE_FIXED_FILE: "IOSQE_FIXED_FILE",
    IOSQE_IO_DRAIN: "IOSQE_IO_DRAIN",
    IOSQE_IO_LINK: "IOSQE_IO_LINK",
    IOSQE_IO_HARDLINK: "IOSQE_IO_HARDLINK",
    IOSQE_ASYNC: "IOSQE_ASYNC",
    IOSQE_BUFFER_SELECT: "IOSQE_BUFFER_SELECT",
    IOSQE_CQE_SKIP_SUCCESS: "IOSQE_CQE_SKIP_SUCCESS",
}
REGISTER_OP_NAMES: Final = {
    REGISTER_PROBE: "IORING_REGISTER_PROBE",
    REGISTER_PBUF_RING: "IORING_REGISTER_PBUF_RING",
    UNREGISTER_PBUF_RING: "IORING_UNREGISTER_PBUF_RING",
    REGISTER_RING_FDS: "IORING_REGISTER_RING_FDS",
    UNREGISTER_RING_FDS: "IORING_UNREGISTER_RING_FDS",
    REGISTER_FILES2: "IORING_REGISTER_FILES2",
    REGISTER_PBUF_STATUS: "IORING_REGISTER_PBUF_STATUS",
}

# ---------------------------------------------------------------- the allowlist
#
# What the backend itself submits, derived from the ops table (trio_uring/_ops.py,
# where every op is declared once). docs/source/security.rst lists them; a test
# checks the page against these.

#: The SQE opcodes the backend submits: every op's, and NOP (tu_submit_sync turns
#: an SQE the kernel did not take into a NOP).
BACKEND_OPCODES: Final = frozenset({Opcode.NOP} | {op.opcode for op in OPS if not op.opt_in})
#: Opcodes of ops that are allowed only once the module using them declares them
#: (`trio_uring.direct`: URING_CMD, for setsockopt on a direct socket).
OPT_IN_OPCODES: Final = frozenset(op.opcode for op in OPS if op.opt_in)
#: The SQE flags its ops set (provided-buffer receives, cancels whose success
#: posts no CQE).
BACKEND_SQE_FLAGS: Final = functools.reduce(operator.or_, (op.sqe_flags for op in OPS), 0)
#: The io_uring_register opcodes it calls on an enabled ring: the opcode probe,
#: the provided-buffer ring's set-up and teardown, dropping the ring fd's
#: registration when the ring closes (it is registered before the ring is enabled),
#: and the sparse file table of direct descriptors (trio_uring.direct), registered
#: when a run makes its first one; reading a send ring's kernel head (trio_uring.bundles).
BACKEND_REGISTER_OPS: Final = frozenset(
    {REGISTER_PROBE, REGISTER_PBUF_RING, UNREGISTER_PBUF_RING, UNREGISTER_RING_FDS, REGISTER_FILES2}
    | {REGISTER_PBUF_STATUS}
)
#: Those it calls while the ring is still disabled, before the restrictions hold.
SETUP_REGISTER_OPS: Final = frozenset({REGISTER_RESTRICTIONS, REGISTER_ENABLE_RINGS, REGISTER_RING_FDS})

# Declared by users of the low-level op API, for rings created after the call.
_extra_opcodes: set[int] = set()
_extra_sqe_flags = 0
_extra_register_ops: set[int] = set()


def _check_byte(kind: str, value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{kind} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 255:
        raise ValueError(f"{kind} must be in 0..255, not {value}")
    return int(value)


def allow_opcodes(*opcodes: int) -> None:
    """Allow these SQE opcodes (``IORING_OP_*`` values, e.g. ``Opcode.SHUTDOWN``) on
    every ring created from now on in this process. Call before the run starts: a
    ring's list is fixed when it is created."""
    checked = [_check_byte("an opcode", op) for op in opcodes]
    _extra_opcodes.update(checked)


def allow_sqe_flags(flags: int) -> None:
    """Allow these ``IOSQE_*`` flags (a bitmask) on rings created from now on."""
    global _extra_sqe_flags
    _extra_sqe_flags |= _check_byte("SQE flags", flags)


def allow_register_ops(*opcodes: int) -> None:
    """Allow these ``io_uring_register`` opcodes on rings created from now on."""
    checked = [_check_byte("a register opcode", op) for op in opcodes]
    _extra_register_ops.update(checked)


@attrs.frozen
class Allowlist:
    """What a restricted ring lets through."""

    opcodes: frozenset[int]
    sqe_flags: int
    register_ops: frozenset[int]


def allowed() -> Allowlist:
    """What rings created now allow: the backend's own list plus the declared extras."""
    return Allowlist(
        opcodes=BACKEND_OPCODES | frozenset(_extra_opcodes),
        sqe_flags=BACKEND_SQE_FLAGS | _extra_sqe_flags,
        register_ops=BACKEND_REGISTER_OPS | frozenset(_extra_register_ops),
    )


# ---------------------------------------------------------------- opening a ring


@attrs.frozen
class RingRestrictions:
    """Whether a ring is restricted, and to what (or why not)."""

    active: bool
    #: Why the ring is not restricted ("" when it is).
    reason: str = ""
    #: What it allows, when active.
    allowlist: Allowlist | None = None

    def describe(self) -> str:
        if not self.active or self.allowlist is None:
            return f"off: {self.reason}"
        a = self.allowlist
        ops = ", ".join(_opcode_name(op) for op in sorted(a.opcodes))
        flags = " | ".join(name for bit, name in SQE_FLAG_NAMES.items() if a.sqe_flags & bit) or "none"
        regs = ", ".join(REGISTER_OP_NAMES.get(op, f"register opcode {op}") for op in sorted(a.register_ops))
        return f"on: {len(a.opcodes)} opcodes ({ops}); SQE flags {flags}; register: {regs}"


def _opcode_name(value: int) -> str:
    try:
        return Opcode(value).name
    except ValueError:
        return f"OP_{value}"


def restrict_enabled(default: bool) -> bool:
    """``default`` (the UringIOManager.restrict attribute), unless TRIO_URING_RESTRICT
    says otherwise (ValueError naming it for a value that is not a yes or a no)."""
    return env_flag("TRIO_URING_RESTRICT", default)


# The opcodes this kernel supports: probed once per process (the kernel does not change).
_supported: frozenset[int] | None = None


def _kernel_supported(ring: Ring) -> frozenset[int]:
    global _supported
    if _supported is None:
        _supported = frozenset(int(op) for op in ring.probe())
    return _supported


@functools.lru_cache(maxsize=8)  # the kernel copies it; built once per allowlist
def _restrictions_array(allow: Allowlist) -> tuple[object, int]:
    entries = [(RESTRICTION_SQE_OP, op) for op in sorted(allow.opcodes)]
    entries += [(RESTRICTION_REGISTER_OP, op) for op in sorted(allow.register_ops)]
    entries.append((RESTRICTION_SQE_FLAGS_ALLOWED, allow.sqe_flags))
    array = ffi.new("struct io_uring_restriction[]", len(entries))
    for i, (kind, value) in enumerate(entries):
        array[i].opcode = kind
        array[i].sqe_op = value  # a union with register_op and sqe_flags
    return array, len(entries)


def _refused(what: str, rc: int) -> str:
    err = -rc
    return f"the kernel refused {what} ({errno.errorcode.get(err, str(err))}: {os.strerror(err)})"


def open_ring(
    sq_entries: int,
    cq_entries: int,
    *,
    coop_taskrun: bool = False,
    register_fd: bool = False,
    restrict: bool = True,
) -> tuple[Ring, RingRestrictions]:
    """A new, enabled `Ring`, restricted to `allowed()` if ``restrict`` and the kernel
    lets us; and what came of the restriction. ``coop_taskrun``, ``register_fd``: as
    for `Ring`."""
    flags = {"coop_taskrun": coop_taskrun, "register_fd": register_fd}
    if not restrict:
        return Ring(sq_entries, cq_entries, **flags), RingRestrictions(
            False, "turned off (UringIOManager.restrict = False, or TRIO_URING_RESTRICT=0)"
        )
    try:
        ring = Ring(sq_entries, cq_entries, **flags, extra_flags=SETUP_R_DISABLED)
    except UringUnavailableError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # Perhaps only R_DISABLED is too new; if the plain ring fails too, that is the error.
        ring = Ring(sq_entries, cq_entries, **flags)
        return ring, RingRestrictions(False, _refused("IORING_SETUP_R_DISABLED", -errno.EINVAL))
    try:
        allow = allowed()
        allow = attrs.evolve(allow, opcodes=allow.opcodes & _kernel_supported(ring))
        array, n = _restrictions_array(allow)
        rc = ring.register(REGISTER_RESTRICTIONS, array, n)
        if rc < 0:
            state = RingRestrictions(False, _refused("IORING_REGISTER_RESTRICTIONS", rc))
        else:
            state = RingRestrictions(True, allowlist=allow)
        rc = ring.register(REGISTER_ENABLE_RINGS, ffi.NULL, 0)
        if rc < 0:
            # A disabled ring takes no SQE: start again without R_DISABLED.
            ring.close()
            ring = Ring(sq_entries, cq_entries, **flags)
            state = RingRestrictions(False, _refused("IORING_REGISTER_ENABLE_RINGS", rc))
    except BaseException:
        ring.close()
        raise
    return ring, state


def current_state(default: bool) -> RingRestrictions:
    """What a run started now would get (``default``: UringIOManager.restrict), found
    by opening and closing a small ring the same way (for ``python -m trio_uring check``).
    Raises `UringUnavailableError` if io_uring cannot be used at all."""
    ring, state = open_ring(8, 16, coop_taskrun=True, restrict=restrict_enabled(default))
    ring.close()
    return state
