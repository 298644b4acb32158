"""Which Trio trio_uring works with, and the check that this one is such a Trio.

trio_uring plugs into Trio below its public API: the runner's I/O manager slot
(`_install`), the runner object (`_iomanager`), Trio's socket class (`_socket`).
Trio may change any of that in any release, without a deprecation period. The
policy:

* The dependency is ``trio>=OLDEST_TRIO`` with no upper bound. An upper pin would
  stop every user from upgrading Trio on the day it releases (and from installing
  anything that needs the new Trio), whatever trio_uring does.
* `TESTED_TRIO` is the range of Trio release lines our test suite runs on: `make
  test` runs it on the newest, `make test-oldest-trio` on the oldest.
* Before a run, `check_trio` looks at every private name trio_uring uses (listed
  below) and at the Trio version. On a Trio outside the tested range, or whose
  internals moved, it raises `UringUnavailableError` naming the Trio version and
  the tested range: `trio_uring.run` and `install()` fail with that message before
  the run starts, and ``install(fallback=True)`` (``TRIO_URING=1``,
  ``--trio-backend=uring-or-epoll``) warns and leaves Trio on epoll. Never a crash
  deep inside Trio's run loop.
* ``TRIO_URING_UNTESTED_TRIO=1`` accepts a Trio outside the tested range as long
  as the check of its internals passes: for trying a new Trio before trio_uring
  has caught up.
* If Trio has moved a name that trio_uring imports at import time, ``import
  trio_uring`` fails with an ImportError that says the same (`import_problems`).

The checks below cover what ``grep -n 'trio\\._\\|GLOBAL_RUN_CONTEXT\\|runner\\.' trio_uring/*.py``
finds, grouped by the module that relies on it; a new use of Trio's internals
belongs here too. They look at names and shapes only (attributes, fields, the names
a function's code uses): they cannot prove behaviour, which is what the tested
range is for.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import re
import threading
from typing import Final

import trio

from ._config import env_flag
from ._ring import UringUnavailableError

__all__ = ["NEWEST_TESTED_TRIO", "OLDEST_TRIO", "TESTED_TRIO", "check_trio", "import_problems", "trio_problems"]

# The Trio release lines the test suite passes on (any patch release of them).
# OLDEST_TRIO is also the dependency's lower bound in pyproject.toml, and the one
# `make test-oldest-trio` installs; a test keeps the three in step.
OLDEST_TRIO: Final = "0.28.0"
NEWEST_TESTED_TRIO: Final = "0.35"
TESTED_TRIO: Final = f"Trio {OLDEST_TRIO.rsplit('.', 1)[0]} to {NEWEST_TESTED_TRIO}"

UNTESTED_TRIO_VAR: Final = "TRIO_URING_UNTESTED_TRIO"
_TRUE_WORDS: Final = ("1", "true", "yes", "on")
_FALSE_WORDS: Final = ("", "0", "false", "no", "off")
_WHY_RUN_MODULE: Final = "trio_uring replaces the runner's I/O manager there"
_WHY_SOCKET_TYPE: Final = "trio_uring's sockets subclass it"
_WHY_STREAMS: Final = "trio_uring gives Trio's SocketStream and serve_listeners a short path on io_uring"


def _release_line(version: str) -> tuple[int, int] | None:
    """(major, minor) of a Trio version string such as "0.35.0" or "0.36.0+dev"."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def _in_tested_range(version: str) -> bool:
    line = _release_line(version)
    oldest = _release_line(OLDEST_TRIO)
    newest = _release_line(NEWEST_TESTED_TRIO)
    assert oldest is not None and newest is not None
    return line is not None and oldest <= line <= newest


def import_problems() -> list[str]:
    """What is missing among the private names trio_uring's modules import."""
    problems = []
    try:
        run_module = importlib.import_module("trio._core._run")
    except ImportError:
        return [f"trio._core._run is gone ({_WHY_RUN_MODULE})"]
    for name in ("GLOBAL_RUN_CONTEXT", "TheIOManager"):
        if not hasattr(run_module, name):
            problems.append(f"trio._core._run.{name} is gone ({_WHY_RUN_MODULE})")
    try:
        socket_module = importlib.import_module("trio._socket")
    except ImportError:
        return [*problems, f"trio._socket is gone ({_WHY_SOCKET_TYPE})"]
    if not isinstance(getattr(socket_module, "_SocketType", None), type):
        problems.append(f"trio._socket._SocketType is gone ({_WHY_SOCKET_TYPE})")
    for module, name in (("trio._util", "ConflictDetector"), ("trio._highlevel_serve_listeners", "_run_handler")):
        try:
            found = hasattr(importlib.import_module(module), name)
        except ImportError:
            found = False
        if not found:
            problems.append(f"{module}.{name} is gone ({_WHY_STREAMS})")
    return problems


def _uses(function: object, *names: str) -> bool:
    """Whether ``function``'s code refers to every one of ``names`` (globals or attributes)."""
    code = getattr(inspect.unwrap(function), "__code__", None)  # type: ignore[arg-type]
    return code is not None and all(name in code.co_names for name in names)


