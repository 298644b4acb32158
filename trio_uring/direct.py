"""Direct descriptors: sockets that live only in the ring's registered file table.

A direct descriptor is a slot in a table of files registered with the ring, not a
number in the process's fd table. IORING_OP_SOCKET and IORING_OP_ACCEPT can put a
new socket straight into a slot (``io_uring_prep_socket_direct(3)``,
``io_uring_prep_accept_direct(3)``); every later op names it by slot with
IOSQE_FIXED_FILE, which spares the kernel the fd-table lookup (and the reference
count on the file) per op; IORING_OP_CLOSE with a file index empties the slot. No
system call outside the ring can reach such a socket: it has no fd, so no
``fileno()``, nothing for another library to poll, and its options are set through
the ring (`DirectSocket.setsockopt`: IORING_OP_URING_CMD, Linux 6.7).

That is where they fit Trio: a connection that nothing but its stream touches.
This module offers them opt-in, as `DirectSocketStream` (a
`trio.abc.HalfCloseableStream`, with the contract of `trio.SocketStream`),
`DirectSocketListener` (a `trio.abc.Listener` that accepts into the table), and
`open_direct_tcp_stream` / `open_direct_tcp_listeners` / `serve_direct_tcp`.
`DirectSocket` is the socket-level object underneath, with the kernel's errors as
`OSError`.

The table
=========

Each run's ring gets one sparse table (IORING_REGISTER_FILES2 with
IORING_RSRC_REGISTER_SPARSE), registered when first needed with
`DEFAULT_TABLE_SIZE` slots (at most the RLIMIT_NOFILE soft limit), or by
`register_table` with a size of your choice before the first direct socket. It
goes away with the ring, closing what is left in it. The kernel's errors, as the
liburing pages document them, surface as OSError with that errno:

* ``ENFILE``: no free slot (the table is full);
* ``EINVAL``: a slot number beyond the table (this module lets the kernel pick
  slots; `trio_uring.lowlevel.Operation` can name one);
* ``EBADF``: a fixed-file op on an empty slot (this module never sends one: a
  closed `DirectSocket` refuses calls itself with EBADF, see below);
* without a registered table (which this module never lets happen) the kernel
  says ``ENFILE`` for an allocated slot, ``ENXIO`` for a chosen one, ``EBADF``
  for a fixed-file op.

The closed-fd rule, for slots
=============================

A slot is reused like an fd number: once closed, the kernel may put the next
accepted connection in it. So a `DirectSocket` has its own
`trio_uring._lifecycle.FdState`, exactly as an fd has, but never entered in the
driver's fd map (slot numbers are not fd numbers). `DirectSocket.close` retires it
(`Driver.retire`: ops in flight are cancelled and end by their CQE, with
ClosedResourceError for their tasks; nothing started later reaches the kernel)
before the CLOSE is written: no op of the old socket can reach the slot's next
file. A socket whose SOCKET or ACCEPT completed for a caller who had left is
closed (`DirectSocket` ops' ``discard``), so no slot leaks.
"""

from __future__ import annotations

import errno
import operator
import resource
import socket as _stdlib_socket
import weakref
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any, Final, NoReturn

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled, enable_ki_protection

from . import _sockaddr
from ._iomanager import current_driver
from ._lifecycle import Driver, FdState, State, Waiter, protect_from_keyboard_interrupt
from ._ops import (
    MSG_TRUNC,
    READ,
    AcceptMulti,
    DirectAccept,
    DirectAcceptMulti,
    DirectClose,
    DirectConnect,
    DirectPollOut,
    DirectRecvSelect,
    DirectSend,
    DirectSetsockopt,
    DirectShutdown,
)
from ._ops import (
    DirectSocket as _SocketOp,
)
from ._restrict import OPT_IN_OPCODES, allow_opcodes
from ._ring import NOT_SUBMITTED, os_error
from ._ring_cffi import ffi, lib
from ._socket import _flags

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "DEFAULT_TABLE_SIZE",
    "DirectSocket",
    "DirectSocketListener",
    "DirectSocketStream",
    "DirectTable",
    "current_table",
    "open_direct_tcp_listeners",
    "open_direct_tcp_stream",
    "register_table",
    "serve_direct_tcp",
    "socket",
]

