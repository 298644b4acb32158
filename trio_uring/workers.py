"""Worker processes serving one port: every core busy.

A Python process runs Python on one core at a time, so a Trio server uses one core
however many the machine has. The standard way past that (gunicorn's and
Hypercorn's workers; monoio and Netty, one ring per core) is several processes
sharing the listening port, each with its own event loop:

    from trio_uring.workers import serve_tcp_workers

    async def handler(stream): ...

    if __name__ == "__main__":
        raise SystemExit(serve_tcp_workers(handler, 8000))   # one worker per core

How it works
============

* **The supervisor** is the calling process. It runs no Trio and holds no ring: it
  forks the workers, watches them, restarts them if asked, and stops them. It waits
  in ``select`` on two pipes: the signal wakeup fd (SIGINT, SIGTERM, SIGCHLD) and
  one on which each worker says "I am serving".
* **Each worker** is a forked child running its own ``trio_uring.run``, hence its
  own io_uring ring and provided buffers. `serve_tcp_workers`' workers each open
  their own listening sockets with SO_REUSEPORT on the same port; the kernel spreads
  incoming connections across the workers' sockets by a hash of each connection's
  addresses and ports. Nothing else is shared.
* **fork, not spawn.** The handler reaches the worker as it is: a closure, a lambda,
  a bound method, an object with open files all work, with no pickling and no
  requirement that it be importable by name (spawn and forkserver need both). The
  costs, which this module handles: the supervisor must not be inside a Trio run
  (checked) and should not have started threads (a fork copies only the calling
  thread, so a lock another thread held stays locked in the child); buffered
  stdout/stderr are flushed before each fork; a ring the supervisor still had would
  be unusable in the child (trio_uring marks it so), and each worker makes its own.
* **The port.** With ``port=0`` the supervisor binds (without listening) a
  SO_REUSEPORT socket to let the kernel pick a port, and keeps it: every worker,
  restarted ones included, listens on that port, and no other program can take it
  in the meantime. Not listening, the supervisor's socket gets no connections.

Shutdown and exit status
========================

SIGINT (Ctrl-C: the terminal sends it to the workers as well) or SIGTERM to the
supervisor stops everything: each worker gets SIGTERM, which cancels its run (its
handlers see `trio.Cancelled`, its connections are closed, its listeners too), and
exits 0. A worker still running ``shutdown_timeout`` seconds later is killed. A
second SIGINT/SIGTERM to the supervisor kills the workers at once. If the
supervisor itself is killed, the kernel kills the workers (PR_SET_PDEATHSIG), so
no worker is ever orphaned.

A worker that dies (an exception in ``main``, a crash, ``kill -9``) is logged on the
``trio_uring.workers`` logger; the others go on serving. With ``restart=True`` it
is replaced, unless ``max_restarts`` restarts have already happened within
``restart_window`` seconds: then the supervisor stops every worker (a worker that
keeps dying at start-up will not be forked in a loop forever).

`run_workers` returns the exit status for ``sys.exit``: 0 when it was asked to stop
(or every ``main`` returned) and every worker then exited cleanly; 1 when a worker
died and was not replaced, the restart limit was reached, or a worker had to be
killed at shutdown.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import operator
import os
import select
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from . import _install
from ._listeners import reserve_tcp_port
from ._stream import serve_tcp

if TYPE_CHECKING:
    import socket

    from ._stream import UringSocketStream

__all__ = ["default_workers", "run_workers", "serve_tcp_workers"]

_LOGGER = logging.getLogger("trio_uring.workers")
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
_WATCHED = _STOP_SIGNALS | {signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1
_PID = struct.Struct("=i")  # a worker's "I am serving" message: its pid (atomic in a pipe)


def default_workers() -> int:
    """One worker per core this process may run on (os.process_cpu_count on Python
    3.13+, else the CPU affinity mask)."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        n: int | None = count()
    else:
        n = len(os.sched_getaffinity(0))
    return n or 1


def serve_tcp_workers(
    handler: Callable[[UringSocketStream], Awaitable[object]],
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    workers: int | None = None,
    restart: bool = False,
    max_restarts: int = 5,
    restart_window: float = 60.0,
    shutdown_timeout: float = 10.0,
    on_ready: Callable[[int], object] | None = None,
) -> int:
    """Serve ``handler`` on ``port`` from ``workers`` processes (default: one per core),
    each running `trio_uring.serve_tcp` with ``reuse_port=True`` in its own
    `trio_uring.run`. Blocks until stopped (SIGINT, SIGTERM); returns the exit status.

    ``port=0`` picks a free port, the same for every worker. ``on_ready(port)`` is
    called in the supervisor once every worker is accepting connections. The other
    arguments are `run_workers`'.
    """
    port, reserved = reserve_tcp_port(port, host=host)
    try:
        main = partial(serve_tcp, handler, port, host=host, backlog=backlog, reuse_port=True)
        return run_workers(
            main,
            workers=workers,
            restart=restart,
            max_restarts=max_restarts,
            restart_window=restart_window,
            shutdown_timeout=shutdown_timeout,
            on_ready=None if on_ready is None else partial(on_ready, port),
            _close_in_worker=reserved,
        )
    finally:
        for sock in reserved:
            sock.close()


