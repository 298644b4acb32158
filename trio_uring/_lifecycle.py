"""The op lifecycle: how an io_uring operation is started, waited for, cancelled and ended.

Some facts about io_uring
=========================

* Every SQE produces exactly one final CQE (a multishot SQE: CQEs with
  IORING_CQE_F_MORE, then one without). Nothing else tells us the kernel is done
  with an op.
* IORING_OP_ASYNC_CANCEL is a request, not a command. When it finds the target,
  the target's own CQE says ``-ECANCELED`` (``-EINTR`` if it was running in an
  io-wq thread, or a "restart the call" errno such as ``-ERESTARTSYS`` for an
  OPENAT waiting for a FIFO's other end); but the target may already have
  completed with its real result (bytes received, an accepted fd), and then the
  cancel says ``-ENOENT`` or ``-EALREADY``. Either way the target's CQE still arrives, and only it ends the op.
* Until that CQE the kernel may read or write everything the SQE points at: data
  buffers, msghdrs, a provided-buffer ring. (Inputs such as connect's sockaddr are
  copied at submission, IORING_FEAT_SUBMIT_STABLE; we keep them anyway.)
* ``close(fd)`` cancels nothing: an in-flight op holds its own reference to the
  file, so a pending recv keeps the connection open (no FIN) until it completes.
  And an SQE names an fd by *number*: one written after a close is resolved by the
  kernel to whatever file has that number then, which on a busy server is another
  connection a moment later.
* A send or recv with MSG_DONTWAIT never waits: its CQE (the result, or -EAGAIN)
  is posted before the io_uring_enter that submitted it returns.
* user_data is our only handle on an op. We never reuse one (a 64-bit counter), so
  a late CQE or a late cancel can never hit a newer op.

What this means for Trio
========================

Trio's contract for a blocked task is `trio.lowlevel.wait_task_rescheduled`: when
the task is cancelled, Trio calls our abort function, which either says
``Abort.SUCCEEDED`` (Trio wakes the task with Cancelled right now) or
``Abort.FAILED`` (we promise to reschedule it ourselves later). We cannot promise
that an op will not complete, and we cannot let its memory go while the kernel may
still use it. So for an op that moves data the abort has to fail, and the CQE has
to decide. Trio already works this way on Windows, where IOCP has the same shape
(``trio/_core/_io_windows.py``, ``wait_overlapped``: CancelIoEx, Abort.FAILED,
the real completion decides).

And the closed-fd rule: once ``notify_closing(fd)`` has been called, *nothing* may
reach the kernel for that fd number again from code that started before the close:
no retry of a receive, no rest of a send, no re-armed poll.

Our solution
============

Every op is a record (`trio_uring._ops.Op`) that holds everything its SQE points at,
and every op goes through the same `Driver` and the same states. The states and
what moves an op between them are the table `TRANSITIONS` below (the diagram in
the docs is drawn from it by ``docs/source/make_lifecycle_diagram.py``):

* `Driver.start` writes the SQE (the only code that does), records the op under a
  fresh user_data in ``ops`` and puts it in its fd's slot: IN_FLIGHT. The record
  keeps the op's memory alive until the final CQE pops it from ``ops``, whatever
  happens to the task.
* The waiting task's abort (`Driver.wait`): an op that ``waits_for_cqe`` goes to
  CANCELLING, which writes an ASYNC_CANCEL for its user_data, and the abort says
  Abort.FAILED. A readiness poll, which owns nothing and changes nothing, goes to
  ABANDONED (also with an ASYNC_CANCEL) and the abort says Abort.SUCCEEDED, as
  epoll's does.
* `Driver.notify_closing(fd)` *retires* the fd's `FdState`: its ops go to CLOSING
  (ASYNC_CANCEL; data ops still end by their CQE, readiness waiters are woken with
  ClosedResourceError at once, as with epoll), and the cancels are submitted before
  it returns, so they, and any SQE written before them, reach the kernel while the
  number still names this file. From then on `Driver.start` refuses every op for
  that FdState with ClosedResourceError. An op captures its FdState when its call
  begins (``driver.fd(sock.fileno())``), so a retry or a remainder written later
  can never reach a file that got the number afterwards: that file has a new
  FdState. This is the one place the rule lives. A direct descriptor (a slot of
  the ring's file table, `trio_uring.direct`) has an FdState too, kept by its
  socket rather than in ``fds`` (slots are not fd numbers); `Driver.retire` is
  notify_closing for it, and a slot taken by a new socket gets a new FdState.
* The final CQE (`Driver.dispatch`) ends the op: ``res >= 0`` is COMPLETED
  whatever came before (the bytes moved, the connection was accepted: the task gets
  the result, and its cancel scope, still cancelled, raises at the next
  checkpoint); ``-ECANCELED`` after a cancel is CANCELLED (the task calls Trio's
  ``raise_cancel``) or after a close CLOSED (ClosedResourceError); any other
  ``-errno`` is COMPLETED with an OSError for the task. An op nobody waits for any
  more (ABANDONED) ends DISCARDED, and `Op.discard` undoes its result (closes the
  fd a socket op made).

Sends and receives first try to complete at once, as Trio's own sockets do with a
non-blocking syscall: `Driver.send_now`, `Driver.recv_now` and `Driver.try_now`
submit the op with MSG_DONTWAIT and take its result during the same io_uring_enter,
with no record and no cancellation to think about (the op is over when the call
returns). Only if it would block does an op go through the states above. A waiting
stream receive takes its buffer from the kernel's provided-buffer ring when data
arrives (`trio_uring._ops.RecvSelect`), so a parked receive holds no memory.

Sends never wait in the kernel (`Op.ready_poll`): one that would block waits for
POLLOUT, a readiness poll through the states above, and is tried at once again
(`perform`). A SEND parked in the kernel would, once the peer has shut down its
side, be woken by EPOLLRDHUP again and again (io_uring adds it to every poll) and
after 128 tries be run in a blocking io-wq thread that ASYNC_CANCEL does not get
out (`trio_uring._ops.Send`). A send bundle, which needs its CQE's flags, is
submitted with MSG_DONTWAIT instead, and submitted again after the poll
(`Op.would_block`, `Op.again`).

Trio's BusyResourceError rule (one reader and one writer per fd) applies to every
op that waits: each FdState has a READ and a WRITE slot, taken from `Driver.start`
until the op's final CQE (or, for a readiness poll, until its task stops waiting).
A task can also wait in a slot for something other than its own SQE (`Driver.park`:
``accept()`` waits for its listener's multishot ACCEPT to queue a connection). Ops
that outlive a call (the multishot ACCEPT) sit in the FdState's background set, so
notify_closing finds them.

Trade-offs
==========

* A cancelled op costs a trip through the kernel even when its SQE was never
  submitted. Pulling an unsubmitted SQE back out of the SQ is possible but would
  make the SQ something other than append-only; cancellation is not the hot path.
* Cancels are submitted with the next ``io_uring_enter`` of the run loop (batched),
  except when nothing will enter soon: outside a run-loop tick (guest mode: the host
  cancels while a worker thread sleeps in the kernel), and in notify_closing.
* A multishot readiness poll (``Driver.wait_ready``, see there) wakes its task
  while the op is still in flight; the op is then abandoned. Its states do not
  change on CQEs with IORING_CQE_F_MORE: only the final CQE moves an op.
* After `Driver.close` has drained the ring, an abort is a no-op that succeeds: the
  kernel owns nothing any more. Ops it could not drain keep their memory for the
  life of the process (``_unfinished``) rather than risk the kernel writing into
  freed memory.
"""

