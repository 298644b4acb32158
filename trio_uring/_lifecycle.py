"""The op lifecycle: how an io_uring operation is started, waited for, cancelled and ended.

Some facts about io_uring
=========================

* Every SQE produces exactly one CQE (a multishot SQE: CQEs with IORING_CQE_F_MORE
  until a final one without). Nothing else tells us the kernel is done with an op.
* IORING_OP_ASYNC_CANCEL is a request, not a command. When it finds the target, the
  target's own CQE says ``-ECANCELED``; but the target may already have completed
  with its real result (bytes received, an accepted fd), and then the cancel says
  ``-ENOENT`` or ``-EALREADY``. Either way the target's CQE still arrives, and only it
  ends the op.
* Until that CQE the kernel may read or write everything the SQE points at: the data
  buffer, accept's output sockaddr/socklen. (Inputs such as connect's sockaddr or a
  msghdr are copied at submission, IORING_FEAT_SUBMIT_STABLE; we keep them anyway.)
* ``close(fd)`` cancels nothing: an in-flight op holds its own reference to the
  file, so a pending recv keeps the connection open (no FIN) until it completes.
  Cancel-by-fd after close gives EBADF, and the fd number may already belong to a
  new file. An SQE that has been written but not submitted names the fd *number*:
  submitted after a close and reuse, it would act on the wrong file.
* A send or recv with MSG_DONTWAIT never waits: its CQE (the result, or -EAGAIN) is
  posted before the io_uring_enter that submitted it returns.
* user_data is our only handle on an op. We never reuse one (a 64-bit counter), so a
  late CQE or a late cancel can never hit a newer op.

What this means for Trio
========================

Trio's contract for a blocked task is `trio.lowlevel.wait_task_rescheduled`: when the
task is cancelled, Trio calls our abort function, which either says
``Abort.SUCCEEDED`` (Trio wakes the task with Cancelled right now) or
``Abort.FAILED`` (we promise to reschedule it ourselves later). We cannot promise
that an op will not complete, and we cannot let its buffer go while the kernel may
still write into it. So for an op that moves data the abort has to fail.

Our solution
============

Trio already solved this on Windows, where IOCP has the same shape
(``trio/_core/_io_windows.py``, ``wait_overlapped``): issue CancelIoEx, return
``Abort.FAILED``, and let the real completion decide. We do the same:

1. Before anything is submitted, ``checkpoint_if_cancelled()`` (the caller's job): a
   task that is already cancelled must not start an op it may not be able to stop.
2. `OpDriver.start` gives the op a fresh user_data, records it in ``ops`` (the
   in-flight map) and writes its SQE. The record (`Op`) holds everything the kernel
   may touch (``keep``), so it lives exactly as long as the kernel's interest: until
   the final CQE pops it from ``ops``, whatever happened to the task.
3. `OpDriver.wait` parks the task. Its abort queues an ASYNC_CANCEL for the op's
   user_data, remembers ``raise_cancel`` and returns ``Abort.FAILED``.
4. The CQE decides, in `Op.result`:

   * ``res >= 0``: the op happened. Return its result even if a cancel was
     requested: the bytes moved, the connection was accepted. The cancel scope stays
     cancelled, so Trio raises Cancelled at the task's next checkpoint. Nothing is
     lost.
   * ``-ECANCELED`` after our cancel: call ``raise_cancel()`` (Trio's Cancelled, or
     KeyboardInterrupt).
   * ``-ECANCELED`` after `OpDriver.notify_closing`: ``trio.ClosedResourceError``.
   * any other ``-errno``: ``OSError(errno, strerror)``.

Sends and receives first try to complete at once, as Trio's own sockets do with a
non-blocking syscall: `OpDriver.try_now` submits the op with MSG_DONTWAIT and reads its
result during the same io_uring_enter, with no record and no cancellation to think
about (the op is over when the call returns). Only if it would block does the op go
through steps 2-4. A waiting receive takes its buffer from the kernel's provided-buffer
ring (`trio_uring._ring.BufferRing`) when data arrives, so a parked receive holds no
memory and its CQE hands over the bytes, copied out before the buffer goes back.

Readiness waits (``wait_readable``/``wait_writable``, an IORING_OP_POLL_ADD) own no
memory, so they can do what epoll does: the abort returns ``Abort.SUCCEEDED`` at once,
queues an ASYNC_CANCEL, and leaves the op behind as an orphan (``task is None``) whose
CQE is dropped when it arrives.

``notify_closing(fd)`` cancels every op on the fd *by user_data* and submits those
cancels before it returns, so the caller's ``close()`` comes after them: any SQE for
the fd that was still unsubmitted reaches the kernel (and is resolved to the old
file, then cancelled) before the fd number can be reused. Readiness waiters are woken
with ClosedResourceError right away, as epoll does; data ops end when their CQE
arrives, which ASYNC_CANCEL posts before its own submission returns when it finds
them.

Trio's BusyResourceError rule (one reader and one writer per fd) applies to all ops:
each fd has a READ and a WRITE slot (`FdOps`), taken by ``wait_readable``, recv or
accept, and by ``wait_writable``, send or connect. Ops that outlive a call (multishot
accept) sit in the fd's background set so notify_closing finds them.

Trade-offs
==========

* A cancelled data op costs a trip through the kernel even when its SQE had not been
  submitted yet. Pulling an unsubmitted SQE back out of the SQ is possible but would
  make the SQ something other than append-only; cancellation is not the hot path.
* Cancels are submitted with the next ``io_uring_enter`` of the run loop (batched).
  When nothing will enter soon, they are submitted at once: outside a run-loop tick
  (guest mode: the host cancels while a worker thread sleeps in the kernel), and in
  notify_closing.
* After `OpDriver.close` has drained the ring, an abort is a no-op that succeeds: the
  kernel owns nothing any more. Ops it could not drain keep their memory forever
  (``_unfinished``) rather than risk the kernel writing into freed memory.
"""

