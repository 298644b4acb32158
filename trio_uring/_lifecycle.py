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
each fd has a ``read`` and a ``write`` slot (`FdOps`), taken by ``wait_readable``,
recv or accept, and by ``wait_writable``, send or connect. Ops that outlive a call
(multishot accept) sit in the fd's ``background`` set so notify_closing finds them.

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
from typing import TYPE_CHECKING, Any, Final

import outcome
import trio
from trio.lowlevel import Abort, current_task, wait_task_rescheduled

from ._ring import ASYNC_CANCEL_ANY, CQE_F_MORE, Ring, os_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio.lowlevel import Task

__all__ = ["READ", "WRITE", "FdOps", "Op", "OpDriver", "PollOp", "Waiter"]

# ASYNC_CANCEL SQEs carry this user_data; their CQE (posted only when the cancel
# failed: the target had completed or was completing) is dropped. Ops count up
# from FIRST_OP.
CANCEL_USER_DATA: Final = 0
FIRST_OP: Final = 16

READ: Final = "read"
WRITE: Final = "write"

POLLIN: Final = 0x001
POLLOUT: Final = 0x004
POLLERR: Final = 0x008
POLLHUP: Final = 0x010
POLLNVAL: Final = 0x020

_ECANCELED: Final = errno.ECANCELED
_EINTR: Final = errno.EINTR

# Records of ops the kernel never finished with when their ring closed: their
# buffers must outlive the ring (the kernel may still write into them).
_unfinished: list[Op] = []


class FdOps:
    """The ops in flight on one fd: one reader, one writer, and background ops."""

    __slots__ = ("background", "read", "write")

    def __init__(self) -> None:
        self.read: Op | None = None
        self.write: Op | None = None
        self.background: set[Op] | None = None

    def all(self) -> list[Op]:
        ops = [op for op in (self.read, self.write) if op is not None]
        if self.background:
            ops.extend(self.background)
        return ops


class Op:
    """One SQE and everything the kernel may touch until its final CQE.

    A plain op has one task waiting for one CQE. Subclasses override `on_cqe` for
    other shapes (multishot, no waiter).
    """

    # A readiness waiter owns no memory: notify_closing wakes it at once.
    wake_on_close = False

    __slots__ = (
        "cancel_requested",
        "closed",
        "fd",
        "fd_ops",
        "flags",
        "keep",
        "raise_cancel",
        "res",
        "slot",
        "task",
        "user_data",
    )

    def __init__(self, user_data: int, fd: int, keep: object) -> None:
        self.user_data = user_data
        self.fd = fd
        self.keep = keep  # buffers, sockaddrs: alive until the final CQE
        self.task: Task | None = None  # who to wake; None once nobody waits
        self.fd_ops: FdOps | None = None
        self.slot: str | None = None  # READ, WRITE, or None (background / no fd)
        self.res = 0
        self.flags = 0
        self.raise_cancel: Callable[[], Any] | None = None
        self.cancel_requested = False
        self.closed = False  # notify_closing cancelled it

    def on_cqe(self, res: int, flags: int, reschedule: Callable[[Task], None]) -> None:
        """The final CQE arrived: record it, free the fd slot, wake the waiter."""
        self.res = res
        self.flags = flags
        fd_ops = self.fd_ops
        if fd_ops is not None:
            _release(fd_ops, self)
        if self.task is not None:
            reschedule(self.task)
            self.task = None

    def result(self, context: str | None = None) -> int:
        """After the CQE: the op's result, or the exception the waiting task raises."""
        res = self.res
        if res >= 0:
            return res
        if (res == -_ECANCELED or res == -_EINTR) and (self.cancel_requested or self.closed):
            if self.raise_cancel is not None:
                self.raise_cancel()
            raise trio.ClosedResourceError("another task closed this socket")
        raise os_error(-res, context)