# Direct sockets set options with IORING_OP_URING_CMD, which the restricted ring
# allows only to programs that use them: importing this module declares it (for
# rings created from now on), as a trio_uring.lowlevel user would.
allow_opcodes(*OPT_IN_OPCODES)

#: Slots of a table registered on first use (capped by the RLIMIT_NOFILE soft limit,
#: which the kernel enforces on the table's size).
DEFAULT_TABLE_SIZE: Final = 4096
DEFAULT_RECEIVE_SIZE: Final = 65536  # trio/_highlevel_socket.py
_MAX_IO: Final = 2**30  # one op's count must fit the SQE's 32-bit len
_SCRATCH_MAX: Final = 65536  # receive_some asks for at most this much at once
_EAGAIN: Final = -errno.EAGAIN
_MSG_WAITALL: Final = int(_stdlib_socket.MSG_WAITALL)
_CLOSED_ERRNOS: Final = frozenset((errno.EBADF, errno.ENOTSOCK))
_TCP_NOTSENT_LOWAT: Final = getattr(_stdlib_socket, "TCP_NOTSENT_LOWAT", 25)
_NOTSENT_LOWAT: Final = 2**14  # trio/_highlevel_socket.py
_IGNORED_ACCEPT_ERRNOS: Final = frozenset(
    getattr(errno, name) for name in ("ECONNABORTED", "EPERM", "EPROTO") if hasattr(errno, name)
)

_tables: weakref.WeakKeyDictionary[Driver, DirectTable] = weakref.WeakKeyDictionary()


@protect_from_keyboard_interrupt
class DirectTable:
    """One run's registered file table, and the slots its live `DirectSocket`\\ s hold."""

    def __init__(self, driver: Driver, size: int) -> None:
        rc = lib.tu_files_sparse(driver.ring._r, size)
        if rc < 0:
            raise os_error(-rc, f"registering a table of {size} direct descriptors")
        self.driver = driver
        #: Number of slots.
        self.size = size
        #: Slot -> FdState of each live DirectSocket.
        self.live: dict[int, FdState] = {}
        self.send_now = partial(lib.tu_send_now_fixed, driver.ring._r)
        self.recv_now = partial(lib.tu_recv_now_fixed, driver.ring._r)

    def adopt(self, slot: int) -> FdState:
        """The FdState of the socket the kernel just put in ``slot``."""
        st = self.live[slot] = FdState(slot)
        return st

    def close_slot(self, slot: int) -> None:
        """Empty ``slot`` (a DIRECT CLOSE nobody waits for; it never blocks)."""
        if self.live.get(slot) is not None:
            return  # a live socket's: it closes it itself
        driver = self.driver
        if driver.closed:
            return  # the ring is gone, and its table with it
        driver.start(DirectClose(slot), None)


def _table(driver: Driver, size: int | None) -> DirectTable:
    table = _tables.get(driver)
    if table is None:
        if size is None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            size = DEFAULT_TABLE_SIZE if soft == resource.RLIM_INFINITY else min(DEFAULT_TABLE_SIZE, soft)
        table = _tables[driver] = DirectTable(driver, size)
    elif size is not None and size != table.size:
        raise RuntimeError(f"this run's direct descriptor table has {table.size} slots already")
    return table


def _driver() -> Driver:
    driver = current_driver()
    if driver is None:
        raise RuntimeError("direct descriptors need a run on the io_uring backend (trio_uring.run)")
    return driver


