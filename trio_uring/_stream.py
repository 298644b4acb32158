"""Trio's high-level networking, fast on the io_uring backend: `trio.SocketStream`,
`trio.SocketListener` and `trio.serve_listeners`, unchanged for their users.

Where a Trio server's time goes is measured in the project's notes
(``perf-spike.md``): not in the system calls but in the Python around each one,
and the largest share of it is SocketStream's own layer (context managers, a
conflict detector, memoryview slicing, error translation) around the socket calls.
Users run unchanged code, frameworks included, so that is where the speed has to
arrive. On the io_uring backend, and only there, these Trio methods take a short
path; everywhere else they are Trio's own:

* ``SocketStream.receive_some``: one MSG_DONTWAIT RECV completed within one
  io_uring_enter (`UringSocket._receive_some`); if nothing has arrived, a RECV that
  waits with no buffer of its own (the provided-buffer ring).
* ``SocketStream.send_all``: what fits goes out at once; the rest with SENDs that
  wait for room (`UringSocket._send_all`).
* ``SocketListener.accept``: connections from the listener's multishot ACCEPT
  queue. TCP_NODELAY and TCP_NOTSENT_LOWAT, which SocketStream sets on every
  connection, are set once on the listener: Linux copies them to every accepted
  socket.
* ``serve_listeners``'s per-connection task closes a finished stream directly;
  Trio's ``aclose_forcefully`` closes it by raising Cancelled through a checkpoint,
  which costs more than the rest of a short connection's handling.

Semantics are Trio's, line by line: the conflict rule (BusyResourceError, through
the stream's own ConflictDetector), ClosedResourceError after send_eof or close,
the errno translation to BrokenResourceError / ClosedResourceError, every call a
checkpoint. Trio's own test suite, which tests these classes, passes on the backend;
``trio.testing.check_half_closeable_stream`` is run on them in our tests. A stock
``trio.run`` (in another thread, or before or after) goes through Trio's code: the
short path is taken only for a `UringSocket` whose run is on io_uring. The switch
``TRIO_URING_TRIO_STREAMS=0`` (or `use_fast_trio_streams(False)`) turns it off.

`serve_tcp`, `open_tcp_listeners` and `open_tcp_stream` are Trio's, with one more
option (``reuse_port``); `UringSocketStream` and `UringSocketListener`, the names
of trio_uring's own stream classes in development versions, are now Trio's classes themselves.
"""

from __future__ import annotations

import errno
import operator
import socket as _stdlib_socket
import sys
from typing import TYPE_CHECKING, Any, Final, NoReturn

import trio
import trio._highlevel_serve_listeners as _trio_serve_listeners
from trio import SocketListener, SocketStream
from trio._util import ConflictDetector

from . import _listeners
from ._config import env_flag
from ._socket import UringSocket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "UringSocketListener",
    "UringSocketStream",
    "open_tcp_listeners",
    "open_tcp_stream",
    "serve_listeners",
    "serve_tcp",
    "use_fast_trio_streams",
]

#: Development versions of trio_uring had stream classes of their own; Trio's, fast on the backend,
#: took their place.
UringSocketStream = SocketStream
UringSocketListener = SocketListener

DEFAULT_RECEIVE_SIZE: Final = 65536  # trio/_highlevel_socket.py
_BUFFER_TYPES: Final = frozenset((bytes, bytearray, memoryview))
_CLOSED_ERRNOS: Final = frozenset((errno.EBADF, errno.ENOTSOCK))
_TCP_NOTSENT_LOWAT: Final = getattr(_stdlib_socket, "TCP_NOTSENT_LOWAT", 25)
_NOTSENT_LOWAT: Final = 2**14
# trio/_highlevel_socket.py: errors accept() may give for a connection that died
# before it was accepted; keep accepting.
_IGNORED_ACCEPT_ERRNOS: Final = frozenset(
    getattr(errno, name) for name in ("ECONNABORTED", "EPERM", "EPROTO") if hasattr(errno, name)
)

# Trio's own methods, for everything that is not a UringSocket on a live run.
_trio_send_all = SocketStream.send_all
_trio_receive_some = SocketStream.receive_some
_trio_accept = SocketListener.accept
_trio_run_handler = _trio_serve_listeners._run_handler


def _translate(exc: OSError) -> NoReturn:
    # trio/_highlevel_socket.py: _translate_socket_errors_to_stream_errors
    if exc.errno in _CLOSED_ERRNOS:
        raise trio.ClosedResourceError("this socket was already closed") from None
    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


async def _send_all(self: SocketStream, data: bytes | bytearray | memoryview) -> None:
    sock = self.socket
    if type(sock) is UringSocket:
        driver = sock._uring_driver()
        if driver is not None:
            if sock._did_shutdown_SHUT_WR:
                raise trio.ClosedResourceError("can't send data after sending EOF")
            if type(data) not in _BUFFER_TYPES:
                memoryview(data).release()  # Trio's TypeError for what is not a buffer
            detector = self._send_conflict_detector
            if detector._held:
                raise trio.BusyResourceError(detector._msg)
            detector._held = True
            try:
                await sock._send_all(driver, data)
            except OSError as exc:
                _translate(exc)
            finally:
                detector._held = False
            return
    await _trio_send_all(self, data)