from __future__ import annotations

import errno
import itertools
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar, overload

import outcome
import trio
from trio.lowlevel import Abort, current_task, enable_ki_protection, wait_task_rescheduled

from ._ring import ASYNC_CANCEL_ANY, CQE_F_BUFFER, CQE_F_MORE, SYNC_USER_DATA, BufferRing, Ring, os_error
from ._ring_cffi import ffi

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio.lowlevel import Task

__all__ = ["READ", "WRITE", "FdOps", "Op", "OpDriver", "PollOp", "RecvOp", "Waiter", "protect_from_keyboard_interrupt"]

# ASYNC_CANCEL SQEs carry this user_data; their CQE (posted only when the cancel
# failed: the target had completed or was completing) is dropped. Ops count up
# from FIRST_OP.
CANCEL_USER_DATA: Final = 0
FIRST_OP: Final = 16

# The slots of an fd's FdOps list.
READ: Final = 0
WRITE: Final = 1
BACKGROUND: Final = 2

POLLIN: Final = 0x001
POLLOUT: Final = 0x004
POLLERR: Final = 0x008
POLLHUP: Final = 0x010
POLLNVAL: Final = 0x020

_ECANCELED: Final = errno.ECANCELED
_EINTR: Final = errno.EINTR

# The buffer group id of the provided-buffer ring (one per ring).
RECV_BUFFER_GROUP: Final = 0

# Records of ops the kernel never finished with when their ring closed (and the
# buffer ring they may receive into): their buffers must outlive the ring (the
# kernel may still write into them).
_unfinished: list[object] = []

#: The ops in flight on one fd: ``[reader, writer, background ops (a set) or None]``.
FdOps = list


def _new_fd_ops() -> list[Any]:
    return [None, None, None]


def _all_ops(fd_ops: list[Any]) -> list[Op]:
    ops = [op for op in fd_ops[:BACKGROUND] if op is not None]
    if fd_ops[BACKGROUND]:
        ops.extend(fd_ops[BACKGROUND])
    return ops