def register_table(size: int) -> DirectTable:
    """Register this run's table of direct descriptors with ``size`` slots now (it is
    otherwise registered on first use, with `DEFAULT_TABLE_SIZE`). RuntimeError if it
    has a table of another size already; OSError from the kernel (EMFILE: more
    slots than RLIMIT_NOFILE allows)."""
    size = operator.index(size)
    if not 1 <= size <= 1 << 20:
        raise ValueError(f"size must be between 1 and {1 << 20}, not {size}")
    return _table(_driver(), size)


def current_table() -> DirectTable | None:
    """This run's table, or None if no direct descriptor was made in it yet."""
    return _tables.get(_driver())


async def _raise_after_checkpoint(exc: BaseException) -> NoReturn:
    await cancel_shielded_checkpoint()
    raise exc


def _bad_fd() -> OSError:
    return OSError(errno.EBADF, "Bad file descriptor (this direct socket is closed)")


@protect_from_keyboard_interrupt
class DirectSocket:
    """A socket in the ring's file table (no fd). Its calls raise `OSError` as the
    kernel reports them, and `trio.ClosedResourceError` if another task closes
    it meanwhile; after `close`, OSError(EBADF), as a closed stdlib socket."""

    def __init__(self, table: DirectTable, slot: int, family: int, type: int, proto: int) -> None:
        self._table = table
        self._st = table.adopt(slot)
        self.family = family
        self.type = type
        self.proto = proto
        self.did_shutdown_SHUT_WR = False

    @property
    def slot(self) -> int:
        """Its slot in the table; -1 once closed."""
        return -1 if self._st.retired else self._st.fd

    def __repr__(self) -> str:
        return f"<trio_uring.direct.DirectSocket slot={self.slot} family={self.family} type={self.type}>"

    def _live(self) -> FdState:
        st = self._st
        if st.retired:
            raise _bad_fd()
        return st

    def close(self) -> None:
        """Close it: ops of other tasks on it end with ClosedResourceError, and nothing
        of this socket reaches the slot again, whichever socket takes it next.
        Idempotent; a checkpoint is not needed (like ``socket.close``)."""
        st = self._st
        if st.retired:
            return
        table = self._table
        driver = table.driver
        driver.retire(st)
        st.retired = True  # (also when the run is over: retire does nothing then)
        del table.live[st.fd]
        table.close_slot(st.fd)

    def __enter__(self) -> DirectSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def setsockopt(self, level: int, optname: int, value: int | bytes) -> None:
        """setsockopt(2), as ``socket.setsockopt`` takes it (an int or bytes value),
        through the ring (IORING_OP_URING_CMD, Linux 6.7; OSError from older
        kernels). Completes before it returns, without yielding."""
        st = self._live()
        optval = value.to_bytes(4, "little", signed=True) if isinstance(value, int) else bytes(value)
        driver = self._table.driver
        driver._check(st)
        driver.complete_now(DirectSetsockopt(st.fd, level, optname, optval))

    async def connect(self, address: Any) -> None:
        """Connect to ``address`` (numeric, as `trio.socket` sockets take after
        resolving). Like Trio's connect, a cancelled connect closes the socket."""
        await checkpoint_if_cancelled()
        try:
            st = self._live()
            sockaddr = _sockaddr.encode(self.family, address, "connect")
            if sockaddr is None:
                raise OSError(errno.EAFNOSUPPORT, "direct sockets connect only to IPv4 and IPv6 addresses")
            op = DirectConnect(st.fd, sockaddr, f"Error connecting to {address!r}")
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        try:
            await self._table.driver.perform(op, st)
        except trio.Cancelled:
            self.close()
            raise

    async def send(self, data: Any, flags: int = 0) -> int:
        """send(2): the number of bytes sent (waits for room)."""
        await checkpoint_if_cancelled()
        buf = None
        try:
            st = self._live()
            buf = ffi.from_buffer(data)
            op = DirectSend(st.fd, buf, min(len(buf), _MAX_IO), _flags(flags))
        except BaseException as exc:
            if buf is not None:
                ffi.release(buf)  # not left to the garbage collector (see _socket._send)
            await _raise_after_checkpoint(exc)
        driver = self._table.driver
        try:
            return await driver.perform(op, st)  # type: ignore[no-any-return]
        finally:
            if op.user_data not in driver.ops:
                op.release()

    async def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """recv(2) of up to ``bufsize`` bytes (b"" at end of stream)."""
        await checkpoint_if_cancelled()
        try:
            st = self._live()
            bufsize = operator.index(bufsize)
            if bufsize < 0:
                raise ValueError("negative buffersize in recv")
            flags = _flags(flags)
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        data = await self._recv(st, bufsize, flags)
        if flags & MSG_TRUNC and self.type & 0xF == _stdlib_socket.SOCK_STREAM:
            # The kernel discarded the bytes without writing them: the buffer we
            # read is one another connection's bytes went through.
            return bytes(len(data))
        return data

    async def _recv(self, st: FdState, bufsize: int, flags: int) -> bytes:
        # The caller passed a cancel point. What has arrived comes back with one
        # io_uring_enter; else a RECV waits with no buffer of its own.
        if bufsize == 0:
            await cancel_shielded_checkpoint()
            return b""
        bufsize = min(bufsize, _SCRATCH_MAX)
        table = self._table
        driver = table.driver
        scratch = driver.scratch(bufsize)
        try:
            driver._check(st)
            res = table.recv_now(st.fd, scratch, bufsize, flags)
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        if res >= 0:
            data: bytes = ffi.unpack(scratch, min(res, bufsize))
            await cancel_shielded_checkpoint()
            return data
        if res != _EAGAIN and res != NOT_SUBMITTED:
            await _raise_after_checkpoint(os_error(-res))
        return await driver.perform(DirectRecvSelect(st.fd, bufsize, flags, driver.buffers()), st)  # type: ignore[no-any-return]

    async def shutdown(self, how: int) -> None:
        """shutdown(2) (an op: it is async here)."""
        await checkpoint_if_cancelled()
        try:
            st = self._live()
            if how not in (_stdlib_socket.SHUT_RD, _stdlib_socket.SHUT_WR, _stdlib_socket.SHUT_RDWR):
                raise OSError(errno.EINVAL, "Invalid argument")
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        await self._table.driver.perform(DirectShutdown(st.fd, how), st)
        if how in (_stdlib_socket.SHUT_WR, _stdlib_socket.SHUT_RDWR):
            self.did_shutdown_SHUT_WR = True

    async def wait_writable(self) -> None:
        """Until there is room to send (a POLL_ADD on the slot)."""
        await checkpoint_if_cancelled()
        try:
            st = self._live()
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        driver = self._table.driver
        op = DirectPollOut(st.fd)
        while True:
            await driver.perform(op, st)
            if op.res & op.wanted:
                return
            op = DirectPollOut(st.fd)

    async def _send_all(self, data: Any) -> None:
        # The stream's send_all: what fits goes out at once (MSG_DONTWAIT, one
        # io_uring_enter); the rest with SENDs that wait for room (MSG_WAITALL).
        await checkpoint_if_cancelled()
        try:
            st = self._live()
            buf = data if type(data) is bytes else ffi.from_buffer(data)
            total = len(buf)
            table = self._table
            table.driver._check(st)
            res = table.send_now(st.fd, buf, total, 0) if 0 < total <= _MAX_IO else 0
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        if res == total or (res < 0 and res != _EAGAIN and res != NOT_SUBMITTED):
            if buf is not data:
                ffi.release(buf)
            if res < 0:
                await _raise_after_checkpoint(os_error(-res))
            await cancel_shielded_checkpoint()
            return
        if buf is data:
            buf = ffi.from_buffer(data)  # for pointer arithmetic (the rest starts mid-buffer)
        sent = max(res, 0)
        driver = table.driver
        op: DirectSend | None = None
        try:
            while sent < total:
                op = DirectSend(st.fd, buf, min(total - sent, _MAX_IO), _MSG_WAITALL, offset=sent)
                sent += await driver.perform(op, st)
        finally:
            if op is None or op.user_data not in driver.ops:
                ffi.release(buf)


