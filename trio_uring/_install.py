"""Choosing the backend: `run`, `start_guest_run`, `install` / `uninstall`; and
telling which one a run got: `current_backend`, and a notice per run on request.

Trio builds its I/O backend in ``setup_runner()`` with ``TheIOManager()``, a module
global of ``trio._core._run`` looked up at call time. It is the one patch point that
``trio.run``, ``trio.lowlevel.start_guest_run``, ``trio.testing.trio_test`` and
pytest-trio all go through, and this module is the only place that touches it.

* `install` makes it `UringIOManager` for the whole process, so plain ``trio.run``
  (and anyio, pytest-trio, servers built on Trio) run on io_uring. It installs the
  class itself, not a wrapper, because Trio's own tests monkeypatch methods on it.
  When io_uring is unavailable, ``install(fallback=True)`` leaves Trio's own backend
  behind a factory that can say so at each run (``TRIO_URING_VERBOSE=1``).
* `run` and `start_guest_run` use io_uring for their own run only, even while other
  threads run stock Trio: ``TheIOManager`` becomes a selector that builds what the
  calling thread asked for (Trio's previous backend unless asked).

Child processes are not this module's business: a forked child inherits the patch,
and ``python -m trio_uring run`` exports ``TRIO_URING=1`` for the others (`._config`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio
import trio._core._run as _trio_run

from ._config import env_flag
from ._iomanager import UringIOManager, first_tick_hooks
from ._ring import Ring, UringUnavailableError
from ._trio_contract import check_trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence
    from types import TracebackType

    from outcome import Outcome
    from trio.abc import Clock, Instrument
    from typing_extensions import TypeVarTuple, Unpack

    PosArgT = TypeVarTuple("PosArgT")

__all__ = [
    "check_available",
    "current_backend",
    "install",
    "install_temporarily",
    "is_available",
    "is_installed",
    "run",
    "start_guest_run",
    "uninstall",
]

RetT = TypeVar("RetT")

# The patch point: the module global of trio._core._run that Trio's runner calls.
# Trio declares it as the platform's own class (EpollIOManager on Linux), and as a
# name it imported rather than defined, so it is read and replaced by name here.
_PATCH_POINT: Final = "TheIOManager"


def _io_manager_class() -> type[object]:
    cls: type[object] = getattr(_trio_run, _PATCH_POINT)
    return cls


def _set_io_manager_class(cls: type[object]) -> None:
    setattr(_trio_run, _PATCH_POINT, cls)


# The backend Trio chose at import (EpollIOManager on Linux).
_stock_io_manager: type[object] = _io_manager_class()
_before_install: type[object] | None = None
_fallback_reason: UringUnavailableError | None = None  # why install(fallback=True) fell back
_thread = threading.local()
_lock = threading.Lock()
_availability: UringUnavailableError | bool | None = None


class _PerThreadIOManager:
    """Stands in for ``TheIOManager``: builds the manager the calling thread asked for."""

    def __new__(cls) -> Any:
        return (getattr(_thread, "io_manager", None) or _stock_io_manager)()


class _EpollFallback:
    """Stands in for ``TheIOManager`` after ``install(fallback=True)`` fell back: builds
    the backend that was there before, and announces it (with the reason) on request."""

    def __new__(cls) -> Any:
        if _fallback_reason is not None:
            # "... fix: .... To run on Trio's epoll backend instead, use ...": that
            # last sentence is advice this run has already taken.
            reason = (_fallback_reason.strerror or str(_fallback_reason)).partition(". To run on Trio's epoll")[0]
            _announce(f"this Trio run is on epoll, not io_uring: {reason.rstrip('.')}")
        return (_before_install or _stock_io_manager)()


# ---------------------------------------------------------------- which backend


def current_backend() -> str:
    """The I/O backend of the Trio run this is called from: ``"io_uring"`` on
    trio_uring's, else Trio's own (``"epoll"`` on Linux).

    :raises RuntimeError: outside a Trio run.
    """
    backend: str = trio.lowlevel.current_statistics().io_statistics.backend
    return backend


_bad_verbose_reported = False


def _announce(notice: str) -> None:
    """One line on stderr, if TRIO_URING_VERBOSE asks for it (read at each run)."""
    global _bad_verbose_reported
    try:
        if not env_flag("TRIO_URING_VERBOSE"):
            return
    except ValueError as exc:
        # A run is starting: raising here would abort it (or, at its first tick,
        # crash Trio's run loop), so say it once and carry on without notices.
        if _bad_verbose_reported:
            return
        _bad_verbose_reported = True
        notice = f"{exc}; no notices"
    if sys.stderr is not None:
        print(f"trio_uring: pid {os.getpid()}: {notice}", file=sys.stderr, flush=True)


def _announce_uring_run() -> None:
    kind = "guest run" if _trio_run.GLOBAL_RUN_CONTEXT.runner.is_guest else "run"
    _announce(f"this Trio {kind} is on io_uring")


first_tick_hooks.append(_announce_uring_run)


def check_available() -> None:
    """Raise `UringUnavailableError` (errno, cause and fix) unless io_uring works here."""
    check_trio(UringIOManager)  # this Trio is one trio_uring is tested with (_trio_contract)
    global _availability
    if _availability is None:
        try:
            Ring(8, 16).close()
        except UringUnavailableError as exc:
            _availability = exc
        else:
            _availability = True
    if _availability is not True:
        assert isinstance(_availability, UringUnavailableError)
        raise _availability


def is_available() -> bool:
    """Whether io_uring can be set up here with what trio_uring needs."""
    try:
        check_available()
    except UringUnavailableError:
        return False
    return True


def is_installed() -> bool:
    """Whether plain ``trio.run`` currently uses io_uring (see `install`)."""
    return _io_manager_class() is UringIOManager


def fallback_reason() -> UringUnavailableError | None:
    """Why the last ``install(fallback=True)`` left Trio on epoll (None if it did not)."""
    return _fallback_reason


def install(*, fallback: bool = False) -> bool:
    """Make every later ``trio.run`` in this process use the io_uring backend.

    If io_uring is unavailable, raise `UringUnavailableError`; or, with
    ``fallback=True``, warn (RuntimeWarning) and leave Trio on epoll. Returns
    whether io_uring is now installed.
    """
    global _before_install, _fallback_reason
    try:
        check_available()
    except UringUnavailableError as exc:
        if not fallback:
            raise
        warnings.warn(f"trio_uring: falling back to Trio's epoll backend. {exc}", RuntimeWarning, stacklevel=2)
        with _lock:
            _fallback_reason = exc
            if _io_manager_class() is not _EpollFallback:
                _before_install = _io_manager_class()
                _set_io_manager_class(_EpollFallback)
        return False
    with _lock:
        if not is_installed():
            _before_install = _io_manager_class()
            _set_io_manager_class(UringIOManager)
    return True


def uninstall() -> None:
    """Undo `install`: later ``trio.run`` calls use the backend they used before."""
    global _before_install, _fallback_reason
    with _lock:
        if _io_manager_class() in (UringIOManager, _EpollFallback):
            _set_io_manager_class(_before_install or _stock_io_manager)
            _before_install = None
        _fallback_reason = None


class install_temporarily:  # a class, named as the function it is used as, for __bool__
    """``with trio_uring.install_temporarily(): trio.run(...)``: `install` on entry, and
    `uninstall` on exit unless it was installed already. ``as`` gives what `install`
    returned (False: io_uring unavailable, ``fallback=True`` kept Trio on epoll).

    Not a question: to ask whether the backend is installed, use `is_installed`.
    """

    def __init__(self, *, fallback: bool = False) -> None:
        self._fallback = fallback
        self._undo = False

    def __enter__(self) -> bool:
        was_installed = is_installed()
        ok = install(fallback=self._fallback)
        self._undo = ok and not was_installed
        return ok

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._undo:
            uninstall()

    def __bool__(self) -> bool:
        raise TypeError(
            "install_temporarily() is a context manager: `with trio_uring.install_temporarily():`; "
            "to ask whether io_uring is installed, use trio_uring.is_installed()"
        )


@contextlib.contextmanager
def _this_thread_uses_uring() -> Iterator[None]:
    if is_installed():
        yield
        return
    check_available()
    global _stock_io_manager
    with _lock:
        current = _io_manager_class()
        if current is not _PerThreadIOManager:
            _stock_io_manager = current
            _set_io_manager_class(_PerThreadIOManager)
    previous = getattr(_thread, "io_manager", None)
    _thread.io_manager = UringIOManager
    try:
        yield
    finally:
        _thread.io_manager = previous


def run(
    async_fn: Callable[[Unpack[PosArgT]], Awaitable[RetT]],
    *args: Unpack[PosArgT],
    clock: Clock | None = None,
    instruments: Sequence[Instrument] = (),
    restrict_keyboard_interrupt_to_checkpoints: bool = False,
    strict_exception_groups: bool = True,
) -> RetT:
    """`trio.run`, on the io_uring backend. Same arguments, same result.

    :raises UringUnavailableError: if io_uring cannot be used here (errno, cause, fix).
    """
    with _this_thread_uses_uring():
        return trio.run(
            async_fn,
            *args,
            clock=clock,
            instruments=instruments,
            restrict_keyboard_interrupt_to_checkpoints=restrict_keyboard_interrupt_to_checkpoints,
            strict_exception_groups=strict_exception_groups,
        )


def start_guest_run(
    async_fn: Callable[..., Awaitable[RetT]],
    *args: object,
    run_sync_soon_threadsafe: Callable[[Callable[[], object]], object],
    done_callback: Callable[[Outcome[RetT]], object],
    run_sync_soon_not_threadsafe: Callable[[Callable[[], object]], object] | None = None,
    host_uses_signal_set_wakeup_fd: bool = False,
    clock: Clock | None = None,
    instruments: Sequence[Instrument] = (),
    restrict_keyboard_interrupt_to_checkpoints: bool = False,
    strict_exception_groups: bool = True,
) -> None:
    """`trio.lowlevel.start_guest_run`, on the io_uring backend. Same arguments.

    :raises UringUnavailableError: if io_uring cannot be used here (errno, cause, fix).
    """
    with _this_thread_uses_uring():
        trio.lowlevel.start_guest_run(
            async_fn,
            *args,
            run_sync_soon_threadsafe=run_sync_soon_threadsafe,
            done_callback=done_callback,
            run_sync_soon_not_threadsafe=run_sync_soon_not_threadsafe,
            host_uses_signal_set_wakeup_fd=host_uses_signal_set_wakeup_fd,
            clock=clock,
            instruments=instruments,
            restrict_keyboard_interrupt_to_checkpoints=restrict_keyboard_interrupt_to_checkpoints,
            strict_exception_groups=strict_exception_groups,
        )
