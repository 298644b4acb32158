"""UringSocket: Trio's socket type, with its I/O done by io_uring ops.

`UringSocket` subclasses Trio's own ``trio._socket._SocketType``, so it is a
`trio.socket.SocketType` in every check Trio makes (SocketStream, SocketListener,
open_tcp_stream, Trio's own tests) and keeps every method it does not override.
Through the ring go:

=====================================  ======================================
socket creation                        IORING_OP_SOCKET
connect                                IORING_OP_CONNECT
accept                                 IORING_OP_ACCEPT, multishot, queued
send                                   IORING_OP_SEND
sendto, sendmsg                        IORING_OP_SENDMSG
recv, recv_into                        IORING_OP_RECV
recvfrom, recvfrom_into, recvmsg(_into) IORING_OP_RECVMSG
=====================================  ======================================

Each call is a checkpoint exactly as in Trio (a cancel point before anything is
submitted, a schedule point after), and follows the op lifecycle of
`trio_uring._lifecycle`: cancellation becomes ASYNC_CANCEL and the op's own CQE
decides, so a result that won the race is delivered, and buffers stay referenced
until the kernel is done with them. Outside the io_uring backend (a UringSocket used
in a stock ``trio.run``), and for address families other than AF_INET, AF_INET6 and
AF_UNIX, the calls fall back to Trio's implementation.

How sockets become UringSockets under the backend:

* ``trio.socket.socket()`` asks the per-run socket factory, which the backend
  installs at the start of every run (`install_socket_factory`).
* Sockets wrapped by Trio itself (``from_stdlib_socket``, ``fromfd``, ``socketpair``,
  ``socket(fileno=...)``, ``dup``, stock ``accept``) all construct
  ``trio._socket._SocketType``; while a run on this backend is active, constructing
  that class gives a UringSocket (`_SocketType.__new__` below). This is one patch
  on Trio's class instead of one per constructor, and it also catches a
  ``from_stdlib_socket`` imported before trio_uring was.
"""

from __future__ import annotations

import errno
import operator
import socket as _stdlib_socket
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, NoReturn

import trio
from trio._core._run import GLOBAL_RUN_CONTEXT
from trio._socket import _SocketType
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled, enable_ki_protection

from . import _sockaddr
from ._iomanager import current_driver, first_tick_hooks, running_driver
from ._lifecycle import Driver, FdState, State, protect_from_keyboard_interrupt
from ._ops import (
    MSG_TRUNC,
    READ,
    AcceptMulti,
    Connect,
    Recv,
    RecvBytes,
    RecvMsg,
    Send,
    SendMsg,
    Socket,
    close_quietly,
    recv_waiting,
)
from ._ring import NOT_SUBMITTED, os_error
from ._ring_cffi import ffi

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._lifecycle import Waiter
    from ._ops import _SocketOp

__all__ = ["UringSocket", "UringSocketFactory", "install_socket_factory", "socket", "socket_async"]

SOCK_NONBLOCK: Final = _stdlib_socket.SOCK_NONBLOCK
SOCK_CLOEXEC: Final = _stdlib_socket.SOCK_CLOEXEC
_SOCK_STREAM: Final = int(_stdlib_socket.SOCK_STREAM)
_MSG_WAITALL: Final = int(_stdlib_socket.MSG_WAITALL)
_MAX_IO: Final = 0x7FFFF000  # Linux's MAX_RW_COUNT: the most one send/recv moves
_EAGAIN: Final = -errno.EAGAIN
# recv() reads what is there at once into one reusable buffer per run, then copies
# out what it got (the stdlib allocates bufsize bytes per call, then shrinks them).
# A stream recv returns at most this much per call (a short read, as recv(2) may
# give); a datagram is received whole, whatever its size.
_SCRATCH_MAX: Final = 1 << 20
_SOCKLEN_MAX: Final = 2**31 - 1  # the stdlib's limit for an ancillary buffer (socklen_t)
_ENCODED_FAMILIES: Final = (_sockaddr.AF_INET, _sockaddr.AF_INET6, _sockaddr.AF_UNIX)


async def _raise_after_checkpoint(exc: BaseException) -> NoReturn:
    # Trio raises a call's synchronous errors (bad arguments, closed socket) after a
    # cancel-shielded schedule point, so the call is a checkpoint either way.
    await cancel_shielded_checkpoint()
    raise exc