async def _receive_some(self: SocketStream, max_bytes: int | None = None) -> bytes:
    sock = self.socket
    if type(sock) is UringSocket:
        driver = sock._uring_driver()
        if driver is not None:
            if max_bytes is None:
                max_bytes = DEFAULT_RECEIVE_SIZE
            else:
                if max_bytes < 1:  # in Trio's order: this TypeError first, then socket.recv's
                    raise ValueError("max_bytes must be >= 1")
                if type(max_bytes) is not int:
                    max_bytes = operator.index(max_bytes)
                if max_bytes > sys.maxsize:  # socket.recv's OverflowError, through Trio's path
                    return await _trio_receive_some(self, max_bytes)
            try:
                return await sock._receive_some(driver, max_bytes)
            except OSError as exc:
                _translate(exc)
    return await _trio_receive_some(self, max_bytes)


async def _accept(self: SocketListener) -> SocketStream:
    sock = self.socket
    if type(sock) is UringSocket:
        driver = sock._uring_driver()
        if driver is not None:
            if not sock._stream_options_set:
                _set_stream_options(sock)
                sock._stream_options_set = True
            while True:
                try:
                    accepted = await sock._accept_socket(driver)
                except OSError as exc:
                    if exc.errno in _CLOSED_ERRNOS:
                        raise trio.ClosedResourceError from None
                    if exc.errno not in _IGNORED_ACCEPT_ERRNOS:
                        raise
                else:
                    return _stream_with_options_inherited(accepted)
    return await _trio_accept(self)


def _set_stream_options(sock: trio.socket.SocketType) -> None:
    # The options SocketStream sets on each connection (trio/_highlevel_socket.py).
    try:
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, True)
    except OSError:
        pass
    try:
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)
    except OSError:
        pass


def _stream_with_options_inherited(sock: UringSocket) -> SocketStream:
    """``SocketStream(sock)`` for a socket accepted from a listener that has the
    stream options already (Linux copies them to accepted sockets): what
    ``SocketStream.__init__`` does, without its two setsockopt calls."""
    stream = SocketStream.__new__(SocketStream)
    stream.socket = sock
    stream._send_conflict_detector = ConflictDetector("another task is currently sending data on this SocketStream")
    return stream


async def _run_handler(stream: Any, handler: Callable[[Any], Awaitable[object]]) -> None:
    try:
        await handler(stream)
    finally:
        if type(stream) is SocketStream and type(stream.socket) is UringSocket and stream.socket._uring_driver():
            stream.socket.close()  # what aclose_forcefully amounts to for it
        else:
            await trio.aclose_forcefully(stream)


_FAST: Final = {
    (SocketStream, "send_all"): (_trio_send_all, _send_all),
    (SocketStream, "receive_some"): (_trio_receive_some, _receive_some),
    (SocketListener, "accept"): (_trio_accept, _accept),
    (_trio_serve_listeners, "_run_handler"): (_trio_run_handler, _run_handler),
}


def use_fast_trio_streams(enabled: bool) -> None:
    """Give Trio's SocketStream, SocketListener and serve_listeners the short path on
    the io_uring backend (the default), or leave them Trio's everywhere (``False``;
    also ``TRIO_URING_TRIO_STREAMS=0`` in the environment)."""
    for (owner, name), (trio_version, ours) in _FAST.items():
        setattr(owner, name, ours if enabled else trio_version)


use_fast_trio_streams(env_flag("TRIO_URING_TRIO_STREAMS", default=True))


# ---------------------------------------------------------------- Trio's entry points


async def open_tcp_listeners(
    port: int, *, host: str | bytes | None = None, backlog: int | None = None, reuse_port: bool = False
) -> list[SocketListener]:
    """`trio.open_tcp_listeners`, with ``reuse_port``.

    ``reuse_port=True`` sets SO_REUSEPORT before binding: other sockets (other
    processes' too) can then listen on the same port, and the kernel spreads new
    connections across them (`trio_uring.workers`)."""
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    return await _listeners.open_tcp_listeners(port, host=host, backlog=backlog, reuse_port=True)


async def serve_tcp(
    handler: Callable[[SocketStream], Awaitable[object]],
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[list[SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`trio.serve_tcp`, with ``reuse_port`` as in `open_tcp_listeners`."""
    listeners = await open_tcp_listeners(port, host=host, backlog=backlog, reuse_port=reuse_port)
    await trio.serve_listeners(handler, listeners, handler_nursery=handler_nursery, task_status=task_status)


#: `trio.serve_listeners` (fast on the backend, as above).
serve_listeners = trio.serve_listeners

#: `trio.open_tcp_stream` (its SocketStream is fast on the backend, as above).
open_tcp_stream = trio.open_tcp_stream
