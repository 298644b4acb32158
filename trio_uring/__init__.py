"""trio_uring: an io_uring backend for Trio.

    import trio_uring
    trio_uring.run(main)          # like trio.run(main), on io_uring
    trio_uring.install()          # or: every trio.run from now on uses io_uring
"""

from typing import TYPE_CHECKING

# _trio_contract first: a clear ImportError if this Trio lacks what the others import.
from . import _trio_contract as _trio_contract
from . import lowlevel, socket  # socket also installs the socket layer
from ._files import fsync, open_file
from ._install import (
    check_available,
    current_backend,
    install,
    install_temporarily,
    is_available,
    is_installed,
    run,
    start_guest_run,
    uninstall,
)
from ._iomanager import UringIOManager, UringStatistics
from ._path import Path
from ._ring import UringUnavailableError
from ._send_file import send_file

# Trio's own, under the names trio_uring's development versions gave their stream
# classes and helpers (Trio's SocketStream & co. are fast on the backend now: see _stream.py).
from ._stream import UringSocketListener as UringSocketListener
from ._stream import UringSocketStream as UringSocketStream
from ._stream import open_tcp_listeners, serve_tcp, use_fast_trio_streams
from ._stream import open_tcp_stream as open_tcp_stream
from ._stream import serve_listeners as serve_listeners
from ._trio_files import use_ring_files

__version__ = "0.1.0"

__all__ = [
    "Path",
    "UringIOManager",
    "UringStatistics",
    "UringUnavailableError",
    "check_available",
    "current_backend",
    "fsync",
    "install",
    "install_temporarily",
    "is_available",
    "is_installed",
    "lowlevel",
    "open_file",
    "open_tcp_listeners",
    "run",
    "send_file",
    "serve_tcp",
    "socket",
    "start_guest_run",
    "uninstall",
    "use_fast_trio_streams",
    "use_ring_files",
]

# Tracebacks and reprs name the public module (trio_uring.UringUnavailableError, not
# trio_uring._ring.UringUnavailableError), as Trio's fixup_module_metadata does.
for _name in __all__:
    _obj = globals()[_name]
    if callable(_obj) and getattr(_obj, "__module__", "").startswith("trio_uring._"):
        _obj.__module__ = __name__
del _name, _obj

if not TYPE_CHECKING:  # (mypy would take every misspelt name for this)

    def __getattr__(name: str) -> object:
        if name == "installed":  # renamed in 0.1: `if trio_uring.installed():` was always true
            raise AttributeError(
                "trio_uring.installed() was renamed install_temporarily() (a context manager: "
                "`with trio_uring.install_temporarily(): ...`); to ask whether io_uring is "
                "installed, use trio_uring.is_installed()"
            )
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