def _runtime_problems(io_manager_class: type) -> list[str]:
    """What has moved among the private names and shapes trio_uring uses in a run."""
    import trio._core._run as run_module
    import trio._socket as socket_module

    problems = []

    # _install: the patch point must still be looked up when a run starts.
    if not _uses(run_module.setup_runner, "TheIOManager"):
        problems.append("trio._core._run.setup_runner no longer builds the I/O manager from TheIOManager")

    # _iomanager: every hook Trio's runner calls on its I/O manager. A new one would
    # be an AttributeError inside the run loop.
    stock = getattr(importlib.import_module("trio._core._io_epoll"), "EpollIOManager", None)
    if stock is None:
        problems.append("trio._core._io_epoll.EpollIOManager is gone (trio_uring compares its hooks with it)")
    else:
        hooks = {name for name in dir(stock) if not name.startswith("_") and callable(getattr(stock, name))}
        missing = sorted(hooks - set(dir(io_manager_class)))
        if missing:
            problems.append(f"Trio's I/O manager has hooks trio_uring does not implement: {', '.join(missing)}")
    for name in ("wait_readable", "wait_writable", "notify_closing"):
        if not _uses(getattr(trio.lowlevel, name), "GLOBAL_RUN_CONTEXT", "runner", "io_manager", name):
            problems.append(f"trio.lowlevel.{name} no longer calls the runner's I/O manager")

    # _iomanager, _socket: the runner (GLOBAL_RUN_CONTEXT.runner, an AttributeError
    # outside a run) and the fields and method read from it.
    context: object = run_module.GLOBAL_RUN_CONTEXT  # as declared by this Trio, which may differ
    if not isinstance(context, threading.local):
        problems.append("trio._core._run.GLOBAL_RUN_CONTEXT is no longer a thread-local")
    runner_class = getattr(run_module, "Runner", None)
    fields = {field.name for field in getattr(runner_class, "__attrs_attrs__", ())}
    for field in ("io_manager", "is_guest"):
        if field not in fields:
            problems.append(f"trio's Runner has no {field} field")
    if not callable(getattr(runner_class, "reschedule", None)):
        problems.append("trio's Runner has no reschedule() method")

    # _socket: UringSocket subclasses _SocketType, sets its private attributes itself
    # and inherits methods that read them.
    socket_type = socket_module._SocketType
    if not issubclass(socket_type, trio.socket.SocketType):
        problems.append("trio._socket._SocketType is no longer a trio.socket.SocketType")
    if not _uses(socket_type.__init__, "_sock", "_did_shutdown_SHUT_WR"):
        problems.append("trio._socket._SocketType no longer keeps its state in _sock and _did_shutdown_SHUT_WR")
    if not inspect.iscoroutinefunction(getattr(socket_type, "_resolve_address_nocp", None)):
        problems.append("trio._socket._SocketType._resolve_address_nocp is gone")
    if not callable(getattr(trio.socket, "set_custom_socket_factory", None)):
        problems.append("trio.socket.set_custom_socket_factory is gone")

    # _stream: the short path keeps SocketStream's send conflict detector, builds
    # accepted streams as SocketStream.__init__ does, and replaces serve_listeners's
    # per-connection task, looked up at call time.
    import trio._highlevel_serve_listeners as serve_module
    from trio._util import ConflictDetector

    if not _uses(ConflictDetector.__enter__, "_held") or not _uses(ConflictDetector.__init__, "_msg", "_held"):
        problems.append("trio._util.ConflictDetector no longer keeps its state in _held and _msg")
    if not _uses(trio.SocketStream.__init__, "socket", "_send_conflict_detector", "ConflictDetector"):
        problems.append("trio.SocketStream no longer keeps just socket and _send_conflict_detector")
    if not _uses(serve_module._serve_one_listener, "_run_handler"):
        problems.append("trio's serve_listeners no longer runs handlers through _run_handler")

    # _lifecycle: KeyboardInterrupt protection marks a function's code object in
    # place (Trio 0.28+); before, it returned a wrapper and marked nothing.
    def probe() -> None:
        pass

    if trio.lowlevel.enable_ki_protection(probe) is not probe:
        problems.append("trio.lowlevel.enable_ki_protection does not mark functions in place (Trio < 0.28)")
    return problems


def trio_problems(io_manager_class: type) -> list[str]:
    """Everything that keeps trio_uring off this Trio: [] if nothing does."""
    return import_problems() or _runtime_problems(io_manager_class)


def _trio_version() -> str:
    # Trio before 0.29 does not re-export __version__ for type checkers.
    return str(getattr(trio, "__version__"))  # noqa: B009


def _untested_trio_allowed() -> bool:
    return env_flag(UNTESTED_TRIO_VAR)


def _message(problem: str) -> str:
    version = _trio_version()
    return (
        f"trio_uring cannot use Trio {version}: {problem}. trio_uring is tested with {TESTED_TRIO}: "
        f"install one of those (pip install 'trio>={OLDEST_TRIO},<{_next_release_line()}'), "
        "or a trio_uring release that supports this Trio. To run on Trio's epoll backend instead, "
        "use trio.run, or trio_uring.install(fallback=True)."
    )


def _next_release_line() -> str:
    line = _release_line(NEWEST_TESTED_TRIO)
    assert line is not None
    return f"{line[0]}.{line[1] + 1}"


_problems_cache: dict[type, list[str]] = {}


def check_trio(io_manager_class: type) -> None:
    """Raise `UringUnavailableError` unless trio_uring can run on the imported Trio.

    ``io_manager_class`` is trio_uring's I/O manager, compared with Trio's own.
    """
    problems = _problems_cache.get(io_manager_class)
    if problems is None:
        problems = _problems_cache[io_manager_class] = trio_problems(io_manager_class)
    if problems:
        raise UringUnavailableError(errno.ENOSYS, _message("; ".join(problems)))
    if not _in_tested_range(_trio_version()) and not _untested_trio_allowed():
        raise UringUnavailableError(
            errno.ENOSYS,
            _message(f"it is outside the tested range ({UNTESTED_TRIO_VAR}=1 runs it anyway)"),
        )


# Imported first by trio_uring/__init__.py: if the other modules' imports from Trio
# would fail, fail here instead, with the versions and the fix.
_import_problems = import_problems()
if _import_problems:
    raise ImportError(_message("; ".join(_import_problems)))
