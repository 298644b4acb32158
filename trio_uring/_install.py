"""Choosing the backend: `run`, `start_guest_run`, `install` / `uninstall`.

Trio builds its I/O backend in ``setup_runner()`` with ``TheIOManager()``, a module
global of ``trio._core._run`` looked up at call time. It is the one patch point that
``trio.run``, ``trio.lowlevel.start_guest_run``, ``trio.testing.trio_test`` and
pytest-trio all go through, and this module is the only place that touches it.

* `install` makes it `UringIOManager` for the whole process, so plain ``trio.run``
  (and anyio, pytest-trio, servers built on Trio) run on io_uring. It installs the
  class itself, not a wrapper, because Trio's own tests monkeypatch methods on it.
* `run` and `start_guest_run` use io_uring for their own run only, even while other
  threads run stock Trio: ``TheIOManager`` becomes a selector that builds what the
  calling thread asked for (Trio's previous backend unless asked).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio
import trio._core._run as _trio_run

from ._iomanager import UringIOManager
from ._ring import Ring, UringUnavailableError
from ._trio_contract import check_trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

    from trio.abc import Clock, Instrument

__all__ = [
    "check_available",
    "install",
    "installed",
    "is_available",
    "is_installed",
    "run",
    "start_guest_run",
    "uninstall",
]

T = TypeVar("T")

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
_thread = threading.local()
_lock = threading.Lock()
_availability: UringUnavailableError | bool | None = None


class _PerThreadIOManager:
    """Stands in for ``TheIOManager``: builds the manager the calling thread asked for."""

    def __new__(cls) -> Any:
        return (getattr(_thread, "io_manager", None) or _stock_io_manager)()


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


def install(*, fallback: bool = False) -> bool:
    """Make every later ``trio.run`` in this process use the io_uring backend.

    If io_uring is unavailable, raise `UringUnavailableError`; or, with
    ``fallback=True``, warn (RuntimeWarning) and leave Trio on epoll. Returns
    whether io_uring is now installed.
    """
    global _before_install
    try:
        check_available()
    except UringUnavailableError as exc:
        if not fallback:
            raise
        warnings.warn(f"trio_uring: falling back to Trio's epoll backend. {exc}", RuntimeWarning, stacklevel=2)
        return False
    with _lock:
        if not is_installed():
            _before_install = _io_manager_class()
            _set_io_manager_class(UringIOManager)
    return True


def uninstall() -> None:
    """Undo `install`: later ``trio.run`` calls use the backend they used before."""
    global _before_install
    with _lock:
        if is_installed():
            _set_io_manager_class(_before_install or _stock_io_manager)
            _before_install = None


@contextlib.contextmanager
def installed(*, fallback: bool = False) -> Iterator[bool]:
    """``with trio_uring.installed(): trio.run(...)``: `install`, then `uninstall` on exit."""
    was_installed = is_installed()
    ok = install(fallback=fallback)
    try:
        yield ok
    finally:
        if ok and not was_installed:
            uninstall()


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
    async_fn: Callable[..., Awaitable[T]],
    *args: object,
    clock: Clock | None = None,
    instruments: Sequence[Instrument] = (),
    restrict_keyboard_interrupt_to_checkpoints: bool = False,
    strict_exception_groups: bool = True,
) -> T:
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


def start_guest_run(async_fn: Callable[..., Awaitable[object]], *args: object, **kwargs: Any) -> None:
    """`trio.lowlevel.start_guest_run`, on the io_uring backend. Same arguments."""
    with _this_thread_uses_uring():
        trio.lowlevel.start_guest_run(async_fn, *args, **kwargs)
