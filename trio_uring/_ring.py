"""The io_uring ring, as seen from Python: set-up, feature checks, submit/wait/reap.

`Ring` wraps the C layer (``_ring.c`` through cffi). It owns the mappings and the
ring fd, knows what the kernel supports, and is the one place where a negated errno
becomes a Python exception (`os_error`, `UringUnavailableError`). It has no idea
what an op means; that is `trio_uring._lifecycle`'s job.

The SQE writers are ``ring.write.<op>(...)`` (``_ring_writers.Writers``, generated
from ``_ring_api.py``): the C functions with the ring already bound. Each returns 0,
or a negated errno that the caller hands to `Ring.raise_prep_error`. Only
`trio_uring._lifecycle` calls them.
"""

from __future__ import annotations

import enum
import errno
import math
import os
import weakref
from functools import partial
from typing import Final, NoReturn

from ._ring_cffi import ffi, lib
from ._ring_writers import Writers

__all__ = ["BufferRing", "Opcode", "Ring", "UringUnavailableError", "opcode_name", "os_error"]


class Opcode(enum.IntEnum):
    """``enum io_uring_op`` (include/uapi/linux/io_uring.h), up to Linux 6.18.

    The machine's header may be older: these are the kernel's numbers, and
    whether the running kernel has one is asked at run time (`Ring.probe`)."""

    NOP = 0
    READV = 1
    WRITEV = 2
    FSYNC = 3
    READ_FIXED = 4
    WRITE_FIXED = 5
    POLL_ADD = 6
    POLL_REMOVE = 7
    SYNC_FILE_RANGE = 8
    SENDMSG = 9
    RECVMSG = 10
    TIMEOUT = 11
    TIMEOUT_REMOVE = 12
    ACCEPT = 13
    ASYNC_CANCEL = 14
    LINK_TIMEOUT = 15
    CONNECT = 16
    FALLOCATE = 17
    OPENAT = 18
    CLOSE = 19
    FILES_UPDATE = 20
    STATX = 21
    READ = 22
    WRITE = 23
    FADVISE = 24
    MADVISE = 25
    SEND = 26
    RECV = 27
    OPENAT2 = 28
    EPOLL_CTL = 29
    SPLICE = 30
    PROVIDE_BUFFERS = 31
    REMOVE_BUFFERS = 32
    TEE = 33
    SHUTDOWN = 34
    RENAMEAT = 35
    UNLINKAT = 36
    MKDIRAT = 37
    SYMLINKAT = 38
    LINKAT = 39
    MSG_RING = 40
    FSETXATTR = 41
    SETXATTR = 42
    FGETXATTR = 43
    GETXATTR = 44
    SOCKET = 45
    URING_CMD = 46
    SEND_ZC = 47
    SENDMSG_ZC = 48
    READ_MULTISHOT = 49
    WAITID = 50
    FUTEX_WAIT = 51
    FUTEX_WAKE = 52
    FUTEX_WAITV = 53
    FIXED_FD_INSTALL = 54
    FTRUNCATE = 55
    BIND = 56
    LISTEN = 57
    RECV_ZC = 58
    EPOLL_WAIT = 59
    READV_FIXED = 60
    WRITEV_FIXED = 61
    PIPE = 62


# Setup flags (io_uring_setup(2)).
SETUP_CLAMP: Final = 1 << 4
SETUP_SUBMIT_ALL: Final = 1 << 7  # 5.18
SETUP_COOP_TASKRUN: Final = 1 << 8  # 5.19
SETUP_TASKRUN_FLAG: Final = 1 << 9  # 5.19

# Feature bits (io_uring_params.features).
FEAT_NODROP: Final = 1 << 1
FEAT_SUBMIT_STABLE: Final = 1 << 2
FEAT_FAST_POLL: Final = 1 << 5
FEAT_EXT_ARG: Final = 1 << 8
FEAT_CQE_SKIP: Final = 1 << 11
# Sends from provided buffers and send/recv bundles (6.10). The send man pages call
# it IORING_FEAT_SEND_BUF_SELECT; the header's name is this one.
FEAT_RECVSEND_BUNDLE: Final = 1 << 14

# What this backend cannot work without, and the first kernel that has it.
REQUIRED_FEATURES: Final = {
    "NODROP": (FEAT_NODROP, "5.5"),
    "SUBMIT_STABLE": (FEAT_SUBMIT_STABLE, "5.5"),
    "FAST_POLL": (FEAT_FAST_POLL, "5.7"),
    "EXT_ARG": (FEAT_EXT_ARG, "5.11"),
}
REQUIRED_OPCODES: Final = (Opcode.POLL_ADD, Opcode.ASYNC_CANCEL, Opcode.READ)

