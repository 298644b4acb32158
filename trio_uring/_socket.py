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
import os
import socket as _stdlib_socket
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, NoReturn

import trio
from trio._core._run import GLOBAL_RUN_CONTEXT
from trio._socket import _SocketType
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled, enable_ki_protection

from . import _sockaddr
from ._iomanager import UringIOManager, first_tick_hooks
from ._lifecycle import BACKGROUND, READ, WRITE, Op, OpDriver, RecvOp, Waiter, protect_from_keyboard_interrupt
from ._ring import CQE_F_MORE, NOT_SUBMITTED, os_error
from ._ring_cffi import ffi

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio.lowlevel import Task

__all__ = ["UringSocket", "UringSocketFactory", "install_socket_factory", "socket", "socket_async"]

SOCK_NONBLOCK: Final = _stdlib_socket.SOCK_NONBLOCK
SOCK_CLOEXEC: Final = _stdlib_socket.SOCK_CLOEXEC
# Plain ints: `flags | socket.MSG_DONTWAIT` would go through enum.IntFlag (~2 us).
MSG_DONTWAIT: Final = int(_stdlib_socket.MSG_DONTWAIT)
_NOT_DONTWAIT: Final = ~MSG_DONTWAIT
_MAX_IO: Final = 0x7FFFF000  # Linux's MAX_RW_COUNT: the most one send/recv moves
_EAGAIN: Final = -errno.EAGAIN
_ENOBUFS: Final = errno.ENOBUFS
# recv() reads what is there at once into one reusable buffer per run, then copies
# out what it got (the stdlib allocates bufsize bytes per call, then shrinks them).
_SCRATCH_MAX: Final = 1 << 20


def _would_block(res: int) -> bool:
    return res == _EAGAIN or res == NOT_SUBMITTED


def _driver() -> OpDriver | None:
    """The running io_uring backend's op driver; None under another backend."""
    try:
        io_manager: object = GLOBAL_RUN_CONTEXT.runner.io_manager  # Trio's type: its own backend
    except AttributeError:
        raise RuntimeError("must be called from async context") from None
    return io_manager._driver if isinstance(io_manager, UringIOManager) else None


def _driver_if_running() -> OpDriver | None:
    try:
        io_manager: object = GLOBAL_RUN_CONTEXT.runner.io_manager  # Trio's type: its own backend
    except AttributeError:
        return None
    return io_manager._driver if isinstance(io_manager, UringIOManager) else None


async def _raise_after_checkpoint(exc: BaseException) -> NoReturn:
    # Trio raises a call's synchronous errors (bad arguments, closed socket) after a
    # cancel-shielded schedule point, so the call is a checkpoint either way.
    await cancel_shielded_checkpoint()
    raise exc


def _nbytes(nbytes: int, available: int, method: str) -> int:
    if nbytes < 0:
        raise ValueError(f"negative buffersize in {method}")
    if nbytes == 0:
        return available
    if nbytes > available:
        raise ValueError(
            "nbytes is greater than the length of the buffer"
            if method == "recvfrom_into"
            else "buffer too small for requested bytes"
        )
    return nbytes


def _writable(buffer: Any, method: str) -> Any:
    try:
        return ffi.from_buffer(buffer, require_writable=True)
    except (BufferError, TypeError):
        raise TypeError(
            f"{method}() argument 'buffer' must be read-write bytes-like object, not {type(buffer).__name__}"
        ) from None


async def _completed_now(res: int, borrowed: Any) -> int:
    """A MSG_DONTWAIT op that did not block: let go of the caller's buffer, then
    return its result or raise its error, after a schedule point (as Trio does)."""
    _let_go(borrowed)
    if res < 0:
        await _raise_after_checkpoint(os_error(-res))
    await cancel_shielded_checkpoint()
    return res