def _would_block(res: int) -> bool:
    return res == _EAGAIN or res == NOT_SUBMITTED


def _bufsize(bufsize: Any, method: str) -> int:
    # As the stdlib checks recv's size: an int (TypeError), not negative
    # (ValueError), fits a C ssize_t (OverflowError).
    size = operator.index(bufsize)
    if size < 0:
        raise ValueError(f"negative buffersize in {method}")
    if size > sys.maxsize:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return size


def _nbytes(nbytes: Any, available: int, method: str) -> int:
    n: int = operator.index(nbytes)  # the stdlib's TypeError, then its OverflowError
    if n > sys.maxsize:
        raise OverflowError("Python int too large to convert to C ssize_t")
    if n < 0:
        raise ValueError(f"negative buffersize in {method}")
    if n == 0:
        return available
    if n > available:
        raise ValueError(
            "nbytes is greater than the length of the buffer"
            if method == "recvfrom_into"
            else "buffer too small for requested bytes"
        )
    return n


def _writable(buffer: Any, method: str) -> Any:
    try:
        return ffi.from_buffer(buffer, require_writable=True)
    except (BufferError, TypeError):
        got = "None" if buffer is None else type(buffer).__name__  # as CPython's argument parser says
        raise TypeError(f"{method}() argument 1 must be read-write bytes-like object, not {got}") from None