from __future__ import annotations

import enum
import errno
import itertools
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final, NoReturn

import outcome
import trio
from trio.lowlevel import (
    Abort,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    enable_ki_protection,
    wait_task_rescheduled,
)

from ._ops import NO_SLOT, READ, AsyncCancel, Op, PollIn, PollOut, _SocketOp
from ._recvmodes import open_recv_buffers
from ._ring import ASYNC_CANCEL_ANY, CQE_F_MORE, NOT_SUBMITTED, SYNC_USER_DATA, BufferRing, Ring, os_error
from ._ring_cffi import ffi

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio.lowlevel import Task

__all__ = [
    "TRANSITIONS",
    "Driver",
    "Event",
    "FdState",
    "State",
    "Waiter",
    "protect_from_keyboard_interrupt",
]


class State(enum.Enum):
    """Where an op is in its life. One line each; the essay above tells the story."""

    IN_FLIGHT = "its SQE is written: the kernel may use its memory until the final CQE"
    CANCELLING = "its task was cancelled: an ASYNC_CANCEL is on its way; the op's own CQE decides"
    CLOSING = "notify_closing retired its fd: an ASYNC_CANCEL is on its way; the op's own CQE decides"
    ABANDONED = "nobody will take its result (an aborted readiness wait, a vanished task, the end of the run)"
    COMPLETED = "its final CQE brought a result, or an error, for the task"
    CANCELLED = "its final CQE said it was cancelled by the task's cancel: the task raises Cancelled"
    CLOSED = "its final CQE said it was cancelled by notify_closing: the task raises ClosedResourceError"
    DISCARDED = "its final CQE came with nobody to take it: its result is undone (e.g. an fd closed)"