@enable_ki_protection
async def socket(
    family: int = _stdlib_socket.AF_INET, type: int = _stdlib_socket.SOCK_STREAM, proto: int = 0
) -> DirectSocket:
    """A new socket in a slot the kernel picks (OSError ENFILE if none is free) of
    this run's table, registered now if it is not yet.

    (No slot of your choice, as ``io_uring_prep_socket_direct(3)`` allows: the
    kernel would silently close a file it finds there, and a connection it is
    accepting may be about to land in it.)"""
    driver = _driver()
    await checkpoint_if_cancelled()
    try:
        table = _table(driver, None)
        op = _SocketOp(family, type, proto, None, table.close_slot)
    except BaseException as exc:
        await _raise_after_checkpoint(exc)
    slot = await driver.perform(op, None)
    return DirectSocket(table, slot, family, type, proto)


# ---------------------------------------------------------------- streams


def _set_stream_options(setsockopt: Callable[[int, int, int], None]) -> None:
    # What trio.SocketStream sets on every connection, each if the kernel lets us.
    for option, value in ((_stdlib_socket.TCP_NODELAY, 1), (_TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)):
        try:
            setsockopt(_stdlib_socket.IPPROTO_TCP, option, value)
        except OSError:
            pass


def _translate(exc: OSError) -> NoReturn:
    # trio/_highlevel_socket.py: _translate_socket_errors_to_stream_errors
    if exc.errno in _CLOSED_ERRNOS:
        raise trio.ClosedResourceError("this socket was already closed") from None
    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


