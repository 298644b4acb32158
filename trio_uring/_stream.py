"""trio_uring's own TCP streams: `trio.SocketStream`'s API and semantics, built for speed.

Where a stock Trio echo server's time goes is measured in the project's notes
(``perf-spike.md``): the io_uring syscalls are not the problem, the Python around
each call is. `UringSocketStream` is a `trio.abc.HalfCloseableStream` that keeps
Trio's guarantees (every call a checkpoint, BusyResourceError on concurrent use,
BrokenResourceError / ClosedResourceError as in Trio) with less of that Python:

* **Receives.** `receive_some` submits a MSG_DONTWAIT RECV and takes its result in
  the same io_uring_enter: whatever has arrived comes back with one system call and
  one checkpoint. Only when nothing is there does it wait, with a RECV whose buffer
  the kernel picks from the provided-buffer ring when data arrives (a waiting stream
  holds no buffer). A multishot RECV reading ahead into a queue was measured too: it
  was slower in every benchmark scenario here, and added ~15 us of latency at one
  connection (``docs/source/how-it-works.rst``).
* **Sends.** `send_all` first submits a MSG_DONTWAIT send and takes its result in
  the same io_uring_enter; whatever did not fit goes out with one waiting SEND
  (MSG_WAITALL), which holds the caller's buffer until its CQE.
* **Less per call.** No context managers, conflict detectors or memoryview slicing
  on the hot path; accepted streams inherit TCP_NODELAY and TCP_NOTSENT_LOWAT from
  their listener instead of setting them per connection.

`serve_tcp`, `open_tcp_listeners` and `open_tcp_stream` take Trio's arguments and
return these streams (and `UringSocketListener`). Outside the io_uring backend they
return Trio's own SocketStream / SocketListener.
"""

from __future__ import annotations

import errno
import logging
import operator
import os
import socket as _stdlib_socket
from typing import TYPE_CHECKING, Any, Final, overload

import trio

from . import _listeners
from ._iomanager import current_driver, running_driver
from ._lifecycle import Driver, protect_from_keyboard_interrupt
from ._socket import UringSocket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = [
    "UringSocketListener",
    "UringSocketStream",
    "open_tcp_listeners",
    "open_tcp_stream",
    "serve_listeners",
    "serve_tcp",
]

DEFAULT_RECEIVE_SIZE: Final = 65536
_CLOSED_ERRNOS: Final = (errno.EBADF, errno.ENOTSOCK)
# Trio sets these on every SocketStream (see trio/_highlevel_socket.py).
_TCP_NOTSENT_LOWAT: Final = getattr(_stdlib_socket, "TCP_NOTSENT_LOWAT", 25)
_NOTSENT_LOWAT: Final = 2**14


