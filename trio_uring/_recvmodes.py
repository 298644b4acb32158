"""How waiting stream receives use the driver's provided-buffer ring: the receive modes.

* ``select``: one RECV, one buffer (IOSQE_BUFFER_SELECT, 5.19): `trio_uring._ops.RecvSelect`.
* ``bundle``: one RECV may fill several buffers (IORING_RECVSEND_BUNDLE, 6.10,
  IORING_FEAT_RECVSEND_BUNDLE): `trio_uring._ops.RecvBundle`, so a receive of 64 KiB
  is one completion even with 16 KiB buffers.

There is no incremental mode (IOU_PBUF_RING_INC): with many receives sharing one
buffer group, a CQE does not say at which offset of a shared buffer its bytes are,
and completions do not arrive in the order the kernel consumed the pieces (see
docs/source/bundles.rst, "Why there is no incremental mode").

The mode comes from ``UringIOManager.recv_mode``, or ``TRIO_URING_RECV_MODE``. Receive
bundles had data-order and buffer-accounting bugs fixed between 6.13 and 2026 that
no feature bit tells apart, so before a driver uses them, a self-check (once per
process, run when the IOManager is created) receives a known byte stream through a
private ring the same way and compares it byte for byte, and our ring head with
the kernel's. A kernel that lacks the feature, fails the check, or cannot run it
(any OSError, e.g. EMFILE) gets ``select``: `Driver.recv_mode` says which mode a
run ended up with.
"""

from __future__ import annotations

import errno
import functools
import os
import random
import socket
from typing import Final

from ._ring import FEAT_RECVSEND_BUNDLE, IOSQE_BUFFER_SELECT, BufferRing, Ring
from ._ring_cffi import ffi

__all__ = ["RECV_MODES", "open_recv_buffers", "recv_mode_from_environment", "self_check", "usable_recv_mode"]

RECV_MODES: Final = ("select", "bundle")
_RECVSEND_BUNDLE: Final = 1 << 4  # as _ops.RECVSEND_BUNDLE (this module is below _ops)


def recv_mode_from_environment(default: str) -> str:
    """``TRIO_URING_RECV_MODE`` if set, else ``default``; ValueError for a mode not in RECV_MODES."""
    mode = os.environ.get("TRIO_URING_RECV_MODE", "").strip().lower() or default
    if mode not in RECV_MODES:
        raise ValueError(f"TRIO_URING_RECV_MODE / recv_mode must be one of {', '.join(RECV_MODES)}, not {mode!r}")
    return mode


def usable_recv_mode(ring: Ring, mode: str) -> str:
    """``mode``, or ``select`` where this kernel (``ring``'s) lacks it or fails its
    self-check. `UringIOManager` calls it when it is created, before any receive
    depends on it (the check needs a ring and two sockets of its own)."""
    if mode == "bundle" and not ring.features & FEAT_RECVSEND_BUNDLE:
        mode = "select"
    if mode != "select" and not self_check(mode):
        mode = "select"
    return mode


def open_recv_buffers(ring: Ring, bgid: int, mode: str, entries: int, size: int) -> tuple[BufferRing, str]:
    """The receive buffer ring in ``mode``, or in ``select`` where this kernel lacks
    the mode or fails its self-check; and the mode it is in."""
    mode = usable_recv_mode(ring, mode)
    buffers = BufferRing(ring, bgid, entries, size)
    buffers.bundle = mode == "bundle"
    return buffers, mode


@functools.cache
def self_check(mode: str) -> bool:
    """Whether ``mode`` receives a known stream byte-exact here, with the buffer ring's
    accounting in step with the kernel's. False also if the kernel lacks the mode,
    and on any OSError: a check that cannot run (EMFILE, ENOMEM, ...) did not pass."""
    try:
        return _receive_known_stream(mode)
    except OSError:
        return False


def _receive_known_stream(mode: str, seed: int = 15, rounds: int = 48) -> bool:
    ring = Ring(8, 16)
    buffers: BufferRing | None = None
    pair: tuple[socket.socket, socket.socket] | None = None
    try:
        a, b = pair = _tcp_pair()  # (EMFILE here must still close the ring)
        # Small buffers: bundles span several.
        buffers = BufferRing(ring, 0, 8, 256)
        bundle = mode == "bundle"
        ioprio = _RECVSEND_BUNDLE if bundle else 0
        rng = random.Random(seed)
        sent = bytearray()
        got = bytearray()
        user_data = 1
        i = 0
        eof = False
        while True:  # `rounds` rounds, then receives until the end of the stream
            if i == rounds:
                a.shutdown(socket.SHUT_WR)
            if i >= rounds:
                eof = True
            elif i % 3:  # two in three receives wait for their data; the rest find it there
                chunk = rng.randbytes(rng.randint(1, 1500))
                a.sendall(chunk)
                sent += chunk
            nbytes = rng.choice((7, 100, 300, 700, 2048))
            rc = ring.write.recv(b.fileno(), ffi.NULL, nbytes, 0, IOSQE_BUFFER_SELECT, 0, ioprio, user_data)
            if rc:
                ring.raise_prep_error(rc)
            if i % 3 == 0 and not eof:
                ring.submit()
                chunk = rng.randbytes(rng.randint(1, 1500))
                a.sendall(chunk)
                sent += chunk
            cqes: list[int] = []
            while not cqes:
                n = ring.wait(1.0)
                if n == 0:
                    return False  # the receive never completed
                cqes = ring.reap()
            if len(cqes) != 3 or cqes[0] != user_data:
                return False
            res, flags = cqes[1], cqes[2]
            user_data += 1
            if res == -errno.ENOBUFS:
                return False
            # A bundle may go past nbytes (the kernel appends what is queued; the
            # op keeps the surplus for the next receive); the others may not.
            if res < 0 or (res > nbytes and not bundle):
                return False
            data = buffers.take(flags, res, res, bundle=bundle)
            if len(data) != res:
                return False
            got += data
            i += 1
            if eof and not res:
                break
            # Read what is left over now and then, so the stream keeps moving.
            while not eof and i % 5 == 4 and len(got) < len(sent):
                more = b.recv(len(sent) - len(got))
                got += more
        head = buffers.kernel_head()
        in_step = head is None or head == buffers.head & 0xFFFF
        return bytes(got) == bytes(sent) and in_step
    finally:
        for sock in pair or ():
            sock.close()
        if buffers is not None:
            buffers.close()
        ring.close()


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair over loopback (what stream receives meet: the kernel's
    bundle logic reads TCP's queue length), or a Unix pair where there is none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            a = socket.create_connection(listener.getsockname())
            b, _ = listener.accept()
            return a, b
    except OSError:
        return socket.socketpair()