class Op:
    """One SQE and everything the kernel may touch until its final CQE.

    A plain op has one task waiting for one CQE. Subclasses override `on_cqe` for
    other shapes (multishot, no waiter).
    """

    __slots__ = ("cancelled", "fd", "fd_ops", "flags", "keep", "raise_cancel", "res", "slot", "task", "user_data")

    # Set by OpDriver.wait's abort, before CANCELLED is: Trio's way to raise Cancelled.
    raise_cancel: Callable[[], NoReturn]

    # A readiness waiter owns no memory: notify_closing wakes it at once.
    wake_on_close = False

    def __init__(self, user_data: int, fd: int, keep: object) -> None:
        self.user_data = user_data
        self.fd = fd
        self.keep = keep  # buffers, sockaddrs: alive until the final CQE
        self.task: Task | None = None  # who to wake; None once nobody waits
        self.fd_ops: list[Any] | None = None
        self.slot = BACKGROUND
        self.res = 0
        self.flags = 0
        # Bits: CANCELLED (the waiting task was cancelled), CLOSED (notify_closing),
        # CANCEL_SENT (an ASYNC_CANCEL for it is queued).
        self.cancelled = 0

    def on_cqe(self, res: int, flags: int, reschedule: Callable[[Task], None]) -> None:
        """The final CQE arrived: record it, free the fd slot, wake the waiter."""
        self.res = res
        self.flags = flags
        if self.fd_ops is not None:
            _release(self)
        task = self.task
        if task is not None:
            self.task = None
            reschedule(task)

    def result(self, context: str | None = None) -> int:
        """After the CQE: the op's result, or the exception the waiting task raises."""
        res = self.res
        if res >= 0:
            return res
        if (res == -_ECANCELED or res == -_EINTR) and self.cancelled & (CANCELLED | CLOSED):
            if self.cancelled & CANCELLED:
                self.raise_cancel()
            raise trio.ClosedResourceError("another task closed this socket")
        raise os_error(-res, context)


CANCELLED: Final = 1
CLOSED: Final = 2
CANCEL_SENT: Final = 4


class RecvOp(Op):
    """A RECV that waits, its buffer picked by the kernel from the driver's BufferRing."""

    __slots__ = ("data",)

    keep: BufferRing
    data: bytes  # set by the CQE when it carries a buffer (res > 0)

    def on_cqe(self, res: int, flags: int, reschedule: Callable[[Task], None]) -> None:
        if flags & CQE_F_BUFFER:
            # Copy the bytes out and give the buffer back now, whoever (if anyone)
            # still waits for them.
            self.data = self.keep.take(flags, res)
        super().on_cqe(res, flags, reschedule)


class Waiter(Op):
    """A task parked in an fd slot with no SQE of its own (see `OpDriver.park`)."""

    __slots__ = ()
    wake_on_close = True


class PollOp(Op):
    """A POLL_ADD for wait_readable / wait_writable."""

    __slots__ = ("wanted",)
    wake_on_close = True

    wanted: int  # the poll events that end the wait

    def on_cqe(self, res: int, flags: int, reschedule: Callable[[Task], None]) -> None:
        if self.task is None:
            return  # an orphan (aborted, or its fd closed), or already delivered
        if flags & CQE_F_MORE and res >= 0 and not res & self.wanted:
            return  # a multishot poll woken for something we did not ask for
        super().on_cqe(res, flags, reschedule)


_OpT = TypeVar("_OpT", bound=Op)