def _broken(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    # trio/_highlevel_socket.py: _translate_socket_errors_to_stream_errors
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    broken = trio.BrokenResourceError(f"socket connection broken: {exc}")
    broken.__cause__ = exc
    return broken


@protect_from_keyboard_interrupt
class UringSocketStream(trio.abc.HalfCloseableStream):
    """A `trio.abc.HalfCloseableStream` over a TCP socket, like `trio.SocketStream`.

    Same constructor, attributes and semantics as `trio.SocketStream` (``.socket``,
    `setsockopt`, `getsockopt`, `send_eof`, `wait_send_all_might_not_block`), with
    the receive and send paths described in this module's documentation.
    """

    def __init__(self, socket: trio.socket.SocketType, *, _inherited_sockopts: bool = False) -> None:
        if not isinstance(socket, trio.socket.SocketType):
            raise TypeError("UringSocketStream requires a Trio socket object")
        if socket.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError("UringSocketStream requires a SOCK_STREAM socket")
        self.socket = socket
        self._sending = False
        self._receiving = False
        # Bound on first use (see _bind): the run's driver and the stdlib socket.
        self._driver: Driver | None = None
        self._uring_socket: UringSocket | None = None
        if not _inherited_sockopts:
            _set_stream_sockopts(socket)

    def _bind(self) -> Driver | None:
        """The io_uring driver of the running run, or None (another backend, or a
        socket that is not ours: then Trio's own logic is used)."""
        driver = current_driver()
        if driver is None or not isinstance(self.socket, UringSocket):
            return None
        self._driver = driver
        self._uring_socket = self.socket
        return driver

    # ---------------------------------------------------------------- send

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this SocketStream")
        self._sending = True
        try:
            driver = self._driver
            if driver is None or driver.closed:
                driver = self._bind()
                if driver is None:
                    if self.socket.did_shutdown_SHUT_WR:
                        raise trio.ClosedResourceError("can't send data after sending EOF")
                    return await _stock_send_all(self.socket, data)
            sock = self._uring_socket
            assert sock is not None
            if sock._did_shutdown_SHUT_WR:
                raise trio.ClosedResourceError("can't send data after sending EOF")
            try:
                await sock._send_all(driver, data)
            except OSError as exc:
                raise _broken(exc) from None
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this SocketStream")
        self._sending = True
        try:
            if self.socket.fileno() == -1:
                raise trio.ClosedResourceError
            try:
                await self.socket.wait_writable()
            except OSError as exc:
                raise _broken(exc) from None
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this SocketStream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            if self.socket.did_shutdown_SHUT_WR:
                return
            try:
                self.socket.shutdown(_stdlib_socket.SHUT_WR)
            except OSError as exc:
                raise _broken(exc) from None
        finally:
            self._sending = False

    # ---------------------------------------------------------------- receive

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        else:
            if type(max_bytes) is not int:
                max_bytes = operator.index(max_bytes)  # TypeError, as socket.recv gives
            if max_bytes < 1:
                await trio.lowlevel.checkpoint()
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is currently receiving data on this SocketStream")
        self._receiving = True
        try:
            driver = self._driver
            if driver is None or driver.closed:
                driver = self._bind()
                if driver is None:
                    return await _stock_receive_some(self.socket, max_bytes)
            sock = self._uring_socket
            assert sock is not None
            try:
                return await sock._receive_some(driver, max_bytes)
            except OSError as exc:
                raise _broken(exc) from None
        finally:
            self._receiving = False

    # ---------------------------------------------------------------- close, options

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()

    @overload
    def setsockopt(self, level: int, option: int, value: int | bytes) -> None: ...

    @overload
    def setsockopt(self, level: int, option: int, value: None, length: int) -> None: ...

    def setsockopt(self, level: int, option: int, value: int | bytes | None, length: int | None = None) -> None:
        """Set an option on the underlying socket (like `trio.SocketStream.setsockopt`)."""
        if length is None:
            if value is None:
                raise TypeError("invalid value for argument 'value', must not be None when specifying length")
            return self.socket.setsockopt(level, option, value)
        if value is not None:
            raise TypeError(f"invalid value for argument 'value': {value!r}, must be None when specifying optlen")
        return self.socket.setsockopt(level, option, value, length)

    @overload
    def getsockopt(self, level: int, option: int) -> int: ...

    @overload
    def getsockopt(self, level: int, option: int, buffersize: int) -> bytes: ...

    def getsockopt(self, level: int, option: int, buffersize: int = 0) -> int | bytes:
        """Check an option on the underlying socket (like `trio.SocketStream.getsockopt`)."""
        if buffersize == 0:
            return self.socket.getsockopt(level, option)
        return self.socket.getsockopt(level, option, buffersize)


def _set_stream_sockopts(sock: trio.socket.SocketType) -> None:
    try:
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, True)
    except OSError:
        pass
    try:
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)
    except OSError:
        pass


async def _stock_send_all(sock: trio.socket.SocketType, data: Any) -> None:
    # Not on the io_uring backend: Trio's SocketStream logic, on the socket we have.
    with memoryview(data) as view:
        if not view:
            if sock.fileno() == -1:
                raise trio.ClosedResourceError("socket was already closed")
            await trio.lowlevel.checkpoint()
            return
        total_sent = 0
        while total_sent < len(view):
            with view[total_sent:] as remaining:
                try:
                    total_sent += await sock.send(remaining)
                except OSError as exc:
                    raise _broken(exc) from None


async def _stock_receive_some(sock: trio.socket.SocketType, max_bytes: int) -> bytes:
    try:
        return await sock.recv(max_bytes)
    except OSError as exc:
        raise _broken(exc) from None


# ---------------------------------------------------------------- listener


