"""Your own io_uring operations, with the guarantees of trio_uring's own.

This is what Trio's ``wait_overlapped`` is for IOCP: describe an operation (its
opcode, its SQE fields, the memory it owns, how its completion becomes a result),
``await perform(op)``, and it goes through the same driver, the same states and
the same rules as every op trio_uring performs itself (`trio_uring._lifecycle`):

* cancellation is IORING_OP_ASYNC_CANCEL, and the op's own CQE decides: a result
  that won the race is returned (the cancel is delivered at the next checkpoint);
  ``-ECANCELED`` raises Trio's Cancelled;
* every buffer the op names is kept alive until its final CQE, whatever happens to
  the task (a task that vanishes abandons the op; `Operation.discard` undoes a
  result nobody took);
* the fd it names is subject to the closed-fd rule: after
  ``trio.lowlevel.notify_closing(fd)`` (``close()`` of a trio_uring socket does
  it), the op raises `trio.ClosedResourceError` instead of reaching whatever file
  takes the number next;
* with ``slot=READ`` / ``WRITE``, one task per direction and fd, as Trio's
  ``wait_readable`` / ``wait_writable`` (`trio.BusyResourceError`).

A minimal example, a sleep the kernel times (IORING_OP_TIMEOUT)::

    import struct, trio, trio_uring
    from trio_uring.lowlevel import Operation, Opcode, perform

    class Timeout(Operation):
        def result(self):
            if self.res == -errno.ETIME:   # the timeout expired: success for a sleep
                return None
            return super().result()

    async def uring_sleep(seconds):
        ts = bytearray(struct.pack("qq", int(seconds), int(seconds % 1 * 1e9)))
        await perform(Timeout(Opcode.TIMEOUT, addr=ts, len=1))

Restricted rings (the default, `trio_uring.UringIOManager.restrict`) refuse
opcodes trio_uring does not use with EACCES: declare yours with `allow_opcodes`
(and `allow_sqe_flags`) before the run starts. ``examples/lowlevel_ops.py`` has
the sleep above and a READ on a pipe.

Sends from a send buffer ring, and send bundles, on any stream socket: `SendRing`
(a queue of your buffers, registered with the kernel), `send_bundle` (one op
sends all of it, in order) and `send_select` (one op sends the next buffer). They
are the ops `trio_uring.bundles` uses (`trio_uring._ops.SendBundle`, over
`trio_uring._sendring`), performed by the same driver with the same guarantees.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any, Protocol

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._iomanager import current_driver
from ._ops import NO_SLOT, READ, WRITE, Op, SendBundle, SendSelect
from ._restrict import allow_opcodes, allow_register_ops, allow_sqe_flags
from ._ring import Opcode
from ._ring_cffi import ffi
from ._sendring import open_send_ring, send_bundles_supported

if TYPE_CHECKING:
    from types import TracebackType

    from ._lifecycle import Driver
    from ._ring_writers import Writers

__all__ = [
    "NO_SLOT",
    "READ",
    "WRITE",
    "Opcode",
    "Operation",
    "SendRing",
    "allow_opcodes",
    "allow_register_ops",
    "allow_sqe_flags",
    "perform",
    "send_bundle",
    "send_bundles_supported",
    "send_select",
]


class Operation(Op):
    """One io_uring operation, described field by field.

    ``fd``: the file the op acts on (an int, or an object with ``fileno()``), or -1.
    ``off``, ``addr``, ``addr3``: an int, or a buffer (bytes-like, or a cffi
    pointer): then its address is written and the buffer is kept until the op's
    final CQE. A writable buffer is needed where the kernel writes (a READ's
    ``addr``). ``len``, ``op_flags`` (the per-opcode flags: ``msg_flags``,
    ``timeout_flags``, ...), ``sqe_flags`` (IOSQE_*), ``ioprio``, ``buf_index``,
    ``file_index``: as in ``struct io_uring_sqe`` (see the opcode's man page,
    ``io_uring_prep_*(3)``). ``keep``: anything else the kernel may touch until the
    CQE. ``slot``: READ or WRITE to take one direction of ``fd`` (NO_SLOT: none).
    ``waits_for_cqe``: False only for an op that owns no memory and changes
    nothing, whose waiter may leave at once when cancelled (a readiness poll).

    Subclass it to turn the CQE into your result: `result` (``self.res``, the CQE's
    res, and ``self.flags``; the default returns ``res``, or raises OSError for a
    negated errno) and `discard` (undo a completed result nobody took: close an fd
    it made). `more` sees the CQEs of a multishot op.
    """

    __slots__ = (
        "addr",
        "addr3",
        "buf_index",
        "file_index",
        "ioprio",
        "keep",
        "len",
        "off",
        "op_flags",
        "opcode",
        "slot",
        "sqe_flags",
        "waits_for_cqe",
    )

    def __init__(
        self,
        opcode: int,
        *,
        fd: Any = -1,
        off: Any = 0,
        addr: Any = 0,
        len: int = 0,
        op_flags: int = 0,
        sqe_flags: int = 0,
        ioprio: int = 0,
        buf_index: int = 0,
        file_index: int = 0,
        addr3: Any = 0,
        keep: object = None,
        slot: int = NO_SLOT,
        waits_for_cqe: bool = True,
    ) -> None:
        super().__init__(fd if isinstance(fd, int) else fd.fileno())
        if not 0 <= opcode <= 255:
            raise ValueError(f"opcode must be 0-255, not {opcode}")
        if slot not in (READ, WRITE, NO_SLOT):
            raise ValueError("slot must be READ, WRITE or NO_SLOT")
        self.opcode = opcode  # type: ignore[misc,assignment]
        held: list[object] = [keep]
        borrowed: list[Any] = []
        try:
            self.off = _address(off, held, borrowed)
            self.addr = _address(addr, held, borrowed)
            self.addr3 = _address(addr3, held, borrowed)
        except BaseException:
            _let_go(borrowed)
            raise
        self.keep = held  # alive as long as the driver's record of the op
        self.len = len
        self.op_flags = op_flags
        # The package's own ops declare these per class; here they are per op.
        self.sqe_flags = sqe_flags  # type: ignore[misc]
        self.slot = slot  # type: ignore[misc]
        self.waits_for_cqe = waits_for_cqe  # type: ignore[misc]
        self.ioprio = ioprio
        self.buf_index = buf_index
        self.file_index = file_index

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(
            self.opcode, self.sqe_flags, self.ioprio, self.fd, self.off, self.addr, self.len,
            self.op_flags, self.buf_index, self.file_index, self.addr3, user_data,
        )  # fmt: skip


def _address(value: Any, held: list[object], borrowed: list[Any]) -> int:
    """An SQE's address field: an int as it is, a buffer's address (buffer kept;
    a borrow of ours also in ``borrowed``)."""
    if isinstance(value, int):
        return value & 0xFFFF_FFFF_FFFF_FFFF
    if isinstance(value, ffi.CData):
        cdata = value
    else:
        try:
            cdata = ffi.from_buffer(value, require_writable=False)
        except TypeError:
            raise TypeError(f"expected an int or a buffer, not {type(value).__name__}") from None
        borrowed.append(cdata)
    held.append(cdata)
    return int(ffi.cast("uintptr_t", cdata))


def _let_go(borrowed: list[Any]) -> None:
    """Release our borrows of the caller's buffers at once, on a refused call: left
    in the cycle a kept traceback makes, the garbage collector may clear a
    memoryview before the borrow of it, and CPython crashes."""
    for cdata in borrowed:
        ffi.release(cdata)


async def perform(op: Op) -> Any:
    """Submit ``op``, wait for its completion, and return `Operation.result`.

    A checkpoint, like Trio's own I/O calls. Raises RuntimeError outside a run on
    the io_uring backend.
    """
    driver = _driver("perform")
    await checkpoint_if_cancelled()
    st = driver.fd(op.fd) if op.fd >= 0 else None
    return await driver.perform(op, st)


def _driver(what: str) -> Driver:
    driver = current_driver()
    if driver is None:
        raise RuntimeError(f"trio_uring.lowlevel.{what} needs a run on the io_uring backend (trio_uring.run)")
    return driver


# ---------------------------------------------------------------- send rings, send bundles


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


class SendRing:
    """A send buffer ring: your buffers, queued in order, for `send_bundle` and `send_select`.

    ``entries``: how many buffers it can hold (a power of two, 1 to 32768). Made in
    a run on the io_uring backend (RuntimeError otherwise), on a kernel that has
    sends from provided buffers (`send_bundles_supported`; OSError ``EOPNOTSUPP``
    otherwise). It registers a provided-buffer ring with a buffer group id of its
    own until `close` (or the end of a ``with`` block, or garbage collection), and
    serves that run only.

    A pushed buffer is not copied: the ring keeps a reference to it (a bytearray
    cannot be resized meanwhile) until a completion reports all of its bytes sent,
    or `clear` or `close` drops it. Do not change its contents before then.
    """

    def __init__(self, entries: int = 256) -> None:
        driver = _driver("SendRing")
        if not send_bundles_supported(driver):
            raise OSError(
                errno.EOPNOTSUPP,
                "trio_uring: this kernel has no sends from provided buffers (IORING_FEAT_RECVSEND_BUNDLE, Linux 6.10)",
            )
        self._driver = driver
        self._ring = open_send_ring(driver, entries)
        self._op: SendSelect | None = None  # the op sending from it, until its final CQE
        self._closed = False
        #: Bytes the kernel reported sent from this ring, by every op so far (also
        #: by one that ended in Cancelled or ClosedResourceError).
        self.bytes_sent = 0

    @property
    def entries(self) -> int:
        return self._ring.entries

    @property
    def queued_bytes(self) -> int:
        """Bytes pushed and not yet reported sent (nor dropped)."""
        return self._ring.queued_bytes

    def room(self) -> int:
        """How many more buffers `push` takes now."""
        return 0 if self._closed else self._ring.room()

    def push(self, buffer: bytes | bytearray | memoryview) -> None:
        """Queue ``buffer`` after those already queued (an empty one is left out).
        `trio.WouldBlock` if the ring is full (`room` is 0); ClosedResourceError
        after `close`. Pushing while an op sends from the ring is allowed: the
        buffer goes out with that op or the next, in order."""
        if self._closed:
            raise trio.ClosedResourceError("this send ring is closed")
        view: Any = buffer if type(buffer) is bytes else ffi.from_buffer(buffer)
        n = len(view)
        try:
            if n > 0xFFFF_FFFF:
                raise ValueError("a send ring entry holds at most 4 GiB - 1")
            if n and not self._ring.room():
                raise trio.WouldBlock
        except BaseException:
            if view is not buffer:
                _let_go([view])
            raise
        if n:
            self._ring.push(view, view, n)

    def clear(self) -> None:
        """Drop every buffer queued and not yet sent (what a short send left, say).
        BusyResourceError while an op sends from the ring."""
        if self._op is not None:
            raise trio.BusyResourceError("an op is sending from this send ring")
        if not self._closed and self._ring.queued():
            self._ring.drop()

    def close(self) -> None:
        """Unregister the ring and give its buffer group id back (once an op sending
        from it has ended); what is still queued is not sent (a `send_bundle` in
        progress raises ClosedResourceError). Idempotent."""
        self._closed = True
        if self._op is None:
            self._ring.close()

    def __enter__(self) -> SendRing:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check(self, driver: Driver) -> None:
        """Whether an op of this run may send from the ring now."""
        if driver is not self._driver:
            raise RuntimeError("a SendRing serves the run that made it")
        if self._closed:
            raise trio.ClosedResourceError("this send ring is closed")
        if self._op is not None:
            raise trio.BusyResourceError("another task is already sending from this send ring")

    def _done(self, op: SendSelect) -> None:
        """After ``op``'s call: count what it sent; what is left goes next, in order."""
        ring = self._ring
        if op.user_data in self._driver.ops:
            # Still in flight (the run is being torn down): the op keeps the ring
            # and its memory; ``_op`` stays set, so nothing touches the ring again.
            self._closed = True
            return
        self._op = None
        self.bytes_sent += op.sent
        if ring.out_of_step is not None:
            self.close()
            raise RuntimeError(f"trio_uring: send ring out of step: {ring.out_of_step}")
        if self._closed:
            ring.close()
        elif ring.queued() and not self._driver.closed:
            ring.settle()  # a short send: the kernel's head is where the rest starts