class OpDriver:
    """The in-flight map and the start / wait / cancel / complete protocol for every op."""

    def __init__(self, ring: Ring, recv_buffers: int = 1024, recv_buffer_size: int = 16384) -> None:
        self.ring = ring
        self.ops: dict[int, Op] = {}
        self.fds: dict[int, list[Any]] = {}
        self.next_user_data = itertools.count(FIRST_OP).__next__
        # The runner's reschedule, bound by the IOManager before any task runs.
        self.reschedule: Callable[[Task], None] = trio.lowlevel.reschedule
        # False while no tick of the run loop is in progress: then nothing would
        # submit a queued cancel soon, so `cancel` submits it at once.
        self.in_tick = False
        self.closed = False
        self._buffers: BufferRing | None = None
        self._recv_buffers = recv_buffers
        self._recv_buffer_size = recv_buffer_size
        self._scratch: Any = ffi.new("char[]", 65536)

    @property
    def buffers(self) -> BufferRing:
        """The provided-buffer ring for waiting receives (registered on first use)."""
        if self._buffers is None:
            self._buffers = BufferRing(self.ring, RECV_BUFFER_GROUP, self._recv_buffers, self._recv_buffer_size)
        return self._buffers

    def scratch(self, size: int) -> Any:
        """A buffer of at least ``size`` bytes for receives that complete at once
        (`try_now`, ``Ring.recv_now``). One per run is enough: such an op is over
        before any other code runs."""
        buf = self._scratch
        if len(buf) < size:
            self._scratch = buf = ffi.new("char[]", size)
        return buf

    # ---------------------------------------------------------------- start

    @overload
    def start(self, fd: int, slot: int, prep: Callable[..., int], *args: object, keep: object = None) -> Op: ...

    @overload
    def start(
        self, fd: int, slot: int, prep: Callable[..., int], *args: object, keep: object = None, op_class: type[_OpT]
    ) -> _OpT: ...

    def start(
        self,
        fd: int,
        slot: int,
        prep: Callable[..., int],
        *args: object,
        keep: object = None,
        op_class: type[Op] = Op,
    ) -> Op:
        """Record a new op and write its SQE: ``prep(*args, user_data)``.

        ``slot`` is READ or WRITE (the op takes that slot of ``fd``, or
        BusyResourceError), or BACKGROUND for an op that no call waits for or that
        belongs to no fd (socket creation).
        """
        if self.closed:
            raise RuntimeError("trio_uring: the io_uring backend of this run is closed")
        user_data = self.next_user_data()
        op = op_class(user_data, fd, keep)
        if slot != BACKGROUND:
            fd_ops = self.fds.get(fd)
            if fd_ops is None:
                fd_ops = self.fds[fd] = _new_fd_ops()
            elif fd_ops[slot] is not None:
                raise trio.BusyResourceError("another task is already reading / writing this fd")
            rc = prep(*args, user_data)
            if rc:
                self.ring.raise_prep_error(rc)
            fd_ops[slot] = op
            op.fd_ops = fd_ops
            op.slot = slot
        else:
            rc = prep(*args, user_data)
            if rc:
                self.ring.raise_prep_error(rc)
        self.ops[user_data] = op
        return op

    def try_now(self, prep: Callable[..., int], *args: object) -> int:
        """Write an SQE that cannot block (MSG_DONTWAIT) and submit it with everything
        queued so far; return its result (e.g. -EAGAIN), or NOT_SUBMITTED if the
        kernel could not take it. The op is over when this returns: its buffers are
        only needed during the call.
        """
        if self.closed:
            raise RuntimeError("trio_uring: the io_uring backend of this run is closed")
        rc = prep(*args, SYNC_USER_DATA)
        if rc:
            self.ring.raise_prep_error(rc)
        return self.ring.submit_sync()

    def add_background(self, op: Op) -> None:
        """Let notify_closing(op.fd) find an op that no task waits for (multishot)."""
        fd_ops = self.fds.get(op.fd)
        if fd_ops is None:
            fd_ops = self.fds[op.fd] = _new_fd_ops()
        if fd_ops[BACKGROUND] is None:
            fd_ops[BACKGROUND] = set()
        fd_ops[BACKGROUND].add(op)
        op.fd_ops = fd_ops
        op.slot = BACKGROUND

    # ---------------------------------------------------------------- wait

    async def wait(self, op: Op, context: str | None = None) -> int:
        """Park the current task until ``op``'s CQE; return its result or raise.

        Cancellation asks the kernel to cancel the op and waits for the op's own CQE
        (Abort.FAILED), so a result that won the race is returned, never dropped.
        """
        op.task = current_task()

        def abort(raise_cancel: Callable[[], NoReturn]) -> Abort:
            if self.closed:  # the ring was drained: the kernel holds nothing
                op.task = None
                return Abort.SUCCEEDED
            op.raise_cancel = raise_cancel
            op.cancelled |= CANCELLED
            self.cancel(op)
            return Abort.FAILED

        try:
            await wait_task_rescheduled(abort)
        except BaseException:
            op.task = None  # never parked (or the run is going down): nobody to wake
            raise
        if op.res >= 0:
            return op.res
        return op.result(context)

    def complete_now(self, op: Op) -> int:
        """Submit and wait for ``op``'s CQE without yielding (for synchronous APIs).

        Other CQEs reaped meanwhile are dispatched as process_events would.
        """
        ring = self.ring
        while op.user_data in self.ops:
            n = ring.wait(1.0)
            if n < 0 and n != -_EINTR:
                ring.raise_prep_error(n)
            self.dispatch(ring.reap(), self.reschedule)
        return op.res

    async def wait_ready(self, fd: int, slot: int) -> None:
        """`trio.lowlevel.wait_readable` / `wait_writable`, as a one-shot POLL_ADD."""
        events = POLLIN if slot == READ else POLLOUT
        multishot = 0
        while True:
            op = self.start(fd, slot, self.ring.prep_poll_add, fd, events, multishot, op_class=PollOp)
            op.wanted = events | POLLERR | POLLHUP | POLLNVAL
            op.task = current_task()

            def abort(_: object, op: Op = op) -> Abort:
                # Nothing of ours is in the kernel's hands: succeed now, like epoll,
                # and leave the poll behind as an orphan whose CQE is ignored.
                op.task = None
                if op.fd_ops is not None:
                    _release(op)
                if not self.closed:
                    self.cancel(op)
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)
            if op.res < 0:
                raise os_error(-op.res)
            if multishot:
                self.cancel(op)  # it would go on posting; we have what we waited for
            if op.res & op.wanted:
                return
            # io_uring reports EPOLLRDHUP whether asked or not (the kernel's
            # IO_POLL_UNMASK), so a POLLOUT poll also ends when the peer shuts down
            # its side while ours is not writable. A one-shot poll armed again would
            # end again at once; a multishot one posts on later wake-ups only, and
            # PollOp.on_cqe lets through just the events we want.
            multishot = 1

    # A task can also wait in an fd's slot for something other than its own SQE
    # (accept waits for its listener's multishot ACCEPT to queue a connection).

    def park(self, fd: int, slot: int) -> Waiter:
        """Take ``fd``'s slot for the current task (BusyResourceError if taken)."""
        fd_ops = self.fds.get(fd)
        if fd_ops is None:
            fd_ops = self.fds[fd] = _new_fd_ops()
        elif fd_ops[slot] is not None:
            raise trio.BusyResourceError("another task is already reading / writing this fd")
        waiter = Waiter(-1, fd, None)
        waiter.task = current_task()
        fd_ops[slot] = waiter
        waiter.fd_ops = fd_ops
        waiter.slot = slot
        return waiter

    async def sleep(self, waiter: Waiter) -> None:
        """Block until `wake` (or notify_closing: ClosedResourceError). Cancellable at once."""

        def abort(_: object) -> Abort:
            waiter.task = None
            if waiter.fd_ops is not None:
                _release(waiter)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def wake(self, waiter: Waiter) -> None:
        if waiter.fd_ops is not None:
            _release(waiter)
        task = waiter.task
        if task is not None:
            waiter.task = None
            self.reschedule(task)

    # ---------------------------------------------------------------- cancel

    def cancel(self, op: Op) -> None:
        """Ask the kernel to cancel ``op`` (once). Its CQE still ends it."""
        if op.cancelled & CANCEL_SENT or op.user_data not in self.ops:
            return
        op.cancelled |= CANCEL_SENT
        rc = self.ring.prep_cancel(op.user_data, 0, CANCEL_USER_DATA)
        if rc:
            self.ring.raise_prep_error(rc)
        if not self.in_tick:
            self.ring.submit()

    def notify_closing(self, fd: int) -> None:
        """Wake readiness waiters with ClosedResourceError and cancel every op on ``fd``.

        The cancels are submitted before this returns, so they (and any SQE for
        ``fd`` written before them) reach the kernel before the caller closes the fd.
        """
        fd_ops = self.fds.pop(fd, None)
        if fd_ops is None or self.closed:
            return
        closing = _all_ops(fd_ops)
        fd_ops[READ] = fd_ops[WRITE] = fd_ops[BACKGROUND] = None
        for op in closing:
            op.fd_ops = None
            if op.wake_on_close and op.task is not None:
                # A readiness waiter or a parked task raises now, as with epoll;
                # a data op waits for its CQE.
                task, op.task = op.task, None
                trio.lowlevel.reschedule(task, outcome.Error(trio.ClosedResourceError("another task closed this fd")))
            if op.user_data in self.ops:  # else its CQE arrived: the waiter gets the result
                op.cancelled |= CLOSED
                self.cancel(op)
        self.ring.submit()

    # ---------------------------------------------------------------- complete

    def dispatch(self, cqes: list[int], reschedule: Callable[[Task], None]) -> None:
        """Hand each CQE of a reaped batch (flat user_data, res, flags triples) to its op.

        A CQE without IORING_CQE_F_MORE is the op's last: the record leaves the
        in-flight map, and with it our hold on its buffers. CQEs of cancels
        (CANCEL_USER_DATA) have no record and are dropped.
        """
        ops = self.ops
        it = iter(cqes)
        for user_data, res, flags in zip(it, it, it):  # noqa: B905  (whole triples by construction)
            if flags & CQE_F_MORE:
                op = ops.get(user_data)
                if op is not None:
                    op.on_cqe(res, flags, reschedule)
                continue
            op = ops.pop(user_data, None)
            if op is not None:
                if op.slot == BACKGROUND and op.fd_ops is not None:
                    _release(op)  # a multishot op that ended: its fd no longer holds it
                op.on_cqe(res, flags, reschedule)

    # ---------------------------------------------------------------- close

    def cancel_everything(self) -> None:
        """Close-time: nobody waits any more; ask the kernel to cancel every op."""
        for op in self.ops.values():
            op.task = None
            op.cancelled |= CANCEL_SENT
        self.fds.clear()
        rc = self.ring.prep_cancel(0, ASYNC_CANCEL_ANY, CANCEL_USER_DATA)
        if rc:
            self.ring.raise_prep_error(rc)

    def close(self) -> None:
        """After the drain: ops the kernel never completed keep their memory for the
        life of the process; the buffer ring is unregistered."""
        _unfinished.extend(self.ops.values())
        self.ops.clear()
        self.closed = True
        if self._buffers is not None:
            if _unfinished:
                _unfinished.append(self._buffers)
            else:
                self._buffers.close()


def protect_from_keyboard_interrupt(cls: type) -> type:
    """Run every method of ``cls`` with Trio's KeyboardInterrupt protection.

    Without it a SIGINT could raise between an op's registration and its task's
    park (``op.task`` set, task gone), and the op's CQE would later wake that task
    out of some unrelated wait: TrioInternalError. Trio protects its own I/O waits
    the same way; KeyboardInterrupt is then delivered at the next checkpoint.
    Marking is by code object: no cost per call.
    """
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if hasattr(value, "__code__"):
            enable_ki_protection(value)
    return cls


def _release(op: Op) -> None:
    fd_ops = op.fd_ops
    assert fd_ops is not None
    slot = op.slot
    if slot != BACKGROUND:
        if fd_ops[slot] is op:
            fd_ops[slot] = None
    elif fd_ops[BACKGROUND] is not None:
        fd_ops[BACKGROUND].discard(op)
    op.fd_ops = None


protect_from_keyboard_interrupt(OpDriver)