def _readable(data: Any) -> Any:
    try:
        return ffi.from_buffer(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None


def _flags(flags: Any) -> int:
    # The stdlib takes flags as a C int (TypeError, OverflowError) and the kernel
    # judges the bits; the SQE's msg_flags field is its unsigned twin.
    value = operator.index(flags)
    if not -(2**31) <= value < 2**31:
        raise OverflowError(f"signed integer is {'greater than maximum' if value > 0 else 'less than minimum'}")
    return value & 0xFFFF_FFFF


# ---------------------------------------------------------------- the ops of each call
# Each builds the op a socket call performs, from the socket's fd and the call's
# arguments; a bad argument raises here (UringSocket._io raises it after a schedule
# point, as Trio does).


def _send(sock: UringSocket, fd: int, data: Any, flags: int) -> Send:
    buf = _readable(data)
    try:
        return Send(fd, buf, min(len(buf), _MAX_IO), _flags(flags))
    except BaseException:
        # A borrowed buffer must not be left to the garbage collector: the
        # traceback keeps it in a cycle, and when the cycle is collected CPython
        # may clear a memoryview that still has the borrow: a crash.
        ffi.release(buf)
        raise


def _recv(sock: UringSocket, fd: int, driver: Driver, bufsize: int, flags: int) -> RecvBytes:
    stream = sock._stream
    size = _bufsize(bufsize, "recv")
    if stream and size > _SCRATCH_MAX:
        size = _SCRATCH_MAX  # a stream recv may return less than asked for
    elif size > _MAX_IO:
        size = _MAX_IO  # the kernel refuses a longer RECV (and no datagram is that long)
    msg_flags = _flags(flags)
    # MSG_TRUNC on a stream discards the bytes and reports their count: what the
    # caller gets back is our buffer, so a fresh (zeroed) one, never the scratch
    # buffer another connection's bytes went through.
    buf = ffi.new("char[]", size) if msg_flags & MSG_TRUNC else driver.scratch(size)
    return RecvBytes(fd, buf, size, msg_flags, stream)


def _recv_into(sock: UringSocket, fd: int, buffer: Any, nbytes: int, flags: int) -> Recv:
    buf = _writable(buffer, "recv_into")
    try:
        return Recv(fd, buf, min(_nbytes(nbytes, len(buf), "recv_into"), _MAX_IO), _flags(flags))
    except BaseException:
        ffi.release(buf)
        raise


def _sendmsg(
    sock: UringSocket, fd: int, buffers: Iterable[Any], ancdata: Iterable[Any], flags: int, address: Any, method: str
) -> SendMsg:
    name = _sockaddr.encode(sock.family, address, method) if address is not None else None
    control = _sockaddr.encode_ancdata(ancdata) or None
    return SendMsg(fd, _sockaddr.MsgHdr(buffers, writable=False, name=name, control=control), _flags(flags))


def _recvmsg(sock: UringSocket, fd: int, buffers: Iterable[Any], ancbufsize: int, flags: int) -> RecvMsg:
    msg_flags = _flags(flags)  # before the buffers are borrowed (see _send)
    ancbufsize = operator.index(ancbufsize)
    if ancbufsize > sys.maxsize:
        raise OverflowError("Python int too large to convert to C ssize_t")
    if not 0 <= ancbufsize <= _SOCKLEN_MAX:
        raise ValueError("invalid ancillary data buffer length")
    msg = _sockaddr.MsgHdr(
        buffers, writable=True, name_capacity=_sockaddr.SOCKADDR_STORAGE_SIZE, control_capacity=ancbufsize
    )
    return RecvMsg(fd, msg, msg_flags, sock.family)


@protect_from_keyboard_interrupt
class UringSocket(_SocketType):
    """A `trio.socket.SocketType` whose I/O goes through io_uring."""

    #: Connections a listening socket accepts ahead of ``accept()`` calls. When the
    #: queue is this full the multishot ACCEPT is stopped, leaving later connections
    #: in the kernel's backlog; it is re-armed once the queue is half drained. The
    #: kernel takes the whole backlog in one burst when armed, so the queue holds
    #: at most this many plus one listen backlog.
    accept_queue_limit = 64

    def __init__(self, sock: _stdlib_socket.socket) -> None:
        if type(sock) is not _stdlib_socket.socket:
            raise TypeError(f"expected object of type 'socket.socket', not '{type(sock).__name__}'")
        self._sock = sock
        if sock.gettimeout() != 0.0:  # sockets we create are non-blocking already
            sock.setblocking(False)
        self._did_shutdown_SHUT_WR = False
        self._stream = sock.type == _SOCK_STREAM
        self._accepts: _AcceptQueue | None = None
        self._driver: Driver | None = None  # see _uring_driver
        # A listener whose accepted sockets inherit SocketStream's options (_stream.py).
        self._stream_options_set = False

    def _uring_driver(self) -> Driver | None:
        """The driver of the io_uring run this socket is used in, or None (another
        backend, or outside a run). Cached: a socket is nearly always used by one
        run; a closed driver (the run ended) or another thread looks again."""
        driver = self._driver
        if driver is None or driver.closed or driver.thread != threading.get_ident():
            driver = self._driver = running_driver()
        return driver

    def dup(self) -> UringSocket:
        return UringSocket(self._sock.dup())

    def detach(self) -> int:
        # The fd is the caller's from now on: a listener's multishot ACCEPT must stop
        # before we return, not at our next tick (the new owner may accept first;
        # stock Trio's detached socket takes no connection).
        if self._accepts is not None:
            self._accepts.close(submit=True)
        return self._sock.detach()

    def __exit__(self, *exc_info: object) -> None:
        # Trio's __exit__ closes the stdlib socket directly. Ours must cancel the
        # socket's ops first: an in-flight op (a multishot ACCEPT) holds the file,
        # and a closed listener would otherwise stay bound. Outside a run there are
        # no ops to cancel, and (as Trio's) it must still work.
        try:
            GLOBAL_RUN_CONTEXT.runner  # noqa: B018
        except AttributeError:
            if self._accepts is not None:
                self._accepts.close()
            self._sock.close()
        else:
            self.close()

    def close(self) -> None:
        if self._sock.fileno() != -1:
            if self._accepts is not None:
                self._accepts.close()
            # Retires the fd: cancels our in-flight ops (submitted before it
            # returns, so the fd is closed after them) and refuses any later SQE
            # that would name this number: see _lifecycle's notify_closing.
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    # ---------------------------------------------------------------- the one helper

    async def _io(self, driver: Driver, build: Callable[..., _SocketOp], *args: Any) -> Any:
        """Every socket call that goes through the ring, as Trio's
        ``_nonblocking_helper`` is for epoll:

        1. a cancel point before anything reaches the kernel;
        2. build the call's op (a bad argument raises) and capture the fd's
           FdState (the closed-fd rule is the driver's, see _lifecycle);
        3. try the op at once (MSG_DONTWAIT, completed within one io_uring_enter):
           if it did not block, its result or error, after a schedule point;
        4. else submit the op that waits (`Driver.perform`: cancellation by
           ASYNC_CANCEL, the CQE decides, retries refused once the fd is retired);
        5. let go of the caller's buffers once the kernel is done with them.
        """
        await checkpoint_if_cancelled()
        op = None
        try:
            op = build(self, self._sock.fileno(), *args)
            st = driver.fd(op.fd)
            op.now = True
            if op.nothing_to_do():
                res = 0
            elif op.slot == READ and st.kept and st.take_kept(self._sock):  # bytes a receive bundle kept come first
                consumed = op.from_kept(st.kept)
                st.kept = st.kept[consumed:]
                res = op.res
            else:
                res = driver.try_now(op, st)
        except BaseException as exc:
            if op is not None:
                op.release()
            await _raise_after_checkpoint(exc)
        if not _would_block(res):
            op.res = res
            try:
                value = op.result()
            except BaseException as exc:
                await _raise_after_checkpoint(exc)
            finally:
                op.release()
            await cancel_shielded_checkpoint()
            return value
        waiting = op.waiting(driver.buffers)
        try:
            return await driver.perform(waiting, st)
        finally:
            if waiting.user_data not in driver.ops:
                waiting.release()

    # ---------------------------------------------------------------- connect

    async def connect(self, address: Any) -> None:
        driver = current_driver()
        if driver is None or self.family not in _ENCODED_FAMILIES:
            return await super().connect(address)
        # Like Trio: a connect cannot really be undone, so a cancelled one closes
        # the socket rather than leave it in an unknown state.
        try:
            address = await self._resolve_address_nocp(address, local=False)
            await checkpoint_if_cancelled()
            try:
                sockaddr = _sockaddr.encode(self.family, address, "connect")
                assert sockaddr is not None
                fd = self._sock.fileno()
                # Trio's message is for a connect that failed after EINPROGRESS; an
                # AF_UNIX connect fails at once, with the stdlib's message.
                context = None if self.family == _sockaddr.AF_UNIX else f"Error connecting to {address!r}"
                op = Connect(fd, sockaddr, context)
                st = driver.fd(fd)
            except BaseException as exc:
                await _raise_after_checkpoint(exc)
            await driver.perform(op, st)
        except trio.Cancelled:
            self._sock.close()
            raise

    # ---------------------------------------------------------------- accept

    async def accept(self) -> tuple[trio.socket.SocketType, Any]:
        """Like `socket.socket.accept`, but async: connections come from a multishot
        IORING_OP_ACCEPT armed on the first call and queued between calls."""
        driver = current_driver()
        if driver is not None and self._queued_by_another_run(driver):
            return await super().accept()
        if driver is None:
            if self._accepts is not None and self._accepts.ready:
                # Connections an io_uring run accepted ahead are still ours to hand
                # out, those whose peer is gone skipped as below (ENOTCONN is no
                # error SocketListener.accept expects: serve_listeners would die).
                await trio.lowlevel.checkpoint()
                while self._accepts.ready:
                    try:
                        return self._wrap_accepted(self._accepts.ready.popleft())
                    except OSError:
                        continue
            return await super().accept()
        while True:
            fd = await self._accept_fd(driver)
            try:
                return self._wrap_accepted(fd)
            except OSError:
                # The peer was gone before we asked who it was (getpeername:
                # ENOTCONN). accept(2) would have said ECONNABORTED; take the next.
                continue

    async def _accept_socket(self, driver: Driver) -> UringSocket:
        """`accept` without the peer's address (a stream does not need it: one
        getpeername syscall less per connection)."""
        if self._queued_by_another_run(driver):
            accepted, _ = await super().accept()
            assert isinstance(accepted, UringSocket)  # made while this run is on io_uring
            return accepted
        fd = await self._accept_fd(driver)
        sock = self._sock
        return UringSocket(_stdlib_socket.socket(sock.family, sock.type | SOCK_NONBLOCK, sock.proto, fd))

    def _queued_by_another_run(self, driver: Driver) -> bool:
        """Whether this listener's accept queue belongs to another run still going
        (one socket shared by runs in several threads). Such a run accepts as stock
        Trio does: the queue, its waiter and its multishot are their run's alone
        (taken over, the owner's parked accept() was never woken again)."""
        owner = self._accepts.driver if self._accepts is not None else None
        return owner is not None and owner is not driver and not owner.closed

    async def _accept_fd(self, driver: Driver) -> int:
        await checkpoint_if_cancelled()
        if self._sock.fileno() == -1:  # as accept(2) on a closed socket says
            await _raise_after_checkpoint(os_error(errno.EBADF))
        accepts = self._accepts
        if accepts is None:
            accepts = self._accepts = _AcceptQueue(self)
        accepts.bind(driver)
        blocked = False
        while True:
            if accepts.ready:
                fd = accepts.ready.popleft()
                if accepts.wants_more():  # stopped when full: resume as the queue drains
                    try:
                        accepts.arm(driver, driver.fd(self._sock.fileno()))
                    except BaseException:
                        close_quietly(fd)
                        raise
                if not blocked:
                    await cancel_shielded_checkpoint()
                return fd
            if accepts.error is not None:
                err, accepts.error = accepts.error, None
                exc = os_error(err)
                if blocked:
                    raise exc
                await _raise_after_checkpoint(exc)
            try:
                st = driver.fd(self._sock.fileno())
                if accepts.wants_more():
                    accepts.arm(driver, st)
                waiter = accepts.waiter = driver.park(st, READ)
            except BaseException as exc:
                if blocked:
                    raise
                await _raise_after_checkpoint(exc)
            try:
                await driver.sleep(waiter)
            finally:
                accepts.waiter = None
            blocked = True

    def _wrap_accepted(self, fd: int) -> tuple[UringSocket, Any]:
        # The kernel made it SOCK_CLOEXEC | SOCK_NONBLOCK; telling the stdlib so
        # spares the syscalls it would make to find out or to set it.
        sock = _stdlib_socket.socket(self._sock.family, self._sock.type | SOCK_NONBLOCK, self._sock.proto, fd)
        try:
            address = sock.getpeername()
        except OSError:
            sock.close()
            raise
        return UringSocket(sock), address

    # ---------------------------------------------------------------- send

    async def send(self, data: Any, flags: int = 0, /) -> int:
        driver = self._uring_driver()
        if driver is None:
            return await super().send(data, flags)
        if type(flags) is int and flags == 0 and (type(data) is bytes or type(data) is memoryview):
            # The commonest kinds: send(bytes), and Trio's SocketStream.send_all,
            # which sends memoryview slices. (Flags that only equal 0, such as 0.0,
            # go the long way: the stdlib's TypeError.)
            return await self._send_simple(driver, data)
        return await self._io(driver, _send, data, flags)  # type: ignore[no-any-return]

    async def _send_simple(self, driver: Driver, data: bytes | memoryview) -> int:
        """send(data) without flags, as `_io` does it but without an op object unless
        it has to wait: the C layer's MSG_DONTWAIT SEND first."""
        await checkpoint_if_cancelled()
        buf: Any = None
        try:
            buf = data if type(data) is bytes else _readable(data)
            nbytes = min(len(buf), _MAX_IO)
            st = driver.fd(self._sock.fileno())
            # (A zero-length SEND still asks the kernel, as the stdlib's does: a
            # closed or unconnected socket raises.)
            res = driver.send_now(st, buf, nbytes, 0)
        except BaseException as exc:
            if buf is not None and buf is not data:
                ffi.release(buf)
            await _raise_after_checkpoint(exc)
        if not _would_block(res):
            if buf is not data:
                ffi.release(buf)
            if res < 0:
                await _raise_after_checkpoint(os_error(-res))
            await cancel_shielded_checkpoint()
            return res
        op = Send(st.fd, buf, nbytes, 0)
        try:
            return await driver.perform(op, st)  # type: ignore[no-any-return]
        finally:
            if op.user_data not in driver.ops:  # the kernel is done with the buffer
                op.release()

    async def sendto(self, *args: Any) -> int:
        """Like `socket.socket.sendto`, but async: ``sendto(data[, flags], address)``."""
        driver = current_driver()
        if driver is None or len(args) not in (2, 3) or self.family not in _ENCODED_FAMILIES:
            return await super().sendto(*args)
        data, flags, address = (args[0], 0, args[1]) if len(args) == 2 else args
        address = await self._resolve_address_nocp(address, local=False)
        return await self._io(driver, _sendmsg, [data], (), flags, address, "sendto")  # type: ignore[no-any-return]

    async def sendmsg(
        self,
        buffers: Iterable[Any],
        ancdata: Iterable[tuple[int, int, Any]] = (),
        flags: int = 0,
        address: Any = None,
        /,
    ) -> int:
        driver = current_driver()
        if driver is None or (address is not None and self.family not in _ENCODED_FAMILIES):
            return await super().sendmsg(buffers, ancdata, flags, address)
        if address is not None:
            address = await self._resolve_address_nocp(address, local=False)
        return await self._io(driver, _sendmsg, buffers, ancdata, flags, address, "sendmsg")  # type: ignore[no-any-return]

    async def _send_all(self, driver: Driver, data: Any) -> None:
        """`trio.abc.SendStream.send_all` on this socket (for the streams): what fits
        goes out at once (MSG_DONTWAIT); the rest with SENDs that wait for room
        (MSG_WAITALL: a short count means an error ended it). OSError for an error;
        ClosedResourceError if another task closes the socket meanwhile."""
        await checkpoint_if_cancelled()
        # bytes go to C as they are; other buffers through ffi.from_buffer (a buffer
        # it refuses is reported before a closed socket, as the stdlib's send does).
        try:
            buf = data if type(data) is bytes else ffi.from_buffer(data)
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        fd = self._sock.fileno()
        if fd == -1:
            if buf is not data:
                ffi.release(buf)
            await _raise_after_checkpoint(trio.ClosedResourceError("socket was already closed"))
        st = driver.fd(fd)
        total = len(buf)
        res = driver.send_now(st, buf, total, 0) if 0 < total <= _MAX_IO else 0
        if res == total or (res < 0 and not _would_block(res)):
            if buf is not data:
                ffi.release(buf)
            if res < 0:
                await _raise_after_checkpoint(os_error(-res))
            await cancel_shielded_checkpoint()
            return
        if buf is data:
            buf = ffi.from_buffer(data)  # for pointer arithmetic (the rest starts mid-buffer)
        sent = max(res, 0)
        op: Send | None = None
        try:
            while sent < total:
                op = Send(fd, buf, min(total - sent, _MAX_IO), _MSG_WAITALL, offset=sent)
                sent += await driver.perform(op, st)
        finally:
            if op is None or op.user_data not in driver.ops:
                ffi.release(buf)

    # ---------------------------------------------------------------- recv

    async def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        driver = self._uring_driver()
        if driver is None:
            return await super().recv(bufsize, flags)
        if self._stream and type(flags) is int and flags == 0 and type(bufsize) is int and 0 < bufsize <= sys.maxsize:
            # (Flags that only equal 0, such as 0.0, go the long way: the stdlib's TypeError.)
            return await self._receive_some(driver, bufsize)  # no op object unless it waits
        return await self._io(driver, _recv, driver, bufsize, flags)  # type: ignore[no-any-return]

    async def _receive_some(self, driver: Driver, max_bytes: int) -> bytes:
        """`trio.abc.ReceiveStream.receive_some` on this stream socket (for the
        streams): `recv` without the generality. What has arrived comes back with
        one io_uring_enter; else a RECV waits with no buffer of its own."""
        await checkpoint_if_cancelled()
        if max_bytes > _SCRATCH_MAX:
            max_bytes = _SCRATCH_MAX
        scratch = driver.scratch(max_bytes)
        try:
            st = driver.fd(self._sock.fileno())
            kept = st.kept and st.take_kept(self._sock)  # bytes a receive bundle kept come first
            if not kept:
                res = driver.recv_now(st, scratch, max_bytes, 0)  # MSG_DONTWAIT: data or -EAGAIN
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        if kept:
            st.kept = kept[max_bytes:]
            await cancel_shielded_checkpoint()
            return kept[:max_bytes]
        if res >= 0:
            data: bytes = ffi.unpack(scratch, min(res, max_bytes))
            await cancel_shielded_checkpoint()
            return data
        if not _would_block(res):
            await _raise_after_checkpoint(os_error(-res))
        return await driver.perform(recv_waiting(st.fd, max_bytes, 0, driver.buffers()), st)  # type: ignore[no-any-return]

    async def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        driver = current_driver()
        if driver is None:
            return await super().recv_into(buffer, nbytes, flags)
        return await self._io(driver, _recv_into, buffer, nbytes, flags)  # type: ignore[no-any-return]

    async def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        driver = current_driver()
        if driver is None or self.family not in _ENCODED_FAMILIES:
            return await super().recvfrom(bufsize, flags)
        try:
            buf = bytearray(_bufsize(bufsize, "recvfrom"))
        except BaseException as exc:
            await checkpoint_if_cancelled()
            await _raise_after_checkpoint(exc)
        n, _, _, address = await self._io(driver, _recvmsg, [buf], 0, flags)
        return bytes(buf[: min(n, len(buf))]), address

    async def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        driver = current_driver()
        if driver is None or self.family not in _ENCODED_FAMILIES:
            return await super().recvfrom_into(buffer, nbytes, flags)
        view = None
        try:
            ffi.release(_writable(buffer, "recvfrom_into"))  # the stdlib's TypeError first
            view = memoryview(buffer).cast("B")
            view = view[: _nbytes(nbytes, len(view), "recvfrom_into")]
        except BaseException as exc:
            if view is not None:
                view.release()  # else the traceback keeps the caller's buffer exported
            await checkpoint_if_cancelled()
            await _raise_after_checkpoint(exc)
        n, _, _, address = await self._io(driver, _recvmsg, [view], 0, flags)
        return n, address

    async def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        driver = current_driver()
        if driver is None or self.family not in _ENCODED_FAMILIES:
            return await super().recvmsg(bufsize, ancbufsize, flags)
        try:
            if operator.index(bufsize) < 0:
                raise ValueError("negative buffer size in recvmsg()")
            buf = bytearray(_bufsize(bufsize, "recvmsg"))
        except BaseException as exc:
            await checkpoint_if_cancelled()
            await _raise_after_checkpoint(exc)
        n, ancdata, msg_flags, address = await self._io(driver, _recvmsg, [buf], ancbufsize, flags)
        return bytes(buf[: min(n, len(buf))]), ancdata, msg_flags, address

    async def recvmsg_into(
        self, buffers: Iterable[Any], ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
        driver = current_driver()
        if driver is None or self.family not in _ENCODED_FAMILIES:
            return await super().recvmsg_into(buffers, ancbufsize, flags)
        return await self._io(driver, _recvmsg, buffers, ancbufsize, flags)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- multishot accept


@protect_from_keyboard_interrupt
class _AcceptQueue:
    """Connections a listening socket's multishot ACCEPT produced, until accept() takes them.

    Bounded: when ``limit`` connections are waiting, the multishot is cancelled and
    the kernel's backlog holds the rest; it is re-armed when the queue is half
    drained. (Once armed, the kernel accepts everything in the backlog in one go:
    the bound is ``limit`` plus one listen backlog.) Every fd that arrives is owned
    here until accept() takes it, and closed if the listener closes first, or is
    dropped without being closed: a finalizer then cancels the multishot, which
    would otherwise keep the listening socket's file, and its port, alive. An error
    CQE (EMFILE, ENFILE, ...) ends the multishot; the next accept() raises it
    (Trio's serve_listeners backs off) and the one after re-arms.

    It holds no reference to its listener, so that the listener can be collected.
    """

    def __init__(self, listener: UringSocket) -> None:
        self.limit = listener.accept_queue_limit
        self.driver: Driver | None = None
        self.ready: deque[int] = deque()
        self.error: int | None = None
        self.op: AcceptMulti | None = None
        self.waiter: Waiter | None = None
        self.closed = False
        weakref.finalize(listener, self.close)

    def bind(self, driver: Driver) -> None:
        if self.driver is not driver:  # a new run: the old one's op and waiter are gone
            self.driver = driver
            self.op = None
            self.waiter = None

    def arm(self, driver: Driver, st: FdState) -> None:
        op = AcceptMulti(st.fd, self.completed, SOCK_CLOEXEC | SOCK_NONBLOCK)
        driver.start(op, st)
        self.op = op

    def wants_more(self) -> bool:
        """Whether to arm the multishot: stopped (full, or ended by the kernel), no
        error to report first, and the queue at most half full."""
        return self.op is None and self.error is None and not self.closed and len(self.ready) <= self.limit // 2

    def completed(self, op: AcceptMulti, res: int, final: bool) -> None:
        # Runs from the op's CQEs (dispatch), before its final CQE moves its state.
        if final and self.op is op:
            self.op = None  # ended; the next accept() arms a new one
        if res >= 0:
            if self.closed:
                close_quietly(res)
            else:
                self.ready.append(res)
                if len(self.ready) >= self.limit and self.op is op and self.driver is not None:
                    self.driver.cancel(op)
        elif op.state is State.IN_FLIGHT:  # an error nobody asked for (not our cancel)
            self.error = -res
        if self.waiter is not None and self.driver is not None:
            self.driver.wake(self.waiter)

    def close(self, *, submit: bool = False) -> None:
        self.closed = True
        while self.ready:
            close_quietly(self.ready.popleft())
        op, driver = self.op, self.driver
        if op is not None and driver is not None and not driver.closed and threading.get_ident() == driver.thread:
            driver.cancel(op)
            if submit:  # (not from the finalizer: the garbage collector may run mid-tick)
                driver.ring.submit()


# ---------------------------------------------------------------- creation


@enable_ki_protection
def socket(
    family: int = -1,
    type: int = -1,
    proto: int = -1,
    fileno: int | None = None,
) -> trio.socket.SocketType:
    """Like `trio.socket.socket`, created by IORING_OP_SOCKET on the io_uring backend.

    Synchronous: it submits the op and waits for that one completion. Raises
    OSError with the errno socket(2) would give (EAFNOSUPPORT, EINVAL, EMFILE, ...).
    -1 means the stdlib's default (AF_INET, SOCK_STREAM, protocol 0), as in
    `socket.socket`.
    """
    family, type, proto = _defaults(family, type, proto)
    driver = current_driver() if fileno is None else None
    if driver is None:
        return trio.socket.socket(family, type, proto, fileno)
    fd = driver.complete_now(Socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, proto))
    return _wrap_created(fd, family, type, proto)


@enable_ki_protection
async def socket_async(family: int = -1, type: int = -1, proto: int = -1) -> trio.socket.SocketType:
    """`socket`, as a checkpoint that waits for the IORING_OP_SOCKET completion
    with the run loop instead of blocking it."""
    driver = current_driver()
    if driver is None:
        await trio.lowlevel.checkpoint()
        return trio.socket.socket(*_defaults(family, type, proto))
    await checkpoint_if_cancelled()
    try:
        family, type, proto = _defaults(family, type, proto)
    except BaseException as exc:
        await _raise_after_checkpoint(exc)  # a checkpoint either way, as Trio's calls
    # A socket created although the caller was cancelled is still returned (the
    # cancel is delivered at the next checkpoint): it is never lost unclosed.
    fd = await driver.perform(Socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, proto), None)
    return _wrap_created(fd, family, type, proto)