async def send_bundle(sock: int | _HasFileno, ring: SendRing) -> int:
    """Send every buffer queued in ``ring``, in order, on the stream socket ``sock`` (an
    fd, or an object with ``fileno()``) with one op: IORING_OP_SEND with
    IOSQE_BUFFER_SELECT and IORING_RECVSEND_BUNDLE. Returns the bytes sent.

    Returns when the ring is empty: each bundle sends what fits (MSG_DONTWAIT: no
    op parks in the kernel, where a send to a peer that shut down its side would
    block an io-wq thread beyond the reach of a cancel), and the call waits for
    room (a POLL_ADD) only when nothing fits. What was not sent when the call
    ends early stays queued, in order, for the next call (or `SendRing.clear`).
    An empty ring sends nothing and returns 0 (the kernel's ``ENOBUFS``).

    A checkpoint; cancelled, `trio.Cancelled` is raised and `SendRing.bytes_sent`
    counts every byte that went out (an op's own completion decides what that
    is, as for every op of `perform`); ClosedResourceError after
    ``notify_closing`` of the fd, or after `SendRing.close` with buffers still
    queued (once the op in flight ended); BusyResourceError while another task
    writes to the fd or sends from ``ring``; OSError for an error before any byte
    went out.
    ValueError for a socket that is not SOCK_STREAM: a bundle would merge its
    buffers into one datagram.
    """
    return await _send_from(sock, ring, SendBundle)


