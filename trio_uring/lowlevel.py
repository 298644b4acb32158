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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._iomanager import current_driver
from ._ops import NO_SLOT, READ, WRITE, Op
from ._restrict import allow_opcodes, allow_register_ops, allow_sqe_flags
from ._ring import Opcode
from ._ring_cffi import ffi

if TYPE_CHECKING:
    from ._ring_writers import Writers

__all__ = [
    "NO_SLOT",
    "READ",
    "WRITE",
    "Opcode",
    "Operation",
    "allow_opcodes",
    "allow_register_ops",
    "allow_sqe_flags",
    "perform",
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
        self.off = _address(off, held)
        self.addr = _address(addr, held)
        self.addr3 = _address(addr3, held)
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


def _address(value: Any, held: list[object]) -> int:
    """An SQE's address field: an int as it is, a buffer's address (buffer kept)."""
    if isinstance(value, int):
        return value & 0xFFFF_FFFF_FFFF_FFFF
    if isinstance(value, ffi.CData):
        cdata = value
    else:
        try:
            cdata = ffi.from_buffer(value, require_writable=False)
        except TypeError:
            raise TypeError(f"expected an int or a buffer, not {type(value).__name__}") from None
    held.append(cdata)
    return int(ffi.cast("uintptr_t", cdata))


async def perform(op: Op) -> Any:
    """Submit ``op``, wait for its completion, and return `Operation.result`.

    A checkpoint, like Trio's own I/O calls. Raises RuntimeError outside a run on
    the io_uring backend.
    """
    driver = current_driver()
    if driver is None:
        raise RuntimeError("trio_uring.lowlevel.perform needs a run on the io_uring backend (trio_uring.run)")
    from trio.lowlevel import checkpoint_if_cancelled

    await checkpoint_if_cancelled()
    st = driver.fd(op.fd) if op.fd >= 0 else None
    return await driver.perform(op, st)