@protect_from_keyboard_interrupt
class UringSocketListener(trio.abc.Listener[UringSocketStream]):
    """A `trio.abc.Listener` of `UringSocketStream`, like `trio.SocketListener`."""

    def __init__(self, socket: trio.socket.SocketType) -> None:
        if not isinstance(socket, trio.socket.SocketType):
            raise TypeError("UringSocketListener requires a Trio socket object")
        if socket.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError("UringSocketListener requires a SOCK_STREAM socket")
        try:
            listening = socket.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ACCEPTCONN)
        except OSError:
            pass
        else:
            if not listening:
                raise ValueError("UringSocketListener requires a listening socket")
        self.socket = socket
        # Accepted sockets inherit these from the listener: set once here, not per connection.
        _set_stream_sockopts(socket)

    async def accept(self) -> UringSocketStream:
        """Accept an incoming connection (from the socket's multishot ACCEPT queue)."""
        while True:
            try:
                driver = current_driver()
                if isinstance(self.socket, UringSocket) and driver is not None:
                    sock: trio.socket.SocketType = await self.socket._accept_socket(driver)
                    return UringSocketStream(sock, _inherited_sockopts=True)
                sock, _ = await self.socket.accept()
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError from None
                if exc.errno not in _IGNORED_ACCEPT_ERRNOS:
                    raise
            else:
                return UringSocketStream(sock)

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()


# trio/_highlevel_socket.py: errors accept() may give for a connection that died
# before it was accepted; keep accepting.
_IGNORED_ACCEPT_ERRNOS: Final = frozenset(
    getattr(errno, name) for name in ("ECONNABORTED", "EPERM", "EPROTO") if hasattr(errno, name)
)


# ---------------------------------------------------------------- Trio's entry points


async def open_tcp_listeners(
    port: int, *, host: str | bytes | None = None, backlog: int | None = None, reuse_port: bool = False
) -> list[trio.abc.Listener[Any]]:
    """`trio.open_tcp_listeners`, returning `UringSocketListener` objects.

    ``reuse_port=True`` sets SO_REUSEPORT before binding: other sockets (other
    processes' too) can then listen on the same port, and the kernel spreads new
    connections across them (`trio_uring.workers`)."""
    listeners = await _listeners.open_tcp_listeners(port, host=host, backlog=backlog, reuse_port=reuse_port)
    if running_driver() is None:
        return list(listeners)
    return [UringSocketListener(listener.socket) for listener in listeners]


async def serve_tcp(
    handler: Callable[[UringSocketStream], Awaitable[object]],
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`trio.serve_tcp`, serving `UringSocketStream` connections; ``reuse_port`` as
    in `open_tcp_listeners`."""
    listeners = await open_tcp_listeners(port, host=host, backlog=backlog, reuse_port=reuse_port)
    await serve_listeners(handler, listeners, handler_nursery=handler_nursery, task_status=task_status)


async def serve_listeners(
    handler: Callable[[Any], Awaitable[object]],
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`trio.serve_listeners`, with the same behaviour (including the back-off on
    EMFILE & co.), that closes a finished `UringSocketStream` directly: Trio's
    ``aclose_forcefully`` closes it by raising Cancelled through a checkpoint, which
    costs more than the rest of a short connection's handling."""
    async with trio.open_nursery() as nursery:
        if handler_nursery is None:
            handler_nursery = nursery
        for listener in listeners:
            nursery.start_soon(_serve_one_listener, listener, handler_nursery, handler)
        task_status.started(list(listeners))


async def _serve_one_listener(
    listener: trio.abc.Listener[Any], handler_nursery: trio.Nursery, handler: Callable[[Any], Awaitable[object]]
) -> None:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                _LOGGER.error(
                    "accept returned %s (%s); retrying in %s seconds",
                    errno.errorcode[exc.errno], os.strerror(exc.errno), _SLEEP_TIME, exc_info=True,
                )
                await trio.sleep(_SLEEP_TIME)
            else:
                handler_nursery.start_soon(_run_handler, stream, handler)


async def _run_handler(stream: Any, handler: Callable[[Any], Awaitable[object]]) -> None:
    try:
        await handler(stream)
    finally:
        if type(stream) is UringSocketStream:
            stream.socket.close()  # what aclose_forcefully amounts to for it
        else:
            await trio.aclose_forcefully(stream)


# As trio/_highlevel_serve_listeners.py: accept() errors that mean "overloaded".
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS))
_SLEEP_TIME: Final = 0.100
_LOGGER = logging.getLogger("trio_uring.serve_listeners")


async def open_tcp_stream(
    host: str | bytes,
    port: int,
    *,
    happy_eyeballs_delay: float | None = 0.25,
    local_address: str | None = None,
) -> trio.abc.HalfCloseableStream:
    """`trio.open_tcp_stream`, returning a `UringSocketStream`."""
    stream = await trio.open_tcp_stream(
        host, port, happy_eyeballs_delay=happy_eyeballs_delay, local_address=local_address
    )
    if running_driver() is None:
        return stream
    return UringSocketStream(stream.socket, _inherited_sockopts=True)  # SocketStream set them