def _let_go(borrowed: Any) -> None:
    """Release our export of a caller's buffer (ffi.from_buffer cdata or MsgHdr)."""
    if isinstance(borrowed, _sockaddr.MsgHdr):
        borrowed.release()
    else:
        ffi.release(borrowed)


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
        self._accepts: _AcceptQueue | None = None

    def dup(self) -> UringSocket:
        return UringSocket(self._sock.dup())

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
            # Cancels our in-flight ops (submitted before it returns), so the fd is
            # closed after them: see _lifecycle's notify_closing.
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    # ---------------------------------------------------------------- one helper

    async def _op(
        self,
        driver: OpDriver,
        slot: int,
        prep: Callable[..., int],
        *args: Any,
        keep: object,
        borrowed: Any = None,
        context: str | None = None,
    ) -> int:
        """Submit ``prep(fd, *args)`` in ``slot`` and wait for its result (after a
        cancel point, which the caller has passed).

        ``borrowed`` is the caller's buffer as the kernel sees it (``ffi.from_buffer``
        or a `_sockaddr.MsgHdr`). Like a syscall, we let go of it when the call
        returns (``SocketStream.send_all`` releases its memoryview right after
        ``send``), but only once the CQE is in: a coroutine unwound while its op is
        still in flight leaves the buffer to the op record.
        """
        fd = self._sock.fileno()
        try:
            op = driver.start(fd, slot, prep, fd, *args, keep=keep)
        except BaseException as exc:
            if borrowed is not None:  # never submitted: nobody else holds it
                _let_go(borrowed)
            await _raise_after_checkpoint(exc)
        try:
            return await driver.wait(op, context)
        finally:
            if borrowed is not None and op.user_data not in driver.ops:
                op.keep = None
                _let_go(borrowed)

    # ---------------------------------------------------------------- connect

    async def connect(self, address: Any) -> None:
        driver = _driver()
        if driver is None or self.family not in (_sockaddr.AF_INET, _sockaddr.AF_INET6, _sockaddr.AF_UNIX):
            return await super().connect(address)
        # Like Trio: a connect cannot really be undone, so a cancelled one closes
        # the socket rather than leave it in an unknown state.
        try:
            address = await self._resolve_address_nocp(address, local=False)
            await checkpoint_if_cancelled()
            try:
                sockaddr = _sockaddr.encode(self.family, address, "connect")
            except BaseException as exc:
                await _raise_after_checkpoint(exc)
            assert sockaddr is not None
            await self._op(
                driver, WRITE, driver.ring.prep_connect, sockaddr, len(sockaddr),
                keep=sockaddr, context=f"Error connecting to {address!r}",
            )
        except trio.Cancelled:
            self._sock.close()
            raise

    # ---------------------------------------------------------------- accept

    async def accept(self) -> tuple[trio.socket.SocketType, Any]:
        """Like `socket.socket.accept`, but async: connections come from a multishot
        IORING_OP_ACCEPT armed on the first call and queued between calls."""
        if _driver() is None:
            if self._accepts is not None and self._accepts.ready:
                # Connections an io_uring run accepted ahead are still ours to hand out.
                await trio.lowlevel.checkpoint()
                return self._wrap_accepted(self._accepts.ready.popleft())
            return await super().accept()
        while True:
            fd = await self._accept_fd()
            try:
                return self._wrap_accepted(fd)
            except OSError:
                # The peer was gone before we asked who it was (getpeername:
                # ENOTCONN). accept(2) would have said ECONNABORTED; take the next.
                continue

    async def _accept_socket(self) -> UringSocket:
        """`accept` without the peer's address (a stream does not need it: one
        getpeername syscall less per connection)."""
        fd = await self._accept_fd()
        sock = self._sock
        return UringSocket(_stdlib_socket.socket(sock.family, sock.type | SOCK_NONBLOCK, sock.proto, fd))

    async def _accept_fd(self) -> int:
        driver = _driver()
        assert driver is not None
        await checkpoint_if_cancelled()
        accepts = self._accepts
        if accepts is None:
            accepts = self._accepts = _AcceptQueue(self)
        accepts.bind(driver)
        blocked = False
        while True:
            if accepts.ready:
                fd = accepts.take()
                if not blocked:
                    await cancel_shielded_checkpoint()
                return fd
            if accepts.error is not None:
                err, accepts.error = accepts.error, None
                exc = os_error(err)
                if blocked:
                    raise exc
                await _raise_after_checkpoint(exc)
            if accepts.op is None:
                accepts.arm()
            await accepts.wait()
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
        driver = _driver()
        if driver is None:
            return await super().send(data, flags)
        await checkpoint_if_cancelled()
        fd = self._sock.fileno()
        cbuf = None
        try:
            cbuf = ffi.from_buffer(data)
            n = len(cbuf)
            if n > _MAX_IO:
                n = _MAX_IO
            res = driver.ring.send_now(fd, cbuf, n, flags)  # MSG_DONTWAIT: done or -EAGAIN
        except BaseException as exc:
            if cbuf is not None:
                ffi.release(cbuf)
            await _raise_after_checkpoint(exc)
        if res >= 0:
            ffi.release(cbuf)
            await cancel_shielded_checkpoint()
            return res
        if not _would_block(res):
            ffi.release(cbuf)
            await _raise_after_checkpoint(os_error(-res))
        # No room yet: a SEND that waits in the kernel, holding the caller's buffer.
        return await self._op(
            driver, WRITE, driver.ring.prep_send, cbuf, n, int(flags) & _NOT_DONTWAIT, ffi.NULL, 0,
            keep=cbuf, borrowed=cbuf,
        )

    async def sendto(self, *args: Any) -> int:
        """Like `socket.socket.sendto`, but async: ``sendto(data[, flags], address)``."""
        driver = _driver()
        if driver is None or len(args) not in (2, 3) or self.family not in _ENCODED_FAMILIES:
            return await super().sendto(*args)
        data, flags, address = (args[0], 0, args[1]) if len(args) == 2 else args
        address = await self._resolve_address_nocp(address, local=False)
        return await self._sendmsg(driver, [data], (), flags, address, "sendto")

    async def sendmsg(
        self,
        buffers: Iterable[Any],
        ancdata: Iterable[tuple[int, int, Any]] = (),
        flags: int = 0,
        address: Any = None,
        /,
    ) -> int:
        driver = _driver()
        if driver is None or (address is not None and self.family not in _ENCODED_FAMILIES):
            return await super().sendmsg(buffers, ancdata, flags, address)
        if address is not None:
            address = await self._resolve_address_nocp(address, local=False)
        return await self._sendmsg(driver, buffers, ancdata, flags, address, "sendmsg")

    async def _sendmsg(
        self,
        driver: OpDriver,
        buffers: Iterable[Any],
        ancdata: Iterable[tuple[int, int, Any]],
        flags: int,
        address: Any,
        method: str,
    ) -> int:
        await checkpoint_if_cancelled()
        fd = self._sock.fileno()
        msg = None
        try:
            name = _sockaddr.encode(self.family, address, method) if address is not None else None
            control = _sockaddr.encode_ancdata(ancdata) or None
            msg = _sockaddr.MsgHdr(buffers, writable=False, name=name, control=control)
            res = driver.try_now(driver.ring.prep_sendmsg, fd, msg.hdr, int(flags) | MSG_DONTWAIT)
        except BaseException as exc:
            if msg is not None:
                msg.release()
            await _raise_after_checkpoint(exc)
        if not _would_block(res):
            return await _completed_now(res, msg)
        return await self._op(
            driver, WRITE, driver.ring.prep_sendmsg, msg.hdr, int(flags) & _NOT_DONTWAIT, keep=msg, borrowed=msg
        )

    # ---------------------------------------------------------------- recv

    async def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        driver = _driver()
        if driver is None:
            return await super().recv(bufsize, flags)
        return await self._recv(driver, bufsize, flags)

    async def _recv(self, driver: OpDriver, bufsize: int, flags: int) -> bytes:
        """`recv` on the io_uring backend; also `UringSocketStream.receive_some`'s."""
        await checkpoint_if_cancelled()
        fd = self._sock.fileno()
        try:
            if bufsize < 0:
                raise ValueError("negative buffersize in recv")
            if bufsize > _SCRATCH_MAX:
                bufsize = _SCRATCH_MAX  # recv may return less than asked for
            scratch = driver.scratch(bufsize)
            res = driver.ring.recv_now(fd, scratch, bufsize, flags)  # MSG_DONTWAIT: data or -EAGAIN
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        if res >= 0:
            data: bytes = ffi.unpack(scratch, res)
            await cancel_shielded_checkpoint()
            return data
        if not _would_block(res):
            await _raise_after_checkpoint(os_error(-res))
        # Nothing there yet: a RECV that waits in the kernel. Its buffer comes from
        # the provided-buffer ring when data arrives, so waiting holds no memory.
        buffers = driver.buffers
        flags = int(flags) & _NOT_DONTWAIT
        while True:
            try:
                op = driver.start(
                    fd, READ, driver.ring.prep_recv_select, fd, min(bufsize, buffers.size), flags,
                    buffers.bgid, 0, keep=buffers, op_class=RecvOp,
                )
            except BaseException as exc:
                await _raise_after_checkpoint(exc)
            try:
                n = await driver.wait(op)
            except OSError as exc:
                if exc.errno == _ENOBUFS:  # more receives landed at once than buffers: again
                    continue
                raise
            return op.data if n else b""

    async def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        driver = _driver()
        if driver is None:
            return await super().recv_into(buffer, nbytes, flags)
        await checkpoint_if_cancelled()
        fd = self._sock.fileno()
        cbuf = None
        try:
            cbuf = _writable(buffer, "recv_into")
            nbytes = min(_nbytes(nbytes, len(cbuf), "recv_into"), _MAX_IO)
            res = driver.ring.recv_now(fd, cbuf, nbytes, flags)
        except BaseException as exc:
            if cbuf is not None:
                ffi.release(cbuf)
            await _raise_after_checkpoint(exc)
        if not _would_block(res):
            return await _completed_now(res, cbuf)
        return await self._op(
            driver, READ, driver.ring.prep_recv, cbuf, nbytes, int(flags) & _NOT_DONTWAIT, keep=cbuf, borrowed=cbuf
        )

    async def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        driver = _driver()
        if driver is None or self.family not in _ENCODED_FAMILIES:
            return await super().recvfrom(bufsize, flags)
        await checkpoint_if_cancelled()
        try:
            if bufsize < 0:
                raise ValueError("negative buffersize in recvfrom")
            buf = bytearray(bufsize)
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        n, _, _, address = await self._recvmsg(driver, [buf], 0, flags)
        return bytes(buf[:n]), address

    async def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        driver = _driver()
        if driver is None or self.family not in _ENCODED_FAMILIES:
            return await super().recvfrom_into(buffer, nbytes, flags)
        await checkpoint_if_cancelled()
        try:
            view = memoryview(buffer).cast("B")
            view = view[: _nbytes(nbytes, len(view), "recvfrom_into")]
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        n, _, _, address = await self._recvmsg(driver, [view], 0, flags)
        return n, address

    async def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        driver = _driver()
        if driver is None or self.family not in _ENCODED_FAMILIES:
            return await super().recvmsg(bufsize, ancbufsize, flags)
        await checkpoint_if_cancelled()
        try:
            if bufsize < 0:
                raise ValueError("negative buffer size in recvmsg()")
            buf = bytearray(bufsize)
        except BaseException as exc:
            await _raise_after_checkpoint(exc)
        n, ancdata, msg_flags, address = await self._recvmsg(driver, [buf], ancbufsize, flags)
        return bytes(buf[:n]), ancdata, msg_flags, address

    async def recvmsg_into(
        self, buffers: Iterable[Any], ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
        driver = _driver()
        if driver is None or self.family not in _ENCODED_FAMILIES:
            return await super().recvmsg_into(buffers, ancbufsize, flags)
        await checkpoint_if_cancelled()
        return await self._recvmsg(driver, buffers, ancbufsize, flags)

    async def _recvmsg(
        self, driver: OpDriver, buffers: Iterable[Any], ancbufsize: int, flags: int
    ) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
        fd = self._sock.fileno()
        msg = None
        try:
            if ancbufsize < 0:
                raise ValueError("negative buffer size in recvmsg()")
            msg = _sockaddr.MsgHdr(
                buffers, writable=True, name_capacity=_sockaddr.SOCKADDR_STORAGE_SIZE, control_capacity=ancbufsize
            )
            res = driver.try_now(driver.ring.prep_recvmsg, fd, msg.hdr, int(flags) | MSG_DONTWAIT)
        except BaseException as exc:
            if msg is not None:
                msg.release()
            await _raise_after_checkpoint(exc)
        if not _would_block(res):
            n = await _completed_now(res, msg)
        else:
            msg.reset()  # the waiting op starts from a clean msghdr
            n = await self._op(
                driver, READ, driver.ring.prep_recvmsg, msg.hdr, int(flags) & _NOT_DONTWAIT, keep=msg, borrowed=msg
            )
        address = _sockaddr.decode(self.family, msg.received_name())
        return n, _sockaddr.decode_ancdata(msg.received_control()), msg.hdr.msg_flags, address


_ENCODED_FAMILIES: Final = (_sockaddr.AF_INET, _sockaddr.AF_INET6, _sockaddr.AF_UNIX)


# ---------------------------------------------------------------- multishot accept


class _MultishotAccept(Op):
    """One arming of a listener's multishot ACCEPT: many CQEs, one per connection."""

    __slots__ = ("queue",)

    queue: _AcceptQueue

    def on_cqe(self, res: int, flags: int, reschedule: Callable[[Task], None]) -> None:
        self.queue.completed(self, res, flags)


@protect_from_keyboard_interrupt
class _AcceptQueue:
    """Connections a listening socket's multishot ACCEPT produced, until accept() takes them.

    Bounded: when ``limit`` connections are waiting, the multishot is cancelled and
    the kernel's backlog holds the rest; it is re-armed when the queue is half
    drained. (Once armed, the kernel accepts everything in the backlog in one go:
    the bound is ``limit`` plus one listen backlog.) Every fd that arrives is owned here until accept() takes it, and
    closed if the listener closes first. An error CQE (EMFILE, ENFILE, ...) ends the
    multishot; the next accept() raises it (Trio's serve_listeners backs off) and
    the one after re-arms.
    """

    def __init__(self, listener: UringSocket) -> None:
        self.listener = listener
        self.limit = listener.accept_queue_limit
        self.driver: OpDriver | None = None
        self.ready: deque[int] = deque()
        self.error: int | None = None
        self.op: _MultishotAccept | None = None
        self.waiter: Waiter | None = None
        self.closed = False

    def bind(self, driver: OpDriver) -> None:
        if self.driver is not driver:  # a new run: the old one's op and waiter are gone
            self.driver = driver
            self.op = None
            self.waiter = None

    def arm(self) -> None:
        assert self.driver is not None
        fd = self.listener.fileno()
        op = self.driver.start(
            fd, BACKGROUND, self.driver.ring.prep_accept, fd, ffi.NULL, ffi.NULL,
            SOCK_CLOEXEC | SOCK_NONBLOCK, 1, op_class=_MultishotAccept,
        )
        op.queue = self
        self.driver.add_background(op)
        self.op = op

    def take(self) -> int:
        fd = self.ready.popleft()
        if self.op is None and self.error is None and not self.closed and len(self.ready) <= self.limit // 2:
            self.arm()  # stopped when full (or ended by the kernel): resume as the queue drains
        return fd

    async def wait(self) -> None:
        assert self.driver is not None
        waiter = self.waiter = self.driver.park(self.listener.fileno(), READ)
        try:
            await self.driver.sleep(waiter)
        finally:
            self.waiter = None

    def completed(self, op: _MultishotAccept, res: int, flags: int) -> None:
        if not flags & CQE_F_MORE and self.op is op:
            self.op = None  # ended; the next accept() arms a new one
        if res >= 0:
            if self.closed:
                _close_quietly(res)
            else:
                self.ready.append(res)
                if len(self.ready) >= self.limit and self.op is op:
                    assert self.driver is not None
                    self.driver.cancel(op)
        elif not op.cancelled:
            self.error = -res
        if self.waiter is not None and self.driver is not None:
            self.driver.wake(self.waiter)

    def close(self) -> None:
        self.closed = True
        while self.ready:
            _close_quietly(self.ready.popleft())

    def __del__(self) -> None:
        for fd in self.ready:
            _close_quietly(fd)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------- creation


@enable_ki_protection
def socket(
    family: int = _stdlib_socket.AF_INET,
    type: int = _stdlib_socket.SOCK_STREAM,
    proto: int = 0,
    fileno: int | None = None,
) -> trio.socket.SocketType:
    """Like `trio.socket.socket`, created by IORING_OP_SOCKET on the io_uring backend.

    Synchronous: it submits the op and waits for that one completion. Raises
    OSError with the errno socket(2) would give (EAFNOSUPPORT, EINVAL, EMFILE, ...).
    """
    driver = _driver() if fileno is None else None
    if driver is None:
        return trio.socket.socket(family, type, proto, fileno)
    op = driver.start(-1, BACKGROUND, driver.ring.prep_socket, family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, proto)
    return _wrap_created(driver.complete_now(op), family, type, proto)


@enable_ki_protection
async def socket_async(
    family: int = _stdlib_socket.AF_INET,
    type: int = _stdlib_socket.SOCK_STREAM,
    proto: int = 0,
) -> trio.socket.SocketType:
    """`socket`, as a checkpoint that waits for the IORING_OP_SOCKET completion
    with the run loop instead of blocking it."""
    driver = _driver()
    if driver is None:
        await trio.lowlevel.checkpoint()
        return trio.socket.socket(family, type, proto)
    await checkpoint_if_cancelled()
    op = driver.start(-1, BACKGROUND, driver.ring.prep_socket, family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, proto)
    # A socket created although the caller was cancelled is still returned (the
    # cancel is delivered at the next checkpoint): it is never lost unclosed.
    return _wrap_created(await driver.wait(op), family, type, proto)


def _wrap_created(res: int, family: int, type: int, proto: int) -> UringSocket:
    if res < 0:
        raise os_error(-res)
    return UringSocket(_stdlib_socket.socket(family, type | SOCK_NONBLOCK, proto, res))


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
    if cls is _SocketType and _driver_if_running() is not None:
        cls = UringSocket
    return object.__new__(cls)


_SocketType.__new__ = _new_socket_type  # type: ignore[method-assign,assignment]