class OpDriver:
    """The in-flight map and the start / wait / cancel / complete protocol for every op."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.ops: dict[int, Op] = {}
        self.fds: dict[int, FdOps] = {}
        self.next_user_data = itertools.count(FIRST_OP).__next__
        # The runner's reschedule, bound by the IOManager before any task runs.
        self.reschedule: Callable[[Task], None] = trio.lowlevel.reschedule
        # False while no tick of the run loop is in progress: then nothing would
        # submit a queued cancel soon, so `cancel` submits it at once.
        self.in_tick = False
        self.closed = False

    # ---------------------------------------------------------------- start

    def claim(self, fd: int, slot: str) -> FdOps:
        """Take ``fd``'s read or write slot, or raise BusyResourceError like Trio."""
        fd_ops = self.fds.get(fd)
        if fd_ops is None:
            fd_ops = self.fds[fd] = FdOps()
        elif getattr(fd_ops, slot) is not None:
            raise trio.BusyResourceError(
                "another task is already reading / writing this fd"
                if slot in (READ, WRITE)
                else "busy"
            )
        return fd_ops

    def start(
        self,
        fd: int,
        slot: str | None,
        prep: Callable[..., int],
        *args: object,
        keep: object = None,
        op_class: type[Op] = Op,
    ) -> Op:
        """Record a new op and write its SQE: ``prep(*args, user_data)``.

        ``slot`` is READ or WRITE (the op takes that slot of ``fd``), or None for an
        op that belongs to no fd (socket creation) or is tracked by its owner.
        """
        if self.closed:
            raise RuntimeError("trio_uring: the io_uring backend of this run is closed")
        fd_ops = self.claim(fd, slot) if slot is not None else None
        op = op_class(self.next_user_data(), fd, keep)
        rc = prep(*args, op.user_data)
        if rc:
            self.ring.raise_prep_error(rc)
        self.ops[op.user_data] = op
        if fd_ops is not None:
            setattr(fd_ops, slot, op)  # type: ignore[arg-type]
            op.fd_ops = fd_ops
            op.slot = slot
        return op

    def add_background(self, op: Op) -> None:
        """Let notify_closing(op.fd) find an op that no task waits for (multishot)."""
        fd_ops = self.fds.get(op.fd)
        if fd_ops is None:
            fd_ops = self.fds[op.fd] = FdOps()
        if fd_ops.background is None:
            fd_ops.background = set()
        fd_ops.background.add(op)
        op.fd_ops = fd_ops

    # ---------------------------------------------------------------- wait

    async def wait(self, op: Op, context: str | None = None) -> int:
        """Park the current task until ``op``'s CQE; return its result or raise.

        Cancellation asks the kernel to cancel the op and waits for the op's own CQE
        (Abort.FAILED), so a result that won the race is returned, never dropped.
        """
        op.task = current_task()

        def abort(raise_cancel: Callable[[], Any]) -> Abort:
            if self.closed:  # the ring was drained: the kernel holds nothing
                op.task = None
                return Abort.SUCCEEDED
            op.raise_cancel = raise_cancel
            self.cancel(op)
            return Abort.FAILED

        await wait_task_rescheduled(abort)
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

    # A task can also wait in an fd's slot for something other than its own SQE
    # (accept waits for its listener's multishot ACCEPT to queue a connection).

    def park(self, fd: int, slot: str) -> Waiter:
        """Take ``fd``'s slot for the current task (BusyResourceError if taken)."""
        fd_ops = self.claim(fd, slot)
        waiter = Waiter(-1, fd, None)
        waiter.task = current_task()
        setattr(fd_ops, slot, waiter)
        waiter.fd_ops = fd_ops
        waiter.slot = slot
        return waiter

    async def sleep(self, waiter: Waiter) -> None:
        """Block until `wake` (or notify_closing: ClosedResourceError). Cancellable at once."""

        def abort(_: object) -> Abort:
            waiter.task = None
            if waiter.fd_ops is not None:
                _release(waiter.fd_ops, waiter)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def wake(self, waiter: Waiter) -> None:
        if waiter.fd_ops is not None:
            _release(waiter.fd_ops, waiter)
        if waiter.task is not None:
            self.reschedule(waiter.task)
            waiter.task = None

    async def wait_ready(self, fd: int, slot: str) -> None:
        """`trio.lowlevel.wait_readable` / `wait_writable`, as a one-shot POLL_ADD."""
        events = POLLIN if slot == READ else POLLOUT
        multishot = 0
        while True:
            op = self.start(fd, slot, self.ring.prep_poll_add, fd, events, multishot, op_class=PollOp)
            op.wanted = events | POLLERR | POLLHUP | POLLNVAL  # type: ignore[attr-defined]
            op.task = current_task()

            def abort(_: object, op: Op = op) -> Abort:
                # Nothing of ours is in the kernel's hands: succeed now, like epoll,
                # and leave the poll behind as an orphan whose CQE is ignored.
                op.task = None
                if op.fd_ops is not None:
                    _release(op.fd_ops, op)
                if not self.closed:
                    self.cancel(op)
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)
            if op.res < 0:
                raise os_error(-op.res)
            if multishot:
                self.cancel(op)  # it would go on posting; we have what we waited for
            if op.res & op.wanted:  # type: ignore[attr-defined]
                return
            # io_uring reports EPOLLRDHUP whether asked or not (the kernel's
            # IO_POLL_UNMASK), so a POLLOUT poll also ends when the peer shuts down
            # its side while ours is not writable. A one-shot poll armed again would
            # end again at once; a multishot one posts on later wake-ups only, and
            # PollOp.on_cqe lets through just the events we want.
            multishot = 1

    # ---------------------------------------------------------------- cancel

    def cancel(self, op: Op) -> None:
        """Ask the kernel to cancel ``op`` (once). Its CQE still ends it."""
        if op.cancel_requested or op.user_data not in self.ops:
            return
        op.cancel_requested = True
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
        closing = fd_ops.all()
        fd_ops.read = fd_ops.write = fd_ops.background = None
        for op in closing:
            op.fd_ops = None
            self._wake_closed(op)
            if op.user_data in self.ops:  # else its CQE arrived: the waiter gets the result
                op.closed = True
                self.cancel(op)
        self.ring.submit()

    def _wake_closed(self, op: Op) -> None:
        """A readiness waiter or a parked task on a closing fd raises ClosedResourceError
        now (epoll does); data ops wait for their CQE."""
        if op.wake_on_close and op.task is not None:
            task, op.task = op.task, None
            trio.lowlevel.reschedule(
                task, outcome.Error(trio.ClosedResourceError("another task closed this fd"))
            )

    # ---------------------------------------------------------------- complete

    def dispatch(self, cqes: list[int], reschedule: Callable[[Task], None]) -> None:
        """Hand each CQE of a reaped batch (flat user_data, res, flags triples) to its op.

        A CQE without IORING_CQE_F_MORE is the op's last: the record leaves the
        in-flight map, and with it our hold on its buffers. CQEs of cancels
        (CANCEL_USER_DATA) have no record and are dropped.
        """
        ops = self.ops
        it = iter(cqes)
        for user_data, res, flags in zip(it, it, it):
            if flags & CQE_F_MORE:
                op = ops.get(user_data)
            else:
                op = ops.pop(user_data, None)
            if op is not None:
                op.on_cqe(res, flags, reschedule)

    # ---------------------------------------------------------------- close

    def cancel_everything(self) -> None:
        """Close-time: nobody waits any more; ask the kernel to cancel every op."""
        for op in self.ops.values():
            op.task = None
            op.cancel_requested = True
        self.fds.clear()
        rc = self.ring.prep_cancel(0, ASYNC_CANCEL_ANY, CANCEL_USER_DATA)
        if rc:
            self.ring.raise_prep_error(rc)

    def abandon_unfinished(self) -> None:
        """Ops the kernel never completed keep their memory for the life of the process."""
        _unfinished.extend(self.ops.values())
        self.ops.clear()
        self.closed = True


class Waiter(Op):
    """A task parked in an fd slot with no SQE of its own (see `OpDriver.park`)."""

    __slots__ = ()
    wake_on_close = True


class PollOp(Op):
    """A POLL_ADD for wait_readable / wait_writable."""

    __slots__ = ("wanted",)
    wake_on_close = True

    def on_cqe(self, res: int, flags: int, reschedule: Callable[[Task], None]) -> None:
        if self.task is None:
            return  # an orphan (aborted, or its fd closed), or already delivered
        if flags & CQE_F_MORE and res >= 0 and not res & self.wanted:
            return  # a multishot poll woken for something we did not ask for
        super().on_cqe(res, flags, reschedule)


def _release(fd_ops: FdOps, op: Op) -> None:
    slot = op.slot
    if slot is not None:
        if getattr(fd_ops, slot) is op:
            setattr(fd_ops, slot, None)
    elif fd_ops.background is not None:
        fd_ops.background.discard(op)
    op.fd_ops = None