# CQE flags.
CQE_F_BUFFER: Final = 1 << 0
CQE_F_MORE: Final = 1 << 1
CQE_BUFFER_SHIFT: Final = 16

# SQE flags (IOSQE_*).
IOSQE_FIXED_FILE: Final = 1 << 0
IOSQE_IO_DRAIN: Final = 1 << 1
IOSQE_IO_LINK: Final = 1 << 2
IOSQE_IO_HARDLINK: Final = 1 << 3
IOSQE_ASYNC: Final = 1 << 4
IOSQE_BUFFER_SELECT: Final = 1 << 5
IOSQE_CQE_SKIP_SUCCESS: Final = 1 << 6

SYNC_USER_DATA: Final[int] = lib.TU_SYNC_USER_DATA
NOT_SUBMITTED: Final[int] = lib.TU_ERR_NOT_SUBMITTED

# ASYNC_CANCEL flags.
ASYNC_CANCEL_ANY: Final = 1 << 2

TU_ERR_FORKED: Final[int] = lib.TU_ERR_FORKED


class UringUnavailableError(OSError):
    """io_uring cannot be used here: the kernel, a sysctl or a seccomp filter refuses it.

    ``errno`` is the error ``io_uring_setup(2)`` returned (EPERM, ENOSYS, ...), or
    ENOSYS when the kernel lacks a feature this backend needs. The message names the
    likely cause and the fix. `trio_uring.install(fallback=True)` turns this into a
    warning and leaves Trio on epoll.
    """