class Event(enum.Enum):
    """What moves an op from one `State` to another."""

    CANCEL = "the waiting task is cancelled (or its owner stops a background op)"
    CLOSE = "notify_closing retires the op's fd"
    ABANDON = "nobody will wait for its result any more"
    CQE = "the final CQE, with a result or an error"
    CQE_CANCELED = "the final CQE, -ECANCELED (or -EINTR, -ERESTARTSYS...: cancelled while running in an io-wq thread)"


_S, _E = State, Event

#: The lifecycle, complete: a (state, event) pair not listed here is a bug, and
#: raises. Leaving IN_FLIGHT for CANCELLING, CLOSING or ABANDONED writes one
#: ASYNC_CANCEL for the op (`Driver._advance`); the other states have sent theirs.
TRANSITIONS: Final[dict[State, dict[Event, State]]] = {
    _S.IN_FLIGHT: {
        _E.CANCEL: _S.CANCELLING,
        _E.CLOSE: _S.CLOSING,
        _E.ABANDON: _S.ABANDONED,
        _E.CQE: _S.COMPLETED,
        _E.CQE_CANCELED: _S.COMPLETED,  # cancelled by nobody we know of: an error for the task
    },
    _S.CANCELLING: {
        _E.CANCEL: _S.CANCELLING,
        _E.CLOSE: _S.CANCELLING,  # the task's own cancel came first
        _E.ABANDON: _S.ABANDONED,
        _E.CQE: _S.COMPLETED,  # the op won the race: the task gets its result
        _E.CQE_CANCELED: _S.CANCELLED,
    },
    _S.CLOSING: {
        _E.CANCEL: _S.CLOSING,  # the close came first
        _E.CLOSE: _S.CLOSING,
        _E.ABANDON: _S.ABANDONED,
        _E.CQE: _S.COMPLETED,
        _E.CQE_CANCELED: _S.CLOSED,
    },
    _S.ABANDONED: {
        _E.CANCEL: _S.ABANDONED,
        _E.CLOSE: _S.ABANDONED,
        _E.ABANDON: _S.ABANDONED,
        _E.CQE: _S.DISCARDED,
        _E.CQE_CANCELED: _S.DISCARDED,
    },
    _S.COMPLETED: {},
    _S.CANCELLED: {},
    _S.CLOSED: {},
    _S.DISCARDED: {},
}

_SENDS_CANCEL: Final = frozenset({State.CANCELLING, State.CLOSING, State.ABANDONED})
# The final CQE's transition by state, precomputed for dispatch: (res ok or an
# error, res in _INTERRUPTED).
_AFTER_CQE: Final = {s: (t[Event.CQE], t[Event.CQE_CANCELED]) for s, t in TRANSITIONS.items() if t}

IN_FLIGHT: Final = State.IN_FLIGHT
COMPLETED: Final = State.COMPLETED
CANCELLED: Final = State.CANCELLED
DISCARDED: Final = State.DISCARDED

# ASYNC_CANCEL SQEs carry this user_data; their CQE (posted only when the cancel
# failed: the target had completed or was completing) is dropped. Ops count up
# from FIRST_OP.
CANCEL_USER_DATA: Final = 0
FIRST_OP: Final = 16

