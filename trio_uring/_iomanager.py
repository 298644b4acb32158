"""UringIOManager: Trio's runner <-> io_uring.

Trio has no plug-in API for I/O backends; its runner calls a duck-typed object built
by ``trio._core._run.TheIOManager()`` (see ``trio/_core/_io_epoll.py`` for the stock
one). This class is that object. Each runner hook below carries its contract in one
line; the op lifecycle it relies on is explained in `trio_uring._lifecycle`.

Threads. In ``trio.run`` everything happens on one thread. In guest mode
(``start_guest_run``) Trio calls ``get_events(timeout)`` from a worker thread while
the host thread keeps going, so: only the run-loop thread (the one that built this
manager) writes or submits SQEs or reaps CQEs; the worker only waits in
``io_uring_enter``.

Ring flags. A plain run's ring uses IORING_SETUP_COOP_TASKRUN: the kernel finishes
completions when our thread next enters it, instead of interrupting the thread for
each arriving packet or connection (that interrupt costs more than the work). In
guest mode the waiting worker thread is not the thread that submitted, and would
wait for work only the host thread runs, so a guest run's ring is a plain one.
Whether the run is a guest is only known once it starts, hence `_start`.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

import attrs
from trio._core._run import GLOBAL_RUN_CONTEXT

from ._config import env_microseconds
from ._lifecycle import Driver
from ._ops import READ, WRITE, Read
from ._recvmodes import recv_mode_from_environment, usable_recv_mode
from ._restrict import RingRestrictions, open_ring, restrict_enabled
from ._ring import Ring
from ._ring_cffi import ffi

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trio.lowlevel import Task

__all__ = ["UringIOManager", "UringStatistics", "current_driver", "first_tick_hooks", "running_driver"]

#: Called at the first tick of every run on this backend, before any task runs
#: (the runner exists then; it does not in __init__). The socket layer registers
#: its socket factory here, so the dependency runs socket -> iomanager.
first_tick_hooks: list[Callable[[], None]] = []

_EINTR = -errno.EINTR
_RETRY_LATER = (-errno.EBUSY, -errno.EAGAIN)  # the kernel is short of memory for now


@attrs.frozen
class UringStatistics:
    """``trio.lowlevel.current_statistics().io_statistics`` on the io_uring backend."""

    #: Tasks blocked reading / writing: wait_readable, recv, accept / wait_writable, send, connect.
    tasks_waiting_read: int
    tasks_waiting_write: int
    #: Ops the kernel has not finished with (their final CQE has not arrived),
    #: not counting the backend's own wake-up read.
    ops_in_flight: int
    #: SQEs written in this run, by opcode name ("POLL_ADD", "RECV", ...).
    ops_submitted: Mapping[str, int]
    backend: Literal["io_uring"] = "io_uring"


class _WakeupRead(Read):
    """The IORING_OP_READ on the eventfd that `force_wakeup` writes to."""

    __slots__ = ("manager",)

    def __init__(self, manager: UringIOManager) -> None:
        super().__init__(manager._wake_fd, manager._wake_buf, 8)
        self.manager = manager

    def complete(self, res: int, flags: int) -> None:
        super().complete(res, flags)
        self.manager._arm_wakeup()


class UringIOManager:
    """Trio's IOManager on io_uring: readiness waits as POLL_ADD, ops as SQEs.

    Built by Trio's runner once per run (``TheIOManager()``, no arguments). Raises
    `trio_uring.UringUnavailableError` if io_uring cannot be used here.
    """

    #: Ring sizes. The SQ is flushed whenever it fills, so it only bounds one
    #: io_uring_enter; the CQ is large because a multishot op ends when a CQE
    #: does not fit.
    sq_entries = 512
    cq_entries = 8192
    #: The provided-buffer ring for waiting receives: how many buffers, how big
    #: (power of two count). A waiting receive holds no buffer; one is taken when
    #: data arrives and given back once its bytes are copied out, so only the
    #: receives completing in one tick compete for them (more: ENOBUFS, retried).
    recv_buffers = 1024
    recv_buffer_size = 16384
    #: How waiting stream receives use those buffers: "select" (one buffer a
    #: receive) or "bundle" (IORING_RECVSEND_BUNDLE: several); see
    #: `trio_uring._recvmodes`. The TRIO_URING_RECV_MODE environment variable
    #: overrides it. A kernel without the mode, or one that fails (or cannot run)
    #: the self-check made when the IOManager is created, gets "select".
    recv_mode = "select"
    #: Before sleeping in the kernel, watch the ring for up to this many
    #: microseconds, while events have recently been arriving that fast (see
    #: `_spin_then_wait`). 0 never spins. The TRIO_URING_SPIN_US environment
    #: variable overrides it. Not in guest mode.
    spin_us = 30
    #: Restrict the ring to the opcodes, SQE flags and register calls trio_uring
    #: uses (`trio_uring._restrict`). The TRIO_URING_RESTRICT environment variable
    #: (0 or 1) overrides it.
    restrict = True

    #: What this run's ring allows (or why it is not restricted).
    restrictions: RingRestrictions

    def __init__(self) -> None:
        spin_us = env_microseconds("TRIO_URING_SPIN_US", self.spin_us)  # first: a bad value leaks no fd
        self._recv_mode = recv_mode_from_environment(self.recv_mode)
        # Set up here, so an unusable io_uring fails trio.run at once with the reason.
        self._ring = ring = self._open_ring(coop_taskrun=True)
        # A mode other than select is checked now (once per process), before any
        # receive depends on it: the check needs fds a busy run may not have.
        self._recv_mode = usable_recv_mode(ring, self._recv_mode)
        self._driver = Driver(ring, self.recv_buffers, self.recv_buffer_size, self._recv_mode)
        self._loop_thread = threading.get_ident()
        self._reschedule: Callable[[Task], None] | None = None
        self._closing = False
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._wake_buf = ffi.new("uint64_t *")
        self._wakeup: _WakeupRead | None = None  # the armed wake-up read
        self._spin_window = max(spin_us, 0.0) * 1e-6
        self._spin_next = True

    def _start(self) -> Callable[[Task], None]:
        # First call from the runner: it exists now (it did not in __init__), and
        # no task has run yet.
        runner = GLOBAL_RUN_CONTEXT.runner
        if runner.is_guest:
            self._spin_window = 0.0  # the host's loop must not lose its thread to us
            self._ring.close()  # nothing was submitted on it
            self._ring = self._open_ring(coop_taskrun=False)
            self._driver = Driver(self._ring, self.recv_buffers, self.recv_buffer_size, self._recv_mode)
        self._reschedule = self._driver.reschedule = runner.reschedule
        self._arm_wakeup()
        for hook in first_tick_hooks:
            hook()
        return self._reschedule

    def _open_ring(self, *, coop_taskrun: bool) -> Ring:
        # A plain run's ring is entered by its one thread only: COOP_TASKRUN and a
        # registered ring fd (both are that thread's). A guest run's is not.
        ring, self.restrictions = open_ring(
            self.sq_entries,
            self.cq_entries,
            coop_taskrun=coop_taskrun,
            register_fd=coop_taskrun,
            restrict=restrict_enabled(self.restrict),
        )
        return ring

    def _arm_wakeup(self) -> None:
        if self._closing:
            return
        op = _WakeupRead(self)
        self._driver.start(op, None)
        self._wakeup = op

    # ------------------------------------------------------------ runner hooks

    # Any thread, any time (signal handlers included): make a get_events that is
    # blocked now, or the next one, return truthy.
    def force_wakeup(self) -> None:
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:  # closed, or the counter is saturated: a wakeup is pending anyway
            pass

    # Return value must be falsy IFF the timeout expired with nothing to do; it is
    # passed to process_events. Never raises for a signal: EINTR returns to Python
    # (so the handler runs) and the wait resumes for the rest of the timeout.
    def get_events(self, timeout: float) -> int:
        on_loop_thread = threading.get_ident() == self._loop_thread
        if on_loop_thread:
            if self._reschedule is None:
                self._start()
            self._driver.in_tick = False
            if timeout > 0 and self._spin_window:
                return self._spin_then_wait(timeout)
        return self._wait(timeout, on_loop_thread)

    def _spin_then_wait(self, timeout: float) -> int:
        # Going to sleep in the kernel and being woken costs tens of microseconds
        # (more on a VM); when events have been coming faster than that, watch the
        # ring instead for a short while. With IORING_SETUP_TASKRUN_FLAG the kernel
        # flags pending completion work in the ring, so watching is memory reads,
        # no syscalls. Adaptive: one window that catches nothing stops it, until a
        # wait again ends within a window.
        ring = self._ring
        n = ring.wait(0)  # submit what the tick queued; anything ready already?
        if n > 0:
            return n
        if n < 0:
            return self._wait(timeout, True)  # errors are handled (or raised) there
        idle_since = time.perf_counter()
        if self._spin_next:
            until = idle_since + min(self._spin_window, timeout)
            cq_ready = ring.cq_ready
            perf_counter = time.perf_counter
            while True:
                n = cq_ready()
                if n:
                    return n
                now = perf_counter()
                if now >= until:
                    break
            timeout -= now - idle_since
            if timeout <= 0:
                self._spin_next = False
                return 0
        n = self._wait(timeout, True)
        self._spin_next = n > 0 and time.perf_counter() - idle_since < self._spin_window
        return n

    def _wait(self, timeout: float, submit: bool) -> int:
        ring = self._ring
        started = time.monotonic() if timeout > 0 else 0.0
        remaining = timeout
        while True:
            n = ring.wait(remaining, submit=submit)
            if n >= 0:
                return n
            if n == _EINTR:
                if timeout > 0:
                    remaining = timeout - (time.monotonic() - started)
                    if remaining <= 0:
                        return ring.cq_ready()
                continue
            if n in _RETRY_LATER:
                return 1  # reap what completed; the next get_events submits again
            ring.raise_prep_error(n)

    # Run-loop thread, once per tick, before the batch of tasks: hand every CQE to
    # its op (which reschedules its task). ``events`` is ignored: the CQ is the truth.
    def process_events(self, events: object) -> None:
        if self._reschedule is None:
            self._start()
        driver = self._driver
        driver.in_tick = True
        ring = self._ring
        batch = 3 * ring.reap_batch
        while True:
            cqes = ring.reap()
            if cqes:
                driver.dispatch(cqes)
            if len(cqes) < batch:
                return

    def statistics(self) -> UringStatistics:
        reading = writing = 0
        for st in self._driver.fds.values():
            reader, writer = st.slots
            if reader is not None and reader.task is not None:
                reading += 1
            if writer is not None and writer.task is not None:
                writing += 1
        ops = self._driver.ops
        wakeup = self._wakeup
        return UringStatistics(
            tasks_waiting_read=reading,
            tasks_waiting_write=writing,
            ops_in_flight=len(ops) - (wakeup is not None and wakeup.user_data in ops),
            ops_submitted=self._ring.ops_submitted(),
        )

    # Run-loop thread, after every task has exited (or after a TrioInternalError,
    # with tasks still parked). Afterwards, abort callbacks and notify_closing may
    # still be called (abandoned coroutines are collected later): they must not
    # touch the ring.
    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        driver, ring = self._driver, self._ring
        try:
            # What is left: orphaned polls, background (multishot) ops, the wake-up
            # read. Cancel them all and wait for their CQEs, so that no buffer is
            # released while the kernel may still write into it.
            driver.cancel_everything()
            driver.reschedule = _nobody_waits
            deadline = time.monotonic() + 5.0
            while driver.ops:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                n = ring.wait(min(left, 0.5))
                if n < 0 and n != _EINTR:
                    break
                driver.dispatch(ring.reap())
        except (OSError, RuntimeError):
            pass  # a fork() child, or a ring the kernel broke: nothing left to drain
        finally:
            driver.close()
            ring.close()
            os.close(self._wake_fd)

    # ------------------------------------------------------------ public API (trio.lowlevel)

    async def wait_readable(self, fd: int | _HasFileno) -> None:
        """Block until the kernel reports that ``fd`` is readable (IORING_OP_POLL_ADD).

        :raises trio.BusyResourceError: if another task is already reading ``fd``.
        :raises trio.ClosedResourceError: if `notify_closing` is called meanwhile.
        :raises OSError: if ``fd`` is not a valid file descriptor (EBADF).
        """
        await self._driver.wait_ready(_fileno(fd), READ)

    async def wait_writable(self, fd: int | _HasFileno) -> None:
        """Block until the kernel reports that ``fd`` is writable (IORING_OP_POLL_ADD).

        :raises trio.BusyResourceError: if another task is already writing ``fd``.
        :raises trio.ClosedResourceError: if `notify_closing` is called meanwhile.
        :raises OSError: if ``fd`` is not a valid file descriptor (EBADF).
        """
        await self._driver.wait_ready(_fileno(fd), WRITE)

    def notify_closing(self, fd: int | _HasFileno) -> None:
        """Call before closing ``fd``: wake its waiters with ClosedResourceError and
        cancel its in-flight ops (by user_data, submitted before this returns)."""
        self._driver.notify_closing(_fileno(fd))


def current_driver() -> Driver | None:
    """The running io_uring backend's op driver; None under another backend.
    RuntimeError outside a run (as Trio's own calls say)."""
    try:
        io_manager: object = GLOBAL_RUN_CONTEXT.runner.io_manager  # Trio's type: its own backend
    except AttributeError:
        raise RuntimeError("must be called from async context") from None
    return io_manager._driver if isinstance(io_manager, UringIOManager) else None


def running_driver() -> Driver | None:
    """`current_driver`, or None outside a run."""
    try:
        io_manager: object = GLOBAL_RUN_CONTEXT.runner.io_manager  # Trio's type: its own backend
    except AttributeError:
        return None
    return io_manager._driver if isinstance(io_manager, UringIOManager) else None


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def _fileno(fd: int | _HasFileno) -> int:
    fd = fd if isinstance(fd, int) else fd.fileno()
    if not -(2**31) <= fd < 2**31:  # what epoll says of an fd that is no C int
        raise OverflowError("Python int too large to convert to C int")
    return fd


def _nobody_waits(task: Task, next_send: object = None) -> None:
    raise AssertionError("close() found a task still waiting")