@protect_from_keyboard_interrupt
class DirectSocketStream(trio.abc.HalfCloseableStream):
    """`trio.SocketStream`'s contract on a `DirectSocket`: `send_all`,
    `receive_some`, `send_eof`, `wait_send_all_might_not_block`, `aclose`.

    BusyResourceError for two tasks sending at once (or receiving at once while
    one of them waits), ClosedResourceError after `aclose` (or `send_eof`, for
    sending), BrokenResourceError for a connection error; every call a checkpoint.
    Cancellation as trio_uring's own streams: the op is cancelled with
    ASYNC_CANCEL and its CQE decides (data that arrived is not lost; bytes a
    cancelled send_all had sent are sent, as with Trio). There is no fd: no
    ``fileno``, ``setsockopt`` or ``getsockopt``.
    """

    def __init__(self, socket: DirectSocket) -> None:
        if not isinstance(socket, DirectSocket):
            raise TypeError("DirectSocketStream requires a DirectSocket")
        if socket.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError("DirectSocketStream requires a SOCK_STREAM socket")
        self.socket = socket
        self._sending = False
        _set_stream_options(socket.setsockopt)

    @classmethod
    def _accepted(cls, socket: DirectSocket) -> DirectSocketStream:
        # Accepted from a listener that has the options: Linux copied them.
        self = cls.__new__(cls)
        self.socket = socket
        self._sending = False
        return self

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        sock = self.socket
        if sock.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this DirectSocketStream")
        self._sending = True
        try:
            if not (data if type(data) is bytes else memoryview(data).nbytes):
                if sock.slot == -1:
                    raise trio.ClosedResourceError("socket was already closed")
                await trio.lowlevel.checkpoint()
                return
            await sock._send_all(data)
        except OSError as exc:
            _translate(exc)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this DirectSocketStream")
        self._sending = True
        try:
            if self.socket.slot == -1:
                raise trio.ClosedResourceError
            await self.socket.wait_writable()
        except OSError as exc:
            _translate(exc)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this DirectSocketStream")
        self._sending = True
        try:
            sock = self.socket
            if sock.did_shutdown_SHUT_WR:  # idempotent, as Trio's
                await trio.lowlevel.checkpoint()
                return
            await sock.shutdown(_stdlib_socket.SHUT_WR)
        except OSError as exc:
            _translate(exc)
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        sock = self.socket
        await checkpoint_if_cancelled()
        try:
            st = sock._live()
        except OSError as exc:
            await cancel_shielded_checkpoint()
            _translate(exc)
        try:
            return await sock._recv(st, max_bytes, 0)
        except OSError as exc:
            _translate(exc)

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()