_ECANCELED: Final = -errno.ECANCELED
_EINTR: Final = -errno.EINTR
# A final CQE that says the op was stopped with nothing done: -ECANCELED; -EINTR,
# or one of the kernel's "restart the call" errnos (ERESTARTSYS, ERESTARTNOINTR,
# ERESTARTNOHAND, ERESTART_RESTARTBLOCK), which some ops (OPENAT, ...) pass on
# when the cancel interrupts them in an io-wq thread.
_INTERRUPTED: Final = frozenset({_ECANCELED, _EINTR, -512, -513, -514, -516})
_EAGAIN: Final = -errno.EAGAIN

# The buffer group id of the provided-buffer ring (one per ring).
RECV_BUFFER_GROUP: Final = 0


class _Woken(outcome.Outcome):  # type: ignore[type-arg]
    """What a task parked on an op is resumed with: nothing (the op says the rest).

    Trio's reschedule builds a single-use ``outcome.Value(None)`` for each wake-up
    (an attrs object, then a check that it is unwrapped once): one reusable outcome
    that always gives None spares that on every completion. (Only our own waits,
    which ignore what they are resumed with, get it.)
    """

    __slots__ = ()

    def unwrap(self) -> None:
        return None

    def send(self, gen: Any) -> Any:
        return gen.send(None)

    async def asend(self, agen: Any) -> Any:
        return await agen.asend(None)


WOKEN: Final = _Woken()

# Records of ops the kernel never finished with when their ring closed (and the
# buffer ring they may receive into): their memory must outlive the ring.
_unfinished: list[object] = []


class FdState:
    """What the driver knows about one fd number, from its first op until notify_closing.

    ``slots[READ]`` / ``slots[WRITE]``: the op (or `Waiter`) a task waits on in
    each direction. ``background``: ops on the fd that no call waits for. Once
    ``retired`` (notify_closing), no op can start on it: the number may already
    name another file, which gets a new FdState. ``kept``: stream bytes a receive
    bundle got beyond what its caller asked for (`trio_uring._ops.RecvBundle`); the
    next receive on the fd returns them first (`keep`, `take_kept`), and they go
    with the FdState (or, fd still open at the end of the run, to the next run's:
    `_kept_between_runs`).
    """

    __slots__ = ("background", "fd", "kept", "kept_file", "kept_reader", "retired", "slots")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.slots: list[Op | Waiter | None] = [None, None]
        self.background: set[Op] | None = None
        self.retired = False
        self.kept = b""
        self.kept_file: tuple[int, int] | None = None
        self.kept_reader: weakref.ref[object] | None = None  # a socket that passed take_kept's check

    def keep(self, data: bytes) -> None:
        """Keep ``data`` for the next receive of the file the fd names now."""
        if not self.kept:
            self.kept_file = _file_identity(self.fd)
            self.kept_reader = None
        self.kept += data

    def take_kept(self, sock: object) -> bytes:
        """`kept`, if the fd still names the file they came from; else nothing. A
        socket closed without notify_closing (garbage-collected, detached and
        closed, closed through its stdlib socket) leaves its FdState behind, and the
        next socket on that number must not receive the old one's bytes. ``sock``:
        the stdlib socket asking; once it passed the check, it passes at once (while
        open, it keeps its file)."""
        if self.kept:
            reader = self.kept_reader
            if reader is None or reader() is not sock:
                if self.kept_file is None or _file_identity(self.fd) != self.kept_file:
                    self.kept = b""
                else:
                    self.kept_reader = weakref.ref(sock)
        return self.kept


#: Bytes receive bundles kept for fds still open when their run ended (a socket
#: may outlive its run and be received from in the next one): by fd number, with
#: the file they came from. The next run's FdState for the number takes them
#: (`Driver.fd`); `FdState.take_kept` gives them only to that same file.
_kept_between_runs: dict[int, tuple[tuple[int, int] | None, bytes]] = {}


def _file_identity(fd: int) -> tuple[int, int] | None:
    # A socket's inode names it for as long as it is open, whatever its fd number.
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Waiter:
    """A task parked in an fd's slot with no SQE of its own (see `Driver.park`)."""

    __slots__ = ("fdstate", "slot", "task")

    def __init__(self, fdstate: FdState, slot: int, task: Task) -> None:
        self.fdstate = fdstate
        self.slot = slot
        self.task: Task | None = task