def os_error(err: int, context: str | None = None) -> OSError:
    """The OSError (subclass chosen by errno, like ``socket`` does) for a CQE's ``-res``."""
    message = os.strerror(err)
    if context is not None:
        message = f"{context}: {message}"
    return OSError(err, message)


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _seccomp_mode() -> str | None:
    status = _read_text("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("Seccomp:"):
            return line.split()[1]
    return None


def unavailable_error(err: int) -> UringUnavailableError:
    """Explain why ``io_uring_setup`` failed with ``err``, and what to do about it."""
    name = errno.errorcode.get(err, str(err))
    head = f"io_uring is unavailable: io_uring_setup() failed with {name} ({os.strerror(err)})."
    fallback = (
        "To run on Trio's epoll backend instead, use trio.run, or "
        "trio_uring.install(fallback=True)."
    )
    if err == errno.EPERM:
        disabled = _read_text("/proc/sys/kernel/io_uring_disabled")
        seccomp = _seccomp_mode()
        causes = []
        if disabled in ("1", "2"):
            causes.append(
                f"the sysctl kernel.io_uring_disabled is {disabled} "
                "(1: only CAP_SYS_ADMIN or kernel.io_uring_group may use io_uring; "
                "2: nobody may); fix: sysctl -w kernel.io_uring_disabled=0"
            )
        if seccomp == "2" or not causes:
            causes.append(
                "a seccomp filter refuses io_uring_setup (Docker's, containerd's and "
                "most Kubernetes default profiles do"
                + (", and this process runs under one" if seccomp == "2" else "")
                + "); fix: run the container with a seccomp profile that allows "
                "io_uring_setup, io_uring_enter and io_uring_register "
                "(docker run --security-opt seccomp=PROFILE.json)"
            )
        detail = "Likely cause: " + "; or ".join(causes) + "."
    elif err == errno.ENOSYS:
        detail = (
            "Likely cause: the kernel was built without io_uring (CONFIG_IO_URING=n), "
            "or a seccomp filter answers ENOSYS; trio_uring needs Linux >= 6.1 with "
            "io_uring enabled."
        )
    elif err == errno.ENOMEM:
        detail = (
            "Likely cause: RLIMIT_MEMLOCK is too low (kernels <= 5.11 charge ring memory "
            "to it); fix: raise `ulimit -l`, or use Linux >= 5.12."
        )
    elif err == errno.EINVAL:
        detail = "Likely cause: the kernel is too old for the ring set-up trio_uring asks for (needs Linux >= 6.1)."
    else:
        detail = "trio_uring needs Linux >= 6.1 with io_uring enabled."
    return UringUnavailableError(err, f"{head} {detail} {fallback}")


# Rings alive in this process, so a fork() child can mark them unusable.
_live_rings: weakref.WeakSet[Ring] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ring in list(_live_rings):
        lib.tu_ring_mark_forked(ring._r)


os.register_at_fork(after_in_child=_after_fork_in_child)


class Ring:
    """One io_uring instance: SQ, CQ and the SQE array, mapped into this process."""

    def __init__(
        self,
        sq_entries: int,
        cq_entries: int,
        *,
        coop_taskrun: bool = False,
        register_fd: bool = False,
        extra_flags: int = 0,
    ) -> None:
        """``coop_taskrun``: run completion work only when this thread enters the
        kernel, instead of interrupting it (IORING_SETUP_COOP_TASKRUN, with
        TASKRUN_FLAG to tell us when such work is pending). Only for rings whose
        submitting thread also waits for completions. ``register_fd``: enter the
        ring by a registered index (IORING_REGISTER_RING_FDS), which spares the
        kernel an fd lookup per enter; the registration is this thread's, so only
        for a ring no other thread enters. ``extra_flags``: more setup flags, added
        to every attempt (trio_uring._restrict: R_DISABLED)."""
        if not 1 <= sq_entries <= 32768:
            raise ValueError(f"sq_entries must be between 1 and 32768, not {sq_entries}")
        if cq_entries < sq_entries:
            raise ValueError(f"cq_entries ({cq_entries}) must be at least sq_entries ({sq_entries})")
        self._r = ffi.new("struct tu_ring *")
        rc = -errno.EINVAL
        # SUBMIT_ALL (5.18) keeps a batch going past an SQE that fails to prep,
        # so one bad fd cannot strand the SQEs behind it. CLAMP caps sizes.
        # Older kernels refuse flags they don't know with EINVAL: try fewer.
        candidates = [SETUP_SUBMIT_ALL | SETUP_CLAMP, SETUP_CLAMP]
        if coop_taskrun:
            coop = SETUP_COOP_TASKRUN | SETUP_TASKRUN_FLAG
            candidates = [flags | coop for flags in candidates] + candidates
        for flags in candidates:
            rc = lib.tu_ring_setup(self._r, sq_entries, cq_entries, flags | extra_flags)
            if rc != -errno.EINVAL:
                break
        if rc < 0:
            raise unavailable_error(-rc)
        _live_rings.add(self)
        self.closed = False
        try:
            self._check_features()
        except BaseException:
            self.close()
            raise
        r = self._r
        # Before restrictions are enabled (a restricted ring refuses the register
        # op); a kernel that cannot is no reason to fail: enters go by the fd.
        #: Whether io_uring_enter names this ring by a registered index.
        self.fd_registered = register_fd and lib.tu_register_ring_fd(r) == 0
        self.fd: int = r.fd
        self.features: int = r.features
        self.sq_entries: int = r.sq_entries
        self.cq_entries: int = r.cq_entries

        self._reap_max: int = r.cq_entries
        self._reap_buf = ffi.new("int64_t[]", 3 * self._reap_max)

        #: Successful cancels post no CQE (IOSQE_CQE_SKIP_SUCCESS, 5.17).
        self.cqe_skip = bool(self.features & FEAT_CQE_SKIP)
        self.write = Writers(r)
        self.cq_ready = partial(lib.tu_cq_ready, r)
        self.submit_sync = partial(lib.tu_submit_sync, r)
        self.send_now = partial(lib.tu_send_now, r)
        self.recv_now = partial(lib.tu_recv_now, r)
        self._enter_wait = partial(lib.tu_enter_wait, r)

    def _check_features(self) -> None:
        missing = [
            f"{name} (Linux {version})"
            for name, (bit, version) in REQUIRED_FEATURES.items()
            if not self._r.features & bit
        ]
        supported = self.probe()
        missing += [f"IORING_OP_{op.name}" for op in REQUIRED_OPCODES if op not in supported]
        if missing:
            raise UringUnavailableError(
                errno.ENOSYS,
                "io_uring is too old on this kernel: trio_uring needs "
                + ", ".join(missing)
                + " (Linux >= 6.1 has everything). To run on Trio's epoll backend "
                "instead, use trio.run, or trio_uring.install(fallback=True).",
            )

    def probe(self) -> frozenset[Opcode | int]:
        """The opcodes this kernel supports (IORING_REGISTER_PROBE)."""
        self._check_open()
        supported = ffi.new("uint8_t[]", lib.TU_MAX_OPCODES)
        rc = lib.tu_ring_probe(self._r, supported, lib.TU_MAX_OPCODES)
        if rc < 0:
            self.raise_prep_error(rc)
        return frozenset(_opcode(i) for i in range(lib.TU_MAX_OPCODES) if supported[i])

    @property
    def setup_flags(self) -> int:
        return int(self._r.setup_flags)

    def ops_submitted(self) -> dict[str, int]:
        """SQEs written since set-up, by opcode name."""
        counts = self._r.ops_submitted
        return {opcode_name(i): counts[i] for i in range(lib.TU_MAX_OPCODES) if counts[i]}

    def submit(self) -> int:
        """Hand every written SQE to the kernel now. Returns how many it took."""
        rc = lib.tu_submit(self._r)
        if rc < 0:
            self.raise_prep_error(rc)
        return rc

    def wait(self, timeout: float, *, submit: bool = True) -> int:
        """Submit (unless ``submit=False``), then wait up to ``timeout`` seconds for a CQE.

        Returns the number of CQEs ready (0: the timeout expired), or a negated errno
        (-EINTR when a signal arrived: return to Python so its handler can run).
        Positive timeouts are rounded up to the next nanosecond so a wait never
        ends before Trio's deadline.
        """
        timeout_ns = math.ceil(timeout * 1e9) if timeout > 0 else 0
        return self._enter_wait(submit, timeout_ns)

    def reap(self) -> list[int]:
        """Take every ready CQE off the CQ: a flat list of (user_data, res, flags) triples."""
        n = lib.tu_reap(self._r, self._reap_buf, self._reap_max)
        if n <= 0:
            if n < 0:
                self.raise_prep_error(n)
            return []
        cqes: list[int] = ffi.unpack(self._reap_buf, 3 * n)
        return cqes

    @property
    def reap_batch(self) -> int:
        """Most CQEs one `reap` returns."""
        return self._reap_max

    def raise_prep_error(self, rc: int) -> NoReturn:
        if rc == TU_ERR_FORKED:
            raise RuntimeError(
                "trio_uring: this io_uring belongs to the parent process; a fork() child "
                "cannot use its parent's Trio run (start a new trio_uring.run in the child)"
            )
        if rc == -errno.EBUSY:
            raise os_error(errno.EBUSY, "io_uring submission queue is full and the kernel took no entries")
        raise os_error(-rc, "io_uring")

    def register(self, opcode: int, arg: object, nr_args: int) -> int:
        """io_uring_register(2) on this ring: its result, or a negated errno."""
        return lib.tu_register(self._r, opcode, arg, nr_args)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("trio_uring: the ring is closed")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _live_rings.discard(self)
            lib.tu_ring_teardown(self._r)


class BufferRing:
    """Provided buffers (IORING_REGISTER_PBUF_RING): the kernel picks one when data
    arrives for an op submitted with IOSQE_BUFFER_SELECT, so a waiting receive holds
    no memory. `take` copies a CQE's bytes out and gives its buffers back.

    The kernel takes buffers in *ring order* (the order we gave them back), not id
    order: a CQE names only the first buffer it used, and a bundle's others are the
    entries after it. So the ring's order is kept here (``_slot_bid``, ``_bid_pos``)
    and buffers are given back in that order only (``_head``): a CQE handled out of
    ring order parks its span in ``_done`` until the ones before it are back, so no
    entry is rewritten while a buffer it names may still hold unread bytes.
    """

    def __init__(self, ring: Ring, bgid: int, entries: int, size: int) -> None:
        self._ring = ring
        self._pb = ffi.new("struct tu_pbuf *")
        rc = lib.tu_pbuf_setup(ring._r, self._pb, bgid, entries, size, 0)
        if rc < 0:
            ring.raise_prep_error(rc)
        self.bgid = bgid
        self.entries = entries
        self.size = size
        #: Set by the driver: whether its waiting stream receives are bundles.
        self.bundle = False
        self._bufs = self._pb.bufs
        self._recycle = partial(lib.tu_pbuf_recycle, self._pb)
        self._left = partial(lib.tu_pbuf_left, self._pb)
        self._mask = entries - 1
        # tu_pbuf_setup gave buffer i the ring position i.
        self._slot_bid = list(range(entries))  # position & mask -> buffer id
        self._bid_pos = list(range(entries))  # buffer id -> its (absolute) position
        self._head = 0  # the first position not yet given back
        self._tail = entries
        self._done: dict[int, int] = {}  # position -> buffers used, for CQEs handled out of ring order

    def take(self, flags: int, res: int, limit: int, bundle: bool = False) -> bytes:
        """The bytes a receive CQE with these ``flags`` and ``res`` delivered (never
        more than the buffers hold, nor than ``limit``); the buffers it used up go
        back to the kernel. ``bundle``: the op was a RECV with IORING_RECVSEND_BUNDLE."""
        if not flags & CQE_F_BUFFER:
            return b""
        bid = flags >> CQE_BUFFER_SHIFT
        pos = self._bid_pos[bid]
        head = self._head
        size = self.size
        if not bundle and pos == head:
            # The usual CQE: one buffer, the next in ring order. Never copy more than
            # the buffer holds, whatever the kernel reports (MSG_TRUNC reports the
            # length the data had, not what was written).
            n = res if res < limit else limit
            data: bytes = ffi.unpack(self._bufs + bid * size, n if n < size else size) if n > 0 else b""
            if self._done:
                self._used(pos, 1)
            else:  # _give_back(1), inlined: this is every waiting receive's path
                self._recycle(bid)
                tail = self._tail
                self._slot_bid[tail & self._mask] = bid
                self._bid_pos[bid] = tail
                self._tail = tail + 1
                self._head = head + 1
            return data
        if pos < head:
            raise RuntimeError(f"trio_uring: the kernel reported buffer {bid}, which it had given back")
        n = min(res, limit)
        if not bundle:
            data = ffi.unpack(self._bufs + bid * size, min(n, size)) if n > 0 else b""
            self._used(pos, 1)
            return data
        if res <= 0:
            return b""  # the kernel used no buffer (io_bundle_nbufs: none for no data)
        # A bundle fills the entries from ``pos`` on, in ring order, each up to the
        # length in its entry: the kernel may have cut an entry short (to the
        # bytes queued when it looked), and that cut stays in the entry.
        slot_bid = self._slot_bid
        left = self._left
        pieces = []
        used = 0
        remaining = res
        while remaining > 0:
            b = slot_bid[(pos + used) & self._mask]
            room = min(left(pos + used), size)
            if room == 0:
                raise RuntimeError(f"trio_uring: a receive bundle reported more bytes than its buffers hold ({res})")
            if n > 0:
                pieces.append(ffi.unpack(self._bufs + b * size, min(n, room)))
                n -= room
            remaining -= room
            used += 1
        self._used(pos, used)
        return b"".join(pieces)

    def _used(self, pos: int, n: int) -> None:
        """The ``n`` buffers from ring position ``pos`` on are read: give them back
        once every buffer before them is."""
        if pos != self._head:
            self._done[pos] = n
            return
        done = self._done
        while True:
            self._give_back(n)
            if not done:
                return
            n = done.pop(self._head, 0)
            if not n:
                return

    def _give_back(self, n: int) -> None:
        slot_bid = self._slot_bid
        mask = self._mask
        head = self._head
        tail = self._tail
        for _ in range(n):
            bid = slot_bid[head & mask]
            head += 1
            self._recycle(bid)  # the C layer writes it at its tail: the same position as ours
            slot_bid[tail & mask] = bid
            self._bid_pos[bid] = tail
            tail += 1
        self._head = head
        self._tail = tail

    def kernel_head(self) -> int | None:
        """The kernel's head (IORING_REGISTER_PBUF_STATUS, 6.8), low 16 bits; None if unknown."""
        rc = lib.tu_pbuf_head(self._ring._r, self._pb)
        return None if rc < 0 else rc

    def in_step(self) -> bool:
        """Whether the ring the kernel reads names the buffers our copy of its order
        does, from our head to our tail (for tests: once every CQE is taken, every
        buffer is there once)."""
        bids = [lib.tu_pbuf_bid(self._pb, pos) for pos in range(self._head, self._tail)]
        mirror = [self._slot_bid[pos & self._mask] for pos in range(self._head, self._tail)]
        return bids == mirror and not self._done

    @property
    def head(self) -> int:
        """Our head: the buffers given back so far (the kernel's head, once every CQE is taken)."""
        return self._head

    def close(self) -> None:
        lib.tu_pbuf_teardown(self._ring._r, self._pb)


def _opcode(value: int) -> Opcode | int:
    try:
        return Opcode(value)
    except ValueError:
        return value


def opcode_name(value: int) -> str:
    op = _opcode(value)
    return op.name if isinstance(op, Opcode) else f"OP_{value}"