def _in_trio_run() -> bool:
    # trio.lowlevel.in_trio_run() is newer than the oldest Trio we support (0.28).
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def run_workers(
    main: Callable[..., Awaitable[object]],
    *args: object,
    workers: int | None = None,
    restart: bool = False,
    max_restarts: int = 5,
    restart_window: float = 60.0,
    shutdown_timeout: float = 10.0,
    on_ready: Callable[[], object] | None = None,
    _close_in_worker: list[socket.socket] | tuple[()] = (),
) -> int:
    """Run ``await main(*args, task_status=...)`` in ``workers`` forked processes, each
    under its own `trio_uring.run`, until SIGINT or SIGTERM; return the exit status.

    ``main`` is started like ``nursery.start(main, *args)``: it must call
    ``task_status.started()`` once it is serving (``trio_uring.serve_tcp`` does).
    ``on_ready()`` is called in the supervisor when every worker has done so.

    ``restart``: replace a worker that dies, at most ``max_restarts`` times within
    ``restart_window`` seconds (beyond that, stop everything and return 1).
    ``shutdown_timeout``: how long workers get to finish after SIGTERM before they
    are killed.

    Call from the main thread, outside any Trio run (it forks; see the module docs).
    """
    if _in_trio_run():
        raise RuntimeError("run_workers forks worker processes: call it outside trio.run / trio_uring.run")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("run_workers must be called from the main thread (it handles SIGINT and SIGTERM)")
    workers = default_workers() if workers is None else operator.index(workers)  # TypeError if not an int
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if max_restarts < 0 or restart_window < 0 or shutdown_timeout < 0:
        raise ValueError("max_restarts, restart_window and shutdown_timeout must not be negative")
    supervisor = _Supervisor(
        partial(main, *args), workers, restart, max_restarts, restart_window, shutdown_timeout, on_ready,
        list(_close_in_worker),
    )  # fmt: skip
    return supervisor.run()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class _Supervisor:
    def __init__(
        self,
        main: Callable[..., Awaitable[object]],
        workers: int,
        restart: bool,
        max_restarts: int,
        restart_window: float,
        shutdown_timeout: float,
        on_ready: Callable[[], object] | None,
        close_in_worker: list[socket.socket],
    ) -> None:
        self.main = main
        self.workers = workers
        self.restart = restart
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.shutdown_timeout = shutdown_timeout
        self.on_ready = on_ready
        self.close_in_worker = close_in_worker
        self.pids: dict[int, int] = {}  # live worker pid -> its slot (0..workers-1)
        self.ready: set[int] = set()  # pids that said they are serving
        self.all_ready_reported = False
        self.restarts: collections.deque[float] = collections.deque()
        self.stopping_since: float | None = None
        self.failed = False
        self.parent_pid = os.getpid()

    # ------------------------------------------------------------ supervisor

    def run(self) -> int:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ready_r, self.ready_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.ready_r, False)
        old_handlers = {sig: signal.signal(sig, _note_signal) for sig in _WATCHED}
        old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        try:
            for slot in range(self.workers):
                self._fork(slot)
            return self._supervise()
        finally:
            self._kill_all(signal.SIGKILL)  # nothing outlives the supervisor, whatever happened
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
            for fd in (self.wake_r, self.wake_w, self.ready_r, self.ready_w):
                os.close(fd)

    def _supervise(self) -> int:
        while True:
            timeout = None
            if self.stopping_since is not None:
                timeout = max(0.0, self.stopping_since + self.shutdown_timeout - time.monotonic())
            readable, _, _ = select.select([self.wake_r, self.ready_r], [], [], timeout)
            if self.wake_r in readable:
                for signum in _read_all(self.wake_r):
                    if signum in _STOP_SIGNALS:
                        self._stop(signal.Signals(signum).name)
            if self.ready_r in readable:
                self._note_ready(_read_all(self.ready_r))
            self._reap()
            if not self.pids:
                if self.stopping_since is None and self.failed:
                    _LOGGER.error("no worker left: exiting")
                return 1 if self.failed else 0
            if self.stopping_since is not None and time.monotonic() >= self.stopping_since + self.shutdown_timeout:
                for pid, slot in self.pids.items():
                    _LOGGER.error(
                        "worker %d (pid %d) did not stop within %.1f s: killing it", slot, pid, self.shutdown_timeout
                    )
                self.failed = True
                self._kill_all(signal.SIGKILL)

    def _stop(self, why: str) -> None:
        if self.stopping_since is not None:  # asked twice: no more waiting
            _LOGGER.warning("%s again: killing the workers", why)
            self.failed = True
            self._kill_all(signal.SIGKILL)
            return
        _LOGGER.info("%s: stopping %d workers", why, len(self.pids))
        self.stopping_since = time.monotonic()
        for pid in self.pids:
            _kill(pid, signal.SIGTERM)

    def _note_ready(self, data: bytes) -> None:
        for (pid,) in _PID.iter_unpack(data[: len(data) - len(data) % _PID.size]):
            if pid in self.pids:
                self.ready.add(pid)
                _LOGGER.info("worker %d (pid %d) is serving", self.pids[pid], pid)
        if not self.all_ready_reported and len(self.ready) >= self.workers:
            self.all_ready_reported = True
            if self.on_ready is not None:
                self.on_ready()

    def _reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.pids.pop(pid, None)
            self.ready.discard(pid)
            if slot is None:
                continue  # not one of ours
            self._worker_ended(slot, pid, status)

    def _worker_ended(self, slot: int, pid: int, status: int) -> None:
        how = _describe(status)
        if self.stopping_since is not None:
            if status != 0:
                self.failed = True
                _LOGGER.error("worker %d (pid %d) %s during shutdown", slot, pid, how)
            return
        if status == 0:
            _LOGGER.info("worker %d (pid %d) finished (its main returned)", slot, pid)
            return
        if not self.restart:
            self.failed = True
            _LOGGER.error("worker %d (pid %d) %s; not restarted (restart=False)", slot, pid, how)
            return
        now = time.monotonic()
        while self.restarts and self.restarts[0] < now - self.restart_window:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts:
            self.failed = True
            _LOGGER.error(
                "worker %d (pid %d) %s; %d restarts within %.0f s already: stopping all workers",
                slot, pid, how, len(self.restarts), self.restart_window,
            )  # fmt: skip
            self._stop("restart limit")
            return
        self.restarts.append(now)
        _LOGGER.warning("worker %d (pid %d) %s; restarting it", slot, pid, how)
        self._fork(slot)

    def _kill_all(self, sig: int) -> None:
        for pid in list(self.pids):
            _kill(pid, sig)
        if sig == signal.SIGKILL:
            for pid in list(self.pids):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                del self.pids[pid]

    def _fork(self, slot: int) -> None:
        for stream in (sys.stdout, sys.stderr):  # or the child would write it again
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        # Blocked across the fork: a signal now must not reach the child while it
        # still has the supervisor's handlers (and wakeup fd).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            pid = os.fork()
            if pid == 0:
                self._worker(mask)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.pids[pid] = slot
        _LOGGER.info("worker %d started (pid %d)", slot, pid)

    # ------------------------------------------------------------ worker

    def _worker(self, mask: set[int | signal.Signals]) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for fd in (self.wake_r, self.wake_w, self.ready_r):
                os.close(fd)
            for sock in self.close_in_worker:
                sock.close()
            # If the supervisor dies, so do we: never an orphan. SIGKILL because a
            # SIGTERM could arrive before the run is ready to handle it.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != self.parent_pid:
                os._exit(1)  # it died before the prctl
            # SIGINT/SIGTERM stay blocked until the run's signal receiver is in place;
            # outside it they are ignored (a second Ctrl-C must not interrupt the
            # shutdown). Ignoring discards a pending signal, so look first.
            stop_requested = bool(signal.sigpending() & _STOP_SIGNALS)
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set(mask) | _STOP_SIGNALS)
            if not stop_requested:
                _install.run(_worker_main, self.main, self.ready_w)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (AttributeError, OSError, ValueError):
                    pass
            os._exit(code)


def _note_signal(signum: int, frame: Any) -> None:
    """The supervisor's handler: the signal number reaches the wakeup fd; nothing else to do."""


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


async def _worker_main(main: Callable[..., Awaitable[object]], ready_w: int) -> None:
    # The receiver stays open until everything has shut down, so a signal arriving
    # during the shutdown is swallowed by it, not acted on.
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            await nursery.start(_main_then_stop, main, nursery.cancel_scope)
            os.write(ready_w, _PID.pack(os.getpid()))
            os.close(ready_w)


async def _cancel_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _main_then_stop(
    main: Callable[..., Awaitable[object]], scope: trio.CancelScope, *, task_status: trio.TaskStatus[Any]
) -> None:
    await main(task_status=task_status)
    scope.cancel()  # main is done: stop watching for signals too