class Driver:
    """The in-flight ops of one ring and the start / wait / cancel / close / complete protocol."""

    def __init__(
        self, ring: Ring, recv_buffers: int = 1024, recv_buffer_size: int = 16384, recv_mode: str = "select"
    ) -> None:
        self.ring = ring
        self.ops: dict[int, Op] = {}
        self.fds: dict[int, FdState] = {}
        self.next_user_data = itertools.count(FIRST_OP).__next__
        # The runner's reschedule, bound by the IOManager before any task runs.
        self.reschedule: Callable[[Task, outcome.Outcome[object]], None] = trio.lowlevel.reschedule
        # False while no tick of the run loop is in progress: then nothing would
        # submit a queued cancel soon, so it is submitted at once.
        self.in_tick = False
        self.closed = False
        # Only this thread (the run loop's) may write SQEs.
        self.thread = threading.get_ident()
        self._write = ring.write
        self._cancel_flags = AsyncCancel.sqe_flags if ring.cqe_skip else 0
        self._buffers: BufferRing | None = None
        self._recv_buffers = recv_buffers
        self._recv_buffer_size = recv_buffer_size
        #: How waiting stream receives use the buffer ring (`trio_uring._recvmodes`):
        #: the mode asked for until the ring is set up, then the one in use.
        self.recv_mode = recv_mode
        self._scratch: Any = ffi.new("char[]", 65536)
        self._send_now = ring.send_now
        self._recv_now = ring.recv_now

    def fd(self, fd: int) -> FdState:
        """The FdState of ``fd``'s current file: capture it when a call begins."""
        st = self.fds.get(fd)
        if st is None:
            st = self.fds[fd] = FdState(fd)
            if _kept_between_runs and fd in _kept_between_runs:
                st.kept_file, st.kept = _kept_between_runs.pop(fd)
        return st

    def buffers(self) -> BufferRing:
        """The provided-buffer ring for waiting stream receives (registered on first use)."""
        if self._buffers is None:
            self._buffers, self.recv_mode = open_recv_buffers(
                self.ring, RECV_BUFFER_GROUP, self.recv_mode, self._recv_buffers, self._recv_buffer_size
            )
        return self._buffers

    def scratch(self, size: int) -> Any:
        """A buffer of at least ``size`` bytes for a receive that completes at once
        (`recv_now`). One per run is enough: such a receive is over before any other
        code runs."""
        buf = self._scratch
        if len(buf) < size:
            self._scratch = buf = ffi.new("char[]", size)
        return buf

    # ---------------------------------------------------------------- ops that complete at once

    def _check(self, st: FdState) -> None:
        if st.retired:
            raise trio.ClosedResourceError("another task closed this socket")
        if self.closed:
            raise RuntimeError("trio_uring: the io_uring backend of this run is closed")

    def send_now(self, st: FdState, buf: Any, nbytes: int, flags: int) -> int:
        """A MSG_DONTWAIT SEND on ``st``'s fd, submitted and completed in this call:
        its res (-EAGAIN if it would block; NOT_SUBMITTED if the kernel could not
        take it now)."""
        self._check(st)
        return self._send_now(st.fd, buf, nbytes, flags)

    def recv_now(self, st: FdState, buf: Any, nbytes: int, flags: int) -> int:
        """A MSG_DONTWAIT RECV on ``st``'s fd into ``buf``, completed in this call."""
        self._check(st)
        return self._recv_now(st.fd, buf, nbytes, flags)

    def try_now(self, op: Op, st: FdState) -> int:
        """Submit ``op`` (whose flags say MSG_DONTWAIT) and take its result during
        the same io_uring_enter. No record: the op is over when this returns."""
        self._check(st)
        rc = op.write(self._write, SYNC_USER_DATA)
        if rc:
            self.ring.raise_prep_error(rc)
        return self.ring.submit_sync()

    # ---------------------------------------------------------------- start, wait

    def start(self, op: Op, st: FdState | None) -> None:
        """Write ``op``'s SQE and record it: IN_FLIGHT.

        ``st`` is the FdState the caller captured when its call began (None for an
        op on no fd, or on the backend's own). The closed-fd rule is enforced here,
        and only here: a retired FdState refuses every op (ClosedResourceError).
        """
        if self.closed:
            raise RuntimeError("trio_uring: the io_uring backend of this run is closed")
        slot = op.slot
        if st is not None:
            if st.retired:
                raise trio.ClosedResourceError("another task closed this socket")
            if slot != NO_SLOT and st.slots[slot] is not None:
                raise trio.BusyResourceError(
                    "another task is already " + ("reading from" if slot == READ else "writing to") + " this fd"
                )
        user_data = self.next_user_data()
        rc = op.write(self._write, user_data)
        if rc:
            self.ring.raise_prep_error(rc)
        op.user_data = user_data
        op.state = IN_FLIGHT
        op.task = None
        op.fdstate = st
        if st is not None:
            if slot != NO_SLOT:
                st.slots[slot] = op
            else:
                if st.background is None:
                    st.background = set()
                st.background.add(op)
        self.ops[user_data] = op

    async def perform(self, op: Op, st: FdState | None) -> Any:
        """Start ``op``, wait for it, and return its result (or raise). The caller
        has passed a cancel point (``checkpoint_if_cancelled``).

        An error in ``op.retry_errnos`` (it did nothing) submits it again, through
        `start`: a retry is refused like any other op once the fd is retired, and
        is not made for a task that was cancelled meanwhile.
        """
        if op.ready_poll is not None and isinstance(op, _SocketOp):
            # Tried at once already by its caller, and it would block.
            return await self._ready_then_now(op, st)
        try:
            self.start(op, st)
        except BaseException:
            # As Trio's socket calls: an error comes after a schedule point, so the
            # call is a checkpoint either way (the caller passed the cancel point).
            await cancel_shielded_checkpoint()
            raise
        while True:
            await self.wait(op)
            if op.state is COMPLETED:
                if -op.res in op.retry_errnos:
                    # Nothing happened: a cancelled task leaves here. (An op that
                    # fails at once every time, such as a MSG_ERRQUEUE receive with
                    # nothing queued, never gives its ASYNC_CANCEL a chance to land.)
                    await checkpoint_if_cancelled()
                    op.again()
                    self.start(op, st)
                    continue
                if op.ready_poll is not None and op.would_block():
                    await self.wait_ready(op.fd, op.slot, st, op.ready_poll)
                    op.again()
                    self.start(op, st)
                    continue
            return op.result()

    async def _ready_then_now(self, op: Op, st: FdState | None) -> Any:
        """`perform` of a socket op that waits by readiness (`Op.ready_poll`): that
        POLL_ADD, then the op tried at once (MSG_DONTWAIT, `try_now`), until it does
        not block. The op itself never waits in the kernel, so a cancel lands in the
        poll: nothing of the op happened."""
        assert isinstance(op, _SocketOp) and st is not None
        refusal_is_a_checkpoint = True
        while True:
            await self.wait_ready(op.fd, op.slot, st, op.ready_poll, refusal_is_a_checkpoint=refusal_is_a_checkpoint)
            refusal_is_a_checkpoint = False
            op.now = True
            res = self.try_now(op, st)
            if res != _EAGAIN and res != NOT_SUBMITTED:
                op.res = res
                return op.result()

    async def wait(self, op: Op) -> None:
        """Park the current task until ``op`` ends (or, multishot, until `Op.more`
        wakes it). Raises Trio's Cancelled (via ``raise_cancel``) for CANCELLED and
        ClosedResourceError for CLOSED; the caller reads the rest from ``op``."""
        op.task = current_task()

        def abort(raise_cancel: Callable[[], NoReturn]) -> Abort:
            if self.closed:  # the ring was drained: the kernel holds nothing
                op.task = None
                return Abort.SUCCEEDED
            if op.waits_for_cqe:
                op.raise_cancel = raise_cancel
                self._advance(op, Event.CANCEL)
                return Abort.FAILED
            op.task = None
            self.abandon(op)
            return Abort.SUCCEEDED

        try:
            await wait_task_rescheduled(abort)
        except BaseException:
            if op.task is not None:
                # Not woken by us (the coroutine is being thrown out as the run dies):
                # nobody will take the result.
                op.task = None
                if op.user_data in self.ops:
                    self.abandon(op)
            raise
        state = op.state
        if state is CANCELLED:
            op.raise_cancel()
        if state is State.CLOSED:
            raise trio.ClosedResourceError("another task closed this socket")

    def complete_now(self, op: Op) -> Any:
        """Start ``op`` and wait for its CQE without yielding (for synchronous APIs
        such as ``socket()``). Other CQEs reaped meanwhile are dispatched as
        process_events would."""
        self.start(op, None)
        ring = self.ring
        while op.user_data in self.ops:
            n = ring.wait(1.0)
            if n < 0 and n != _EINTR:
                ring.raise_prep_error(n)
            self.dispatch(ring.reap())
        return op.result()

    async def wait_ready(
        self,
        fd: int,
        slot: int,
        st: FdState | None = None,
        poll_class: type[PollIn] | None = None,
        *,
        refusal_is_a_checkpoint: bool = False,
    ) -> None:
        """`trio.lowlevel.wait_readable` / `wait_writable`, as a POLL_ADD (``st``: the
        FdState a call captured when it began, if ``fd`` is a private duplicate;
        ``poll_class``: PollIn or PollOut by ``slot`` unless given). A refusal (busy
        slot, closed fd) raises at once, as Trio's do, unless a socket call waits
        here (``refusal_is_a_checkpoint``, see `perform`)."""
        if st is None:
            st = self.fd(fd)
        if poll_class is None:
            poll_class = PollIn if slot == READ else PollOut
        op = poll_class(fd)
        try:
            self.start(op, st)
        except BaseException:
            if refusal_is_a_checkpoint:
                await cancel_shielded_checkpoint()
            raise
        while True:
            await self.wait(op)
            if op.state is IN_FLIGHT:  # a multishot poll woke us; it would go on posting
                self.abandon(op)
            if op.res < 0:
                raise os_error(-op.res)
            if op.res & op.wanted:
                return
            # io_uring reports EPOLLRDHUP whether asked or not (the kernel's
            # IO_POLL_UNMASK), so a POLLOUT poll also ends when the peer shuts down
            # its side while ours is not writable. A one-shot poll armed again would
            # end again at once; a multishot one posts on later wake-ups only, and
            # PollIn.more lets through just the events we want.
            op = poll_class(fd, multishot=True)
            self.start(op, st)

    # ---------------------------------------------------------------- parking without an SQE

    def park(self, st: FdState, slot: int) -> Waiter:
        """Take ``st``'s slot for the current task (BusyResourceError if taken)."""
        if st.retired:
            raise trio.ClosedResourceError("another task closed this socket")
        if st.slots[slot] is not None:
            raise trio.BusyResourceError("another task is already waiting on this fd")
        waiter = Waiter(st, slot, current_task())
        st.slots[slot] = waiter
        return waiter

    async def sleep(self, waiter: Waiter) -> None:
        """Block until `wake` (or notify_closing: ClosedResourceError). Cancellable at once."""

        def abort(_: object) -> Abort:
            waiter.task = None
            _release(waiter)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def wake(self, waiter: Waiter) -> None:
        _release(waiter)
        task = waiter.task
        if task is not None:
            waiter.task = None
            self.reschedule(task, WOKEN)

    # ---------------------------------------------------------------- cancel, close

    def _advance(self, op: Op, event: Event) -> None:
        """Move ``op`` by ``event`` (`TRANSITIONS`); write its ASYNC_CANCEL when it
        leaves IN_FLIGHT for a state that asks the kernel to stop it."""
        old = op.state
        try:
            new = TRANSITIONS[old][event]
        except KeyError:
            raise RuntimeError(f"trio_uring: op {op!r} cannot take {event} in {old}") from None
        op.state = new
        if old is IN_FLIGHT and new in _SENDS_CANCEL and not self.closed:
            rc = self._write.cancel(op.user_data, 0, self._cancel_flags, CANCEL_USER_DATA)
            if rc:
                self.ring.raise_prep_error(rc)
            if not self.in_tick:
                self.ring.submit()

    def cancel(self, op: Op) -> None:
        """Ask the kernel to stop ``op`` (a background op its owner no longer wants
        more of). Its CQE still ends it."""
        if op.user_data in self.ops:
            self._advance(op, Event.CANCEL)

    def abandon(self, op: Op) -> None:
        """Nobody will take ``op``'s result: cancel it; its CQE discards it."""
        _release(op)
        self._advance(op, Event.ABANDON)

    def notify_closing(self, fd: int) -> None:
        """Retire ``fd``'s FdState: wake its readiness waiters and parked tasks with
        ClosedResourceError, cancel its ops, and refuse any op that would still name
        this file by number. The cancels are submitted before this returns, so they
        (and any SQE for ``fd`` written before them) reach the kernel before the
        caller closes the fd."""
        st = self.fds.pop(fd, None)
        if st is not None:
            self.retire(st)

    def retire(self, st: FdState) -> None:
        """notify_closing for an FdState that is not in ``fds`` (a direct
        descriptor's, `trio_uring.direct`): the same rule, by object not number."""
        if self.closed or st.retired:
            return
        st.retired = True
        closing: list[Op | Waiter] = [x for x in st.slots if x is not None]
        if st.background:
            closing.extend(st.background)
        for x in closing:
            if isinstance(x, Waiter) or not x.waits_for_cqe:
                # A parked task or a readiness waiter raises now, as with epoll.
                task, x.task = x.task, None
                if task is not None:
                    closed = trio.ClosedResourceError("another task closed this fd")
                    trio.lowlevel.reschedule(task, outcome.Error(closed))
                if isinstance(x, Waiter):
                    _release(x)
                    continue
                self.abandon(x)
            elif x.user_data in self.ops:  # else its CQE arrived: the waiter gets the result
                self._advance(x, Event.CLOSE)
        self.ring.submit()

    # ---------------------------------------------------------------- complete

    def dispatch(self, cqes: list[int]) -> None:
        """Hand each CQE of a reaped batch (flat user_data, res, flags triples) to its op.

        A CQE without IORING_CQE_F_MORE is the op's last: the record leaves the
        in-flight map, and with it our hold on the op's memory. CQEs of cancels
        (CANCEL_USER_DATA) have no record and are dropped.
        """
        ops = self.ops
        reschedule = self.reschedule
        it = iter(cqes)
        for user_data, res, flags in zip(it, it, it):  # noqa: B905  (whole triples by construction)
            if flags & CQE_F_MORE:
                op = ops.get(user_data)
                if op is not None and op.more(res, flags) and op.task is not None:
                    _release(op)
                    woken, op.task = op.task, None
                    reschedule(woken, WOKEN)
                continue
            op = ops.pop(user_data, None)
            if op is None:
                continue
            op.complete(res, flags)
            state = op.state = _AFTER_CQE[op.state][res < 0 and res in _INTERRUPTED]
            if op.fdstate is not None:
                _release(op)
            task = op.task
            if task is not None:
                op.task = None
                reschedule(task, WOKEN)
            elif state is DISCARDED:
                op.discard()

    def cancel_everything(self) -> None:
        """Close-time: nobody waits any more; ask the kernel to cancel every op."""
        for op in self.ops.values():
            op.task = None
            if op.state is IN_FLIGHT:
                op.state = State.ABANDONED  # the one ASYNC_CANCEL_ANY below stands for their cancels
            else:
                self._advance(op, Event.ABANDON)
        for st in self.fds.values():
            if st.kept and not st.retired:
                _kept_between_runs[st.fd] = (st.kept_file, st.kept)
        self.fds.clear()
        rc = self._write.cancel(0, ASYNC_CANCEL_ANY, 0, CANCEL_USER_DATA)
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


def _release(x: Op | Waiter) -> None:
    """Free the fd slot (or background entry) ``x`` holds, if it still holds one."""
    st = x.fdstate
    if st is None:
        return
    slot = x.slot
    if slot != NO_SLOT:
        if st.slots[slot] is x:
            st.slots[slot] = None
    elif st.background is not None:
        st.background.discard(x)


protect_from_keyboard_interrupt(Driver)