async def send_select(sock: int | _HasFileno, ring: SendRing) -> int:
    """Send the next buffer queued in ``ring`` on ``sock`` with one op
    (IORING_OP_SEND with IOSQE_BUFFER_SELECT): `send_bundle` for one buffer (it
    returns when that buffer went out whole), also on a datagram socket (one
    buffer, one datagram)."""
    return await _send_from(sock, ring, SendSelect)


async def _send_from(sock: int | _HasFileno, ring: SendRing, op_class: type[SendSelect]) -> int:
    driver = _driver("send_bundle" if op_class is SendBundle else "send_select")
    await checkpoint_if_cancelled()
    try:
        ring._check(driver)
        fd = sock if isinstance(sock, int) else sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("socket was already closed")
        if op_class is SendBundle and _socket_type(fd) != socket.SOCK_STREAM:
            raise ValueError(
                "send_bundle needs a stream socket (SOCK_STREAM): a bundle would merge its buffers into one datagram"
            )
        op = ring._op = op_class(fd, ring._ring, 0)
        st = driver.fd(fd)
    except BaseException:
        await cancel_shielded_checkpoint()
        raise
    sent = 0
    while True:
        # Each op sends what fits now (MSG_DONTWAIT: none parks in the kernel, see
        # trio_uring._ops.Send) and waits for room only if nothing fits.
        try:
            n: int = await driver.perform(op, st)
        finally:
            ring._done(op)
        sent += n
        # Until the ring is empty (a bundle) or its first buffer went out whole.
        if not (ring._ring.queued() if op_class is SendBundle else ring._ring.head_offset):
            return sent
        if ring._closed:
            # Closed meanwhile: its buffer group id is given back, and a SEND naming
            # it would send from whatever ring takes it next.
            raise trio.ClosedResourceError("this send ring was closed while sending from it")
        op = ring._op = op_class(fd, ring._ring, 0)


def _socket_type(fd: int) -> int:
    """``fd``'s SO_TYPE (OSError ENOTSOCK for a file that is not a socket)."""
    # (A socket object made on the fd and detached again: it never closes it.
    # Only a process-wide socket.setdefaulttimeout would change the fd, to
    # non-blocking, which io_uring ignores and Trio's sockets are already.)
    s = socket.socket(fileno=fd)
    try:
        return s.type
    finally:
        s.detach()