@protect_from_keyboard_interrupt
class DirectSocketListener(trio.abc.Listener[DirectSocketStream]):
    """A `trio.abc.Listener` on a listening trio socket whose connections are
    accepted straight into the table, as `DirectSocketStream`\\ s.

    Each `accept` is one IORING_OP_ACCEPT with IORING_FILE_INDEX_ALLOC; with
    ``multishot=True`` a multishot ACCEPT fills a queue of accepted slots that
    `accept` takes from (at most ``queue_limit`` of them at a time: each holds a
    slot of the table until it is taken).

    As `trio.SocketListener`: BusyResourceError for two tasks accepting at once,
    ClosedResourceError once the listener is closed, connections that died
    before they were accepted are skipped. The options `trio.SocketStream` sets on
    each connection (TCP_NODELAY, TCP_NOTSENT_LOWAT) are set once on the listening
    socket, at the first accept: Linux copies them to accepted sockets.
    """

    def __init__(self, socket: trio.socket.SocketType, *, multishot: bool = False, queue_limit: int = 64) -> None:
        if not isinstance(socket, trio.socket.SocketType):
            raise TypeError("DirectSocketListener requires a Trio socket object")
        if socket.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError("DirectSocketListener requires a SOCK_STREAM socket")
        if queue_limit < 1:
            raise ValueError(f"queue_limit must be >= 1, not {queue_limit}")
        self.socket = socket
        self._options_set = False
        self._queue = _AcceptQueue(queue_limit) if multishot else None

    async def accept(self) -> DirectSocketStream:
        driver = _driver()
        table = _table(driver, None)
        sock = self.socket
        if not self._options_set:
            self._options_set = True
            if sock.family in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
                _set_stream_options(sock.setsockopt)
        while True:
            try:
                if self._queue is None:
                    slot = await self._accept_one(driver, table)
                else:
                    slot = await self._queue.accept(sock, driver, table)
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError from None
                if exc.errno not in _IGNORED_ACCEPT_ERRNOS:
                    raise
                continue
            return DirectSocketStream._accepted(DirectSocket(table, slot, sock.family, sock.type, sock.proto))

    async def _accept_one(self, driver: Driver, table: DirectTable) -> int:
        await checkpoint_if_cancelled()
        try:
            fd = self.socket.fileno()
            if fd == -1:
                raise trio.ClosedResourceError
            op = DirectAccept(fd, table.close_slot)
            st = driver.fd(fd)
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        return await driver.perform(op, st)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if self._queue is not None:
            self._queue.close()
        self.socket.close()
        await trio.lowlevel.checkpoint()


