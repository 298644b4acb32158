"""trio_uring: an io_uring backend for Trio.

    import trio_uring
    trio_uring.run(main)          # like trio.run(main), on io_uring
    trio_uring.install()          # or: every trio.run from now on uses io_uring
"""

# _trio_contract first: a clear ImportError if this Trio lacks what the others import.
from . import _trio_contract as _trio_contract
from . import socket  # also installs the socket layer
from ._install import (
    check_available,
    install,
    installed,
    is_available,
    is_installed,
    run,
    start_guest_run,
    uninstall,
)
from ._iomanager import UringIOManager, UringStatistics
from ._ring import UringUnavailableError
from ._stream import (
    UringSocketListener,
    UringSocketStream,
    open_tcp_listeners,
    open_tcp_stream,
    serve_listeners,
    serve_tcp,
)

__version__ = "0.1.0"

__all__ = [
    "UringIOManager",
    "UringSocketListener",
    "UringSocketStream",
    "UringStatistics",
    "UringUnavailableError",
    "check_available",
    "install",
    "installed",
    "is_available",
    "is_installed",
    "open_tcp_listeners",
    "open_tcp_stream",
    "run",
    "serve_listeners",
    "serve_tcp",
    "socket",
    "start_guest_run",
    "uninstall",
]