def _defaults(family: int, type: int, proto: int) -> tuple[int, int, int]:
    # socket.socket's: each argument a C int (its TypeError and OverflowError: the
    # SQE's wider fields would take a larger one, cut), -1 standing for its default.
    family, type, proto = _c_int(family), _c_int(type), _c_int(proto)
    return (
        _stdlib_socket.AF_INET if family == -1 else family,
        _stdlib_socket.SOCK_STREAM if type == -1 else type,
        0 if proto == -1 else proto,
    )


def _c_int(value: Any) -> int:
    n = operator.index(value)
    if not -(2**31) <= n < 2**31:
        raise OverflowError("Python int too large to convert to C int")
    return n


def _wrap_created(fd: int, family: int, type: int, proto: int) -> UringSocket:
    return UringSocket(_stdlib_socket.socket(family, type | SOCK_NONBLOCK, proto, fd))


class UringSocketFactory(trio.abc.SocketFactory):
    """The per-run socket factory the io_uring backend installs: `socket`."""

    def socket(
        self, family: int = _stdlib_socket.AF_INET, type: int = _stdlib_socket.SOCK_STREAM, proto: int = 0
    ) -> trio.socket.SocketType:
        return socket(family, type, proto)


def install_socket_factory() -> None:
    trio.socket.set_custom_socket_factory(UringSocketFactory())


first_tick_hooks.append(install_socket_factory)


def _new_socket_type(cls: type, *args: object, **kwargs: object) -> object:
    if cls is _SocketType and running_driver() is not None:
        cls = UringSocket
    return object.__new__(cls)


_SocketType.__new__ = _new_socket_type  # type: ignore[method-assign,assignment]