@protect_from_keyboard_interrupt
class _AcceptQueue:
    """Slots a listener's multishot direct ACCEPT filled, until accept() takes them.

    As `trio_uring._socket._AcceptQueue` is for fds: bounded (at ``limit`` the
    multishot is cancelled and the kernel's backlog holds the rest; it is armed again
    when the queue is half drained); every slot that arrives is owned here until
    accept() takes it, and closed if the listener closes first; an error CQE (ENFILE:
    the table is full) ends the multishot, the next accept() raises it, and the one
    after arms a new one.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.driver: Driver | None = None
        self.table: DirectTable | None = None
        self.ready: deque[int] = deque()
        self.error: int | None = None
        self.op: DirectAcceptMulti | None = None
        self.waiter: Waiter | None = None
        self.closed = False

    def bind(self, driver: Driver, table: DirectTable) -> None:
        if self.driver is not driver:  # a new run: the old one's ring, table and op are gone
            self.driver, self.table = driver, table
            self.ready.clear()
            self.op = None
            self.waiter = None
            self.error = None

    def wants_more(self) -> bool:
        return self.op is None and self.error is None and not self.closed and len(self.ready) <= self.limit // 2

    def arm(self, st: FdState) -> None:
        assert self.driver is not None
        op = DirectAcceptMulti(st.fd, self.completed)
        self.driver.start(op, st)
        self.op = op

    def completed(self, op: AcceptMulti, res: int, final: bool) -> None:
        # Runs from the op's CQEs (dispatch), before its final CQE moves its state.
        if final and self.op is op:
            self.op = None
        driver, table = self.driver, self.table
        if res >= 0:
            if self.closed and table is not None:
                table.close_slot(res)
            else:
                self.ready.append(res)
                if len(self.ready) >= self.limit and self.op is op and driver is not None:
                    driver.cancel(op)
        elif op.state is State.IN_FLIGHT:  # an error nobody asked for (not our cancel)
            self.error = -res
        if self.waiter is not None and driver is not None:
            driver.wake(self.waiter)

    async def accept(self, sock: trio.socket.SocketType, driver: Driver, table: DirectTable) -> int:
        await checkpoint_if_cancelled()
        self.bind(driver, table)
        blocked = False
        while True:
            try:
                fd = sock.fileno()
                if fd == -1:
                    self.close()
                    raise trio.ClosedResourceError
                if self.ready:
                    slot = self.ready.popleft()
                    if self.wants_more():  # stopped when full: go on as the queue drains
                        try:
                            self.arm(driver.fd(fd))
                        except BaseException:
                            table.close_slot(slot)
                            raise
                    if not blocked:
                        await cancel_shielded_checkpoint()
                    return slot
                if self.error is not None:
                    err, self.error = self.error, None
                    raise os_error(err)
                st = driver.fd(fd)
                if self.wants_more():
                    self.arm(st)
                waiter = self.waiter = driver.park(st, READ)
            except BaseException as exc:
                if blocked:
                    raise
                await _raise_after_checkpoint(exc)
            try:
                await driver.sleep(waiter)
            finally:
                self.waiter = None
            blocked = True

    def close(self) -> None:
        self.closed = True
        table = self.table
        while self.ready:
            slot = self.ready.popleft()
            if table is not None:
                table.close_slot(slot)
        op, driver = self.op, self.driver
        if op is not None and driver is not None and not driver.closed:
            driver.cancel(op)


# ---------------------------------------------------------------- entry points


async def open_direct_tcp_stream(host: str | bytes, port: int) -> DirectSocketStream:
    """`trio.open_tcp_stream`'s job with a direct socket: the addresses of ``host``
    are tried in turn (no happy eyeballs); OSError if none connects."""
    infos = await trio.socket.getaddrinfo(host, port, type=_stdlib_socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no results found for hostname lookup: {host!r}")
    errors: list[OSError] = []
    for family, type_, proto, _, address in infos:
        sock = await socket(family, type_, proto)
        try:
            await sock.connect(address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return DirectSocketStream(sock)
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"all attempts to connect to {host!r}:{port} failed: {errors}") from errors[-1]


async def open_direct_tcp_listeners(
    port: int, *, host: str | bytes | None = None, backlog: int | None = None, multishot: bool = False
) -> list[DirectSocketListener]:
    """`trio.open_tcp_listeners`, with listeners that accept direct sockets
    (``multishot``: see `DirectSocketListener`)."""
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    return [DirectSocketListener(listener.socket, multishot=multishot) for listener in listeners]


async def serve_direct_tcp(
    handler: Callable[[DirectSocketStream], Awaitable[object]],
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    multishot: bool = False,
    task_status: trio.TaskStatus[list[DirectSocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`trio.serve_tcp`, each connection a `DirectSocketStream`."""
    listeners = await open_direct_tcp_listeners(port, host=host, backlog=backlog, multishot=multishot)
    await trio.serve_listeners(handler, listeners, handler_nursery=handler_nursery, task_status=task_status)
