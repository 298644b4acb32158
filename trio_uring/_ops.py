"""Every io_uring operation trio_uring performs, declared once.

An op is a small record, in the manner of compio's op structs and Trio's
``AFDPollOp``: the inputs its SQE names, the memory the kernel may touch until the
op's final CQE, and how that CQE becomes a result. An op knows nothing about tasks,
cancellation or closing: `trio_uring._lifecycle` drives every op through the same
states (its essay explains them), and it is the only code that calls `Op.write`.

What each op class declares:

* ``opcode``, and the SQE writer its `write` calls (``ring.write.<name>``, generated
  from ``_ring_api.py``);
* ``slot``: READ or WRITE if the op is one direction of its fd's traffic (Trio allows
  one task per direction and fd: a second one gets BusyResourceError), NO_SLOT
  otherwise;
* ``waits_for_cqe``: whether a cancelled waiter must wait for the op's own CQE
  (Abort.FAILED: the op may have happened, and the kernel may still use its memory)
  or can leave at once (Abort.SUCCEEDED: a readiness poll owns nothing and changes
  nothing);
* the memory it owns: every buffer, sockaddr and msghdr the SQE points at is an
  attribute of the op, so it lives exactly as long as the driver's record of the
  op, which is dropped at the final CQE;
* `complete` (the final CQE arrives), `more` (a CQE of a multishot op that has more
  to come), `result` (what the waiting task gets: a value, or OSError for a negated
  errno) and `discard` (undo a result nobody will take, such as an fd);
* ``used_for`` and ``since``: what trio_uring uses it for and the first Linux that
  has it, for ``python -m trio_uring check``;
* ``opt_in``: True for an op the restricted ring allows only once the module that
  uses it is imported (it declares the opcode then), because it reaches more of the
  kernel than its use here needs (URING_CMD).

Ops that need more than one field are written here only; the socket layer builds
them (``Recv(fd, buf, nbytes, flags)``) and hands them to the driver.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING, Any, ClassVar, Final

from . import _sockaddr
from ._ring import (
    IOSQE_BUFFER_SELECT,
    IOSQE_CQE_SKIP_SUCCESS,
    IOSQE_FIXED_FILE,
    BufferRing,
    Opcode,
    os_error,
)
from ._ring_cffi import ffi

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from trio.lowlevel import Task

    from ._ring_writers import Writers
    from ._sendring import SendRing
    from ._sockaddr import MsgHdr

__all__ = [
    "NO_SLOT",
    "OPS",
    "READ",
    "WRITE",
    "AcceptMulti",
    "Close",
    "Connect",
    "FileRead",
    "FileWrite",
    "Fsync",
    "MkdirAt",
    "Op",
    "OpenAt",
    "PollIn",
    "PollOut",
    "Read",
    "ReadNoWait",
    "Recv",
    "RecvBundle",
    "RecvBytes",
    "RecvMsg",
    "RecvSelect",
    "RenameAt",
    "Send",
    "SendBundle",
    "SendMsg",
    "SendSelect",
    "Socket",
    "Splice",
    "Statx",
    "UnlinkAt",
]

# The slot of its fd an op takes while it is in flight.
READ: Final = 0
WRITE: Final = 1
NO_SLOT: Final = 2

POLLIN: Final = 0x001
POLLOUT: Final = 0x004
POLLERR: Final = 0x008
POLLHUP: Final = 0x010
POLLNVAL: Final = 0x020
POLL_ADD_MULTI: Final = 1  # IORING_POLL_ADD_MULTI
ACCEPT_MULTISHOT: Final = 1  # IORING_ACCEPT_MULTISHOT

_ENOBUFS: Final = errno.ENOBUFS
_EAGAIN: Final = errno.EAGAIN
RWF_NOWAIT: Final = 0x8  # linux/fs.h: fail with EAGAIN rather than wait for the data
_NO_OFFSET: Final = 0xFFFF_FFFF_FFFF_FFFF  # (u64)-1: a pipe end's offset, "none"
# Plain ints: `flags | socket.MSG_DONTWAIT` would go through enum.IntFlag (~2 us).
MSG_DONTWAIT: Final = int(socket.MSG_DONTWAIT)
_NOT_DONTWAIT: Final = ~MSG_DONTWAIT
MSG_PEEK: Final = int(socket.MSG_PEEK)
MSG_TRUNC: Final = int(socket.MSG_TRUNC)
# A receive that waits returns what arrives first, as Trio's does on epoll (its
# MSG_DONTWAIT retry after readiness returns what is there): MSG_WAITALL is not
# passed to a waiting op, which would hold the task until all of it came.
_NOT_WAITALL: Final = ~int(socket.MSG_WAITALL)
RECVSEND_BUNDLE: Final = 1 << 4  # IORING_RECVSEND_BUNDLE (6.10), in sqe->ioprio


class Op:
    """One SQE and everything the kernel may touch until its final CQE.

    The first group of attributes is the driver's bookkeeping (`_lifecycle`);
    subclasses add their inputs and the memory they own.
    """

    __slots__ = ("fd", "fdstate", "flags", "raise_cancel", "res", "state", "task", "user_data")

    opcode: ClassVar[Opcode]
    slot: ClassVar[int] = NO_SLOT
    waits_for_cqe: ClassVar[bool] = True
    #: The IOSQE_* flags its SQE carries (the restricted ring allows just these).
    sqe_flags: ClassVar[int] = 0
    #: errnos after which the driver submits the op again (still subject to the
    #: closed-fd rule): the kernel ran short of something for a moment.
    retry_errnos: ClassVar[frozenset[int]] = frozenset()
    #: If set, the op never waits in the kernel: when it must wait, the driver waits
    #: for this poll's readiness and tries the op at once again (`_lifecycle.Driver.
    #: perform`). See `Send` for why.
    ready_poll: ClassVar[type[PollIn] | None] = None
    used_for: ClassVar[str]
    since: ClassVar[str]
    opt_in: ClassVar[bool] = False

    # Set by the driver.
    user_data: int
    state: Any  # _lifecycle.State
    task: Task | None
    fdstate: Any  # _lifecycle.FdState, or None for an op on no fd
    raise_cancel: Callable[[], NoReturn]

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.user_data = 0  # none yet (0 is never an op's)
        self.res = 0
        self.flags = 0

    def write(self, w: Writers, user_data: int) -> int:
        """Write the SQE (one ``w.<writer>(...)`` call); 0 or a negated errno."""
        raise NotImplementedError

    def more(self, res: int, flags: int) -> bool:
        """A CQE with IORING_CQE_F_MORE (multishot): the op goes on. True wakes the
        waiting task, which then gets `result` while the op is still in flight."""
        return False

    def complete(self, res: int, flags: int) -> None:
        """The final CQE. Runs whatever happened to the task."""
        self.res = res
        self.flags = flags

    def would_block(self) -> bool:
        """For an op with `ready_poll` that the driver submits to complete at once:
        whether it completed having done nothing because it would have blocked."""
        return False

    def again(self) -> None:
        """Before the driver submits the op again (a retry, or after readiness)."""

    def result(self) -> Any:
        """What the waiting task gets for a completed op; OSError for an error."""
        res = self.res
        if res < 0:
            raise os_error(-res)
        return res

    def discard(self) -> None:
        """Undo a completed result that no task will take (the default: nothing to undo)."""

    def release(self) -> None:
        """Let go of a caller's buffer the op borrowed (``ffi.from_buffer``), once no
        SQE of ours points at it (the default: it borrowed nothing)."""


class PollIn(Op):
    """IORING_OP_POLL_ADD for POLLIN: `trio.lowlevel.wait_readable`."""

    __slots__ = ("multishot",)
    opcode = Opcode.POLL_ADD
    slot = READ
    waits_for_cqe = False
    events: ClassVar[int] = POLLIN
    used_for = "wait_readable / wait_writable"
    since = "5.1"

    def __init__(self, fd: int, multishot: bool = False) -> None:
        super().__init__(fd)
        self.multishot = multishot

    @property
    def wanted(self) -> int:
        """The events that end the wait (errors and hang-ups included, as with epoll)."""
        return self.events | POLLERR | POLLHUP | POLLNVAL

    def write(self, w: Writers, user_data: int) -> int:
        return w.poll_add(self.fd, self.events, POLL_ADD_MULTI if self.multishot else 0, user_data)

    def more(self, res: int, flags: int) -> bool:
        # A multishot poll (see _lifecycle.Driver.wait_ready) wakes its task only for
        # events it asked for.
        if res >= 0 and res & self.wanted:
            self.res = res
            return True
        return False


class PollOut(PollIn):
    """IORING_OP_POLL_ADD for POLLOUT: `trio.lowlevel.wait_writable`."""

    __slots__ = ()
    slot = WRITE
    events = POLLOUT


class Read(Op):
    """IORING_OP_READ into ``buf`` (the backend's own wake-up eventfd)."""

    __slots__ = ("buf", "nbytes", "offset")
    opcode = Opcode.READ
    used_for = "force_wakeup (eventfd)"
    since = "5.6"

    def __init__(self, fd: int, buf: Any, nbytes: int, offset: int = -1) -> None:
        super().__init__(fd)
        self.buf = buf
        self.nbytes = nbytes
        self.offset = offset

    def write(self, w: Writers, user_data: int) -> int:
        return w.read(self.fd, self.buf, self.nbytes, self.offset & 0xFFFF_FFFF_FFFF_FFFF, user_data)


class Socket(Op):
    """IORING_OP_SOCKET: a new socket; the CQE's res is its fd."""

    __slots__ = ("domain", "proto", "type")
    opcode = Opcode.SOCKET
    used_for = "socket()"
    since = "5.19"

    def __init__(self, domain: int, type: int, proto: int) -> None:
        super().__init__(-1)
        self.domain = domain
        self.type = type
        self.proto = proto

    def write(self, w: Writers, user_data: int) -> int:
        return w.socket(self.domain, self.type, self.proto, user_data)

    def discard(self) -> None:
        if self.res >= 0:  # a socket made for a caller who left: close it
            close_quietly(self.res)


class Connect(Op):
    """IORING_OP_CONNECT to ``sockaddr`` (copied by the kernel at submission; kept anyway)."""

    __slots__ = ("context", "sockaddr")
    opcode = Opcode.CONNECT
    slot = WRITE
    used_for = "connect()"
    since = "5.5"

    def __init__(self, fd: int, sockaddr: bytes, context: str | None) -> None:
        super().__init__(fd)
        self.sockaddr = sockaddr
        self.context = context  # "Error connecting to ('host', port)", as Trio says, or None

    def write(self, w: Writers, user_data: int) -> int:
        return w.connect(self.fd, self.sockaddr, len(self.sockaddr), user_data)

    def result(self) -> int:
        if self.res < 0:
            raise os_error(-self.res, self.context)
        return self.res


class AcceptMulti(Op):
    """A multishot IORING_OP_ACCEPT: one CQE per connection, each carrying a new fd.

    It belongs to its listener's accept queue (``on_fd``), not to a waiting task:
    every fd that arrives is handed over, whoever asked, so none is lost.
    """

    __slots__ = ("on_fd", "sock_flags")
    opcode = Opcode.ACCEPT
    used_for = "accept() (multishot)"
    since = "5.19"

    def __init__(self, fd: int, on_fd: Callable[[AcceptMulti, int, bool], None], sock_flags: int) -> None:
        super().__init__(fd)
        self.on_fd = on_fd
        self.sock_flags = sock_flags  # SOCK_CLOEXEC | SOCK_NONBLOCK for the accepted sockets

    def write(self, w: Writers, user_data: int) -> int:
        return w.accept(self.fd, self.sock_flags, ACCEPT_MULTISHOT, user_data)

    def more(self, res: int, flags: int) -> bool:
        self.on_fd(self, res, False)
        return False

    def complete(self, res: int, flags: int) -> None:
        super().complete(res, flags)
        self.on_fd(self, res, True)  # the last CQE may carry an fd too (a full CQ ends a multishot)


class _SocketOp(Op):
    """A socket call's op: tried at once first (``now`` True: MSG_DONTWAIT, completed
    within the io_uring_enter that submits it), then, if that would block, submitted
    again to wait in the kernel (``now`` False, the default). It may hold a caller's buffer, borrowed
    with ``ffi.from_buffer``: `release` lets go of it once the kernel is done."""

    __slots__ = ("msg_flags", "now")
    # A waiting op can still end with -EAGAIN: after many wake-ups that found no
    # room (or no data), the kernel gives up polling and runs the op in an io-wq
    # thread, where SENDMSG and RECVMSG on a non-blocking socket do not wait. Trio
    # would wait and try again, so does the driver (Driver.perform, through start).
    retry_errnos = frozenset({_EAGAIN})

    def __init__(self, fd: int, msg_flags: int) -> None:
        super().__init__(fd)
        self.msg_flags = msg_flags & _NOT_DONTWAIT  # waiting wins over a caller's MSG_DONTWAIT, as in Trio
        self.now = False

    @property
    def sqe_msg_flags(self) -> int:
        return self.msg_flags | MSG_DONTWAIT if self.now else self.msg_flags

    def nothing_to_do(self) -> bool:
        """Whether the call is complete without any system call (see `Recv`)."""
        return False

    def from_kept(self, kept: bytes) -> int:
        """A receive served from bytes a receive bundle kept (`FdState.kept`): copy
        them in as the kernel would have, and return how many are consumed."""
        raise NotImplementedError

    def waiting(self, buffers: Callable[[], BufferRing]) -> Op:
        """The op to submit when the immediate attempt would block (``buffers``: the
        driver's provided-buffer ring, for ops that wait without a buffer)."""
        self.now = False
        return self


class Send(_SocketOp):
    """IORING_OP_SEND of ``nbytes`` from ``buf`` at ``offset`` (the caller's buffer,
    borrowed until the CQE).

    A send that must wait waits for POLLOUT and is tried again (`Op.ready_poll`), as
    Trio's epoll backend does, never as a SEND parked in the kernel: once the peer
    has shut down its side, the kernel's internal poll for a parked send wakes on
    EPOLLRDHUP every time (io_uring adds it to every poll), and after 128 wake-ups
    with no room it runs the send in an io-wq thread, where it blocks until the
    peer reads: a kernel thread per such connection, and an ASYNC_CANCEL that does
    not get it out (a cancelled send_all hung).
    """

    __slots__ = ("buf", "nbytes", "offset")
    opcode = Opcode.SEND
    slot = WRITE
    ready_poll = PollOut
    used_for = "send(), send_all()"
    since = "5.6"

    def __init__(self, fd: int, buf: Any, nbytes: int, msg_flags: int, offset: int = 0) -> None:
        super().__init__(fd, msg_flags)
        self.buf = buf
        self.nbytes = nbytes
        self.offset = offset

    def write(self, w: Writers, user_data: int) -> int:
        buf = self.buf + self.offset if self.offset else self.buf
        return w.send(self.fd, buf, self.nbytes, self.sqe_msg_flags, user_data)

    def release(self) -> None:
        if type(self.buf) is not bytes:
            ffi.release(self.buf)


class Recv(_SocketOp):
    """IORING_OP_RECV of up to ``nbytes`` into ``buf`` (the caller's, borrowed until the
    CQE): recv_into. The result is the count the kernel reports."""

    __slots__ = ("buf", "nbytes")
    opcode = Opcode.RECV
    slot = READ
    used_for = "recv(), recv_into(), receive_some()"
    since = "5.6"

    def __init__(self, fd: int, buf: Any, nbytes: int, msg_flags: int) -> None:
        super().__init__(fd, msg_flags & _NOT_WAITALL)
        self.buf = buf
        self.nbytes = nbytes

    def write(self, w: Writers, user_data: int) -> int:
        return w.recv(self.fd, self.buf, self.nbytes, self.sqe_msg_flags, 0, 0, 0, user_data)

    def nothing_to_do(self) -> bool:
        # The stdlib's recv and recv_into return 0 for a zero length without asking
        # the kernel (a RECV of zero bytes would wait for data instead).
        return self.nbytes == 0

    def from_kept(self, kept: bytes) -> int:
        n = self.res = min(self.nbytes, len(kept))
        ffi.memmove(self.buf, kept[:n], n)
        return 0 if self.msg_flags & MSG_PEEK else n

    def release(self) -> None:
        ffi.release(self.buf)


class RecvBytes(Recv):
    """IORING_OP_RECV into a buffer of our own: recv. The result is the bytes
    received, never more than the buffer holds (with MSG_TRUNC the kernel reports
    a datagram's full length, not what it wrote).

    Tried at once into the driver's scratch buffer; the op that then waits
    (`waiting`) receives a stream's bytes into a kernel-picked buffer
    (`RecvSelect`), and a datagram into a buffer of its full size, so that no
    datagram is cut.
    """

    __slots__ = ("stream",)

    def __init__(self, fd: int, buf: Any, nbytes: int, msg_flags: int, stream: bool) -> None:
        super().__init__(fd, buf, nbytes, msg_flags)
        self.stream = stream

    def result(self) -> bytes:
        res = self.res
        if res < 0:
            raise os_error(-res)
        n = min(res, self.nbytes)
        data: bytes = ffi.unpack(self.buf, n) if n else b""
        return data

    def waiting(self, buffers: Callable[[], BufferRing]) -> Op:
        # (MSG_TRUNC on a stream writes nothing into the buffer: not a provided one,
        # which holds bytes of another connection, but a fresh, zeroed one.)
        if self.stream and not self.msg_flags & MSG_TRUNC:
            return recv_waiting(self.fd, self.nbytes, self.msg_flags, buffers())
        return RecvBytes(self.fd, ffi.new("char[]", self.nbytes), self.nbytes, self.msg_flags, self.stream)

    def release(self) -> None:
        pass  # our own buffer (or the driver's scratch buffer)


class RecvSelect(Op):
    """IORING_OP_RECV into a buffer the kernel picks from ``buffers`` when data arrives.

    A waiting receive thus holds no memory of its own. Only for stream sockets, where
    returning fewer bytes than asked for is allowed: a datagram longer than one
    buffer would be cut. The bytes are copied out (never more than the buffer holds)
    and the buffer given back the moment the CQE arrives, whoever still waits.
    """

    __slots__ = ("buffers", "data", "msg_flags", "nbytes")
    opcode = Opcode.RECV
    slot = READ
    sqe_flags = IOSQE_BUFFER_SELECT
    ioprio: ClassVar[int] = 0
    # ENOBUFS: more receives landed in one tick than there are buffers. EAGAIN: as
    # for _SocketOp (and a receive that fails at once every time, such as one with
    # MSG_ERRQUEUE and nothing queued, waits until cancelled, as Trio's does).
    retry_errnos = frozenset({_ENOBUFS, _EAGAIN})
    used_for = "recv(), receive_some() that wait, into a kernel-picked buffer"
    since = "5.19"

    def __init__(self, fd: int, nbytes: int, msg_flags: int, buffers: BufferRing) -> None:
        super().__init__(fd)
        self.nbytes = min(nbytes, buffers.size)
        self.msg_flags = msg_flags & _NOT_DONTWAIT & _NOT_WAITALL
        self.buffers = buffers
        self.data = b""

    def write(self, w: Writers, user_data: int) -> int:
        return w.recv(
            self.fd, ffi.NULL, self.nbytes, self.msg_flags, self.sqe_flags, self.buffers.bgid, self.ioprio, user_data
        )

    def complete(self, res: int, flags: int) -> None:
        super().complete(res, flags)
        self.data = self.buffers.take(flags, res, self.nbytes)

    def result(self) -> bytes:
        if self.res < 0:
            raise os_error(-self.res)
        return self.data


class RecvBundle(RecvSelect):
    """IORING_OP_RECV with IORING_RECVSEND_BUNDLE: one receive that may fill several
    provided buffers (the first named in the CQE, the rest after it in ring order;
    `BufferRing.take`). Never for datagram sockets, where a bundle would join
    datagrams.

    ``len`` does not bound the result: when a bundle fills its buffers and more is
    queued, the kernel receives again and appends (up to what is queued). The
    caller gets at most ``nbytes``; the rest is kept in the fd's `FdState` for the
    next receive, so no byte is lost or reordered.
    """

    __slots__ = ()
    ioprio = RECVSEND_BUNDLE
    used_for = "receive_some() that waits, into several kernel-picked buffers (TRIO_URING_RECV_MODE=bundle)"
    since = "6.10"

    def __init__(self, fd: int, nbytes: int, msg_flags: int, buffers: BufferRing) -> None:
        super().__init__(fd, nbytes, msg_flags, buffers)
        self.nbytes = nbytes

    def complete(self, res: int, flags: int) -> None:
        self.res = res
        self.flags = flags
        data = self.buffers.take(flags, res, res, bundle=True)
        if len(data) > self.nbytes:
            # Kept now, not when the task resumes: a receive that runs before it
            # must get these bytes before any still in the socket.
            self.fdstate.keep(data[self.nbytes :])
            data = data[: self.nbytes]
        self.data = data


def recv_waiting(fd: int, nbytes: int, msg_flags: int, buffers: BufferRing) -> RecvSelect:
    """The op a stream receive waits with: a bundle if the driver chose them
    (`BufferRing.bundle`) and the call has no flags (a peek must not be kept)."""
    return (RecvBundle if buffers.bundle and not msg_flags else RecvSelect)(fd, nbytes, msg_flags, buffers)


class SendMsg(_SocketOp):
    """IORING_OP_SENDMSG of a `_sockaddr.MsgHdr` (its buffers borrowed until the CQE)."""

    __slots__ = ("msg",)
    opcode = Opcode.SENDMSG
    slot = WRITE
    ready_poll = PollOut  # as Send
    used_for = "sendto(), sendmsg()"
    since = "5.3"

    def __init__(self, fd: int, msg: MsgHdr, msg_flags: int) -> None:
        super().__init__(fd, msg_flags)
        self.msg = msg

    def write(self, w: Writers, user_data: int) -> int:
        return w.sendmsg(self.fd, self.msg.hdr, self.sqe_msg_flags, user_data)

    def release(self) -> None:
        self.msg.release()


class RecvMsg(_SocketOp):
    """IORING_OP_RECVMSG into a `_sockaddr.MsgHdr` (its buffers borrowed until the CQE).

    The result is recvmsg_into's: ``(nbytes, ancdata, msg_flags, address)``.
    """

    __slots__ = ("family", "msg")
    opcode = Opcode.RECVMSG
    slot = READ
    used_for = "recvfrom(), recvmsg() and their _into forms"
    since = "5.3"

    def __init__(self, fd: int, msg: MsgHdr, msg_flags: int, family: int) -> None:
        super().__init__(fd, msg_flags & _NOT_WAITALL)
        self.msg = msg
        self.family = family

    def write(self, w: Writers, user_data: int) -> int:
        if not self.now:
            self.msg.reset()  # the waiting op starts from a clean msghdr
        return w.recvmsg(self.fd, self.msg.hdr, self.sqe_msg_flags, user_data)

    def from_kept(self, kept: bytes) -> int:
        n = self.res = self.msg.fill(kept)
        return 0 if self.msg_flags & MSG_PEEK else n

    def result(self) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
        res = self.res
        if res < 0:
            raise os_error(-res)
        msg = self.msg
        address = _sockaddr.decode(self.family, msg.received_name())
        return res, _sockaddr.decode_ancdata(msg.received_control()), msg.hdr.msg_flags, address

    def release(self) -> None:
        self.msg.release()


class SendSelect(Op):
    """IORING_OP_SEND of the next buffer of a `_sendring.SendRing` (IOSQE_BUFFER_SELECT).

    Each CQE (a bundle may post several, with IORING_CQE_F_MORE) reports bytes sent
    from the buffer id in its flags on; the ring releases the entries they cover
    at that CQE, and no sooner. The result is the bytes all its CQEs reported (an
    error is raised only if none went out).

    MSG_DONTWAIT, as `Send` and for the same reason: the op sends what fits and
    never parks in the kernel. If nothing fits (-EAGAIN, nothing sent: `would_block`)
    the driver waits for POLLOUT (`ready_poll`) and submits it again; a short count
    means the socket's buffer filled (the caller settles the ring and goes on).
    """

    __slots__ = ("cqes", "msg_flags", "ring", "sent")
    opcode = Opcode.SEND
    slot = WRITE
    sqe_flags = IOSQE_BUFFER_SELECT
    ready_poll = PollOut
    ioprio: ClassVar[int] = 0
    used_for = "lowlevel.send_select (one buffer a SEND)"
    since = "6.10"

    def __init__(self, fd: int, ring: SendRing, msg_flags: int) -> None:
        super().__init__(fd)
        self.ring = ring
        self.msg_flags = (msg_flags | MSG_DONTWAIT) & _NOT_WAITALL
        self.sent = 0
        self.cqes = 0  # completions so far (a bundle posts one per pass of at most 256 buffers)

    def write(self, w: Writers, user_data: int) -> int:
        return w.send_select(self.fd, 0, self.msg_flags, self.sqe_flags, self.ring.bgid, self.ioprio, user_data)

    def more(self, res: int, flags: int) -> bool:
        self.cqes += 1
        if res > 0:
            self.ring.sent(res, flags)
            self.sent += res
        return False

    def complete(self, res: int, flags: int) -> None:
        super().complete(res, flags)
        self.cqes += 1
        if res > 0:
            self.ring.sent(res, flags)
            self.sent += res

    def would_block(self) -> bool:
        return self.res == -_EAGAIN and not self.sent

    def again(self) -> None:
        # A bundle that would block may still have moved the kernel's head past
        # the entries it picked (its CQE names a buffer, and the next op would
        # find the ring empty): rewrite what is left from the kernel's head.
        self.ring.settle()

    def result(self) -> int:
        if self.res < 0 and not self.sent and self.res != -_ENOBUFS:  # ENOBUFS: the ring was empty
            raise os_error(-self.res)
        return self.sent


class SendBundle(SendSelect):
    """IORING_OP_SEND with IORING_RECVSEND_BUNDLE: every buffer queued in the ring,
    in ring order, sent as one (``len`` 0). Never for datagram sockets, where the
    buffers would merge into one datagram."""

    __slots__ = ()
    ioprio = RECVSEND_BUNDLE
    used_for = "BundleStream.send_many, lowlevel.send_bundle (send bundles)"


class AsyncCancel:
    """IORING_OP_ASYNC_CANCEL: written by the driver itself, with no record of its own
    (its CQE, posted only when it failed to find its target, is dropped)."""

    opcode: ClassVar[Opcode] = Opcode.ASYNC_CANCEL
    #: A cancel that finds its target posts no CQE (5.17; the driver uses it when
    #: the kernel has IORING_FEAT_CQE_SKIP).
    sqe_flags: ClassVar[int] = IOSQE_CQE_SKIP_SUCCESS
    used_for: ClassVar[str] = "cancellation, notify_closing, end of run"
    since: ClassVar[str] = "5.5"
    opt_in: ClassVar[bool] = False


# ---------------------------------------------------------------- files
#
# File ops name a path or a regular file's fd; the kernel runs them inline when it
# can (a cached read) and in its io-wq threads otherwise. They take NO_SLOT:
# Trio lets several tasks use one file at once (its threads queue on the file's
# lock), so trio_uring._files serializes them with its own lock instead of raising
# BusyResourceError. All are written with the generic ``sqe`` writer.

AT_FDCWD: Final = -100
_U64: Final = 0xFFFF_FFFF_FFFF_FFFF


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


class _FileOp(Op):
    """A file op: SQE fields in, the CQE's res out (OSError for a negated errno,
    naming ``filename`` as the stdlib does)."""

    __slots__ = ("filename", "filename2")

    def __init__(self, fd: int, filename: object = None, filename2: object = None) -> None:
        super().__init__(fd)
        self.filename = filename
        self.filename2 = filename2

    def result(self) -> int:
        res = self.res
        if res < 0:
            err = -res
            if self.filename is None:
                raise os_error(err)
            if self.filename2 is None:
                raise OSError(err, os.strerror(err), self.filename)
            raise OSError(err, os.strerror(err), self.filename, None, self.filename2)
        return res


def _c_path(path: bytes) -> Any:
    return ffi.new("char[]", path)  # NUL-terminated, owned by the op until its CQE


class OpenAt(_FileOp):
    """IORING_OP_OPENAT of ``path`` (bytes, relative to ``dir_fd``); the CQE's res is the fd."""

    __slots__ = ("c_path", "dir_fd", "mode", "open_flags")
    opcode = Opcode.OPENAT
    used_for = "trio_uring.open_file, Path.open"
    since = "5.6"

    def __init__(self, path: bytes, open_flags: int, mode: int, filename: object, dir_fd: int = AT_FDCWD) -> None:
        super().__init__(-1, filename)
        self.c_path = _c_path(path)
        self.open_flags = open_flags
        self.mode = mode
        self.dir_fd = dir_fd

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(
            self.opcode, 0, 0, self.dir_fd, 0, _address(self.c_path), self.mode, self.open_flags, 0, 0, 0, user_data
        )

    def discard(self) -> None:
        if self.res >= 0:  # a file opened for a caller who left: close it
            close_quietly(self.res)


class FileRead(_FileOp):
    """IORING_OP_READ of up to ``nbytes`` into ``buf`` at ``offset`` (-1: the file
    position, which the kernel advances). ``rw_flags`` RWF_NOWAIT: only what needs
    no waiting (a cached read), else -EAGAIN at once."""

    __slots__ = ("buf", "nbytes", "offset", "rw_flags")
    opcode = Opcode.READ
    used_for = "file read(), readinto(), readline()"
    since = "5.6"

    def __init__(self, fd: int, buf: Any, nbytes: int, offset: int = -1, rw_flags: int = 0) -> None:
        super().__init__(fd)
        self.buf = buf
        self.nbytes = nbytes
        self.offset = offset
        self.rw_flags = rw_flags

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(
            self.opcode, 0, 0, self.fd, self.offset & _U64, _address(self.buf), self.nbytes, self.rw_flags,
            0, 0, 0, user_data,
        )  # fmt: skip

    def result(self) -> int:
        return min(super().result(), self.nbytes)  # never more than the buffer holds


class FileWrite(FileRead):
    """IORING_OP_WRITE of ``nbytes`` from ``buf`` at ``offset`` (-1: the file position)."""

    __slots__ = ()
    opcode = Opcode.WRITE
    used_for = "file write(), writelines()"
    since = "5.6"


class Fsync(_FileOp):
    """IORING_OP_FSYNC (``fsync_flags`` IORING_FSYNC_DATASYNC: fdatasync)."""

    __slots__ = ("fsync_flags",)
    opcode = Opcode.FSYNC
    used_for = "trio_uring.fsync"
    since = "5.1"

    def __init__(self, fd: int, fsync_flags: int = 0) -> None:
        super().__init__(fd)
        self.fsync_flags = fsync_flags

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(self.opcode, 0, 0, self.fd, 0, 0, 0, self.fsync_flags, 0, 0, 0, user_data)


STATX_BASIC_STATS: Final = 0x7FF
AT_EMPTY_PATH: Final = 0x1000
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_REMOVEDIR: Final = 0x200


class Statx(_FileOp):
    """IORING_OP_STATX of ``path`` (relative to ``dir_fd``; b"" with AT_EMPTY_PATH:
    ``dir_fd`` itself) into a ``struct statx`` the op owns (256 bytes)."""

    __slots__ = ("buf", "c_path", "dir_fd", "mask", "statx_flags")
    opcode = Opcode.STATX
    used_for = "Path.stat(), exists()"
    since = "5.6"

    def __init__(self, path: bytes, statx_flags: int, filename: object, dir_fd: int = AT_FDCWD) -> None:
        super().__init__(-1, filename)
        self.c_path = _c_path(path)
        self.statx_flags = statx_flags
        self.dir_fd = dir_fd
        self.mask = STATX_BASIC_STATS
        self.buf = ffi.new("char[]", 256)

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(
            self.opcode, 0, 0, self.dir_fd, _address(self.buf), _address(self.c_path), self.mask,
            self.statx_flags, 0, 0, 0, user_data,
        )  # fmt: skip


class Close(_FileOp):
    """IORING_OP_CLOSE of ``fd`` (whose FdState the caller has retired first)."""

    __slots__ = ()
    opcode = Opcode.CLOSE
    used_for = "closing files"
    since = "5.6"

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(self.opcode, 0, 0, self.fd, 0, 0, 0, 0, 0, 0, 0, user_data)


class RenameAt(_FileOp):
    """IORING_OP_RENAMEAT of ``old`` to ``new`` (both relative to the working directory)."""

    __slots__ = ("c_new", "c_old")
    opcode = Opcode.RENAMEAT
    used_for = "Path.rename(), replace()"
    since = "5.11"

    def __init__(self, old: bytes, new: bytes, filename: object, filename2: object) -> None:
        super().__init__(-1, filename, filename2)
        self.c_old = _c_path(old)
        self.c_new = _c_path(new)

    def write(self, w: Writers, user_data: int) -> int:
        # len is the new path's dir fd, off its address (io_uring_prep_renameat(3)).
        return w.sqe(
            self.opcode, 0, 0, AT_FDCWD, _address(self.c_new), _address(self.c_old), AT_FDCWD & 0xFFFF_FFFF,
            0, 0, 0, 0, user_data,
        )  # fmt: skip


class UnlinkAt(_FileOp):
    """IORING_OP_UNLINKAT of ``path`` (``unlink_flags`` AT_REMOVEDIR: rmdir)."""

    __slots__ = ("c_path", "unlink_flags")
    opcode = Opcode.UNLINKAT
    used_for = "Path.unlink(), rmdir()"
    since = "5.11"

    def __init__(self, path: bytes, unlink_flags: int, filename: object) -> None:
        super().__init__(-1, filename)
        self.c_path = _c_path(path)
        self.unlink_flags = unlink_flags

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(self.opcode, 0, 0, AT_FDCWD, 0, _address(self.c_path), 0, self.unlink_flags, 0, 0, 0, user_data)


class MkdirAt(_FileOp):
    """IORING_OP_MKDIRAT of ``path`` with ``mode``."""

    __slots__ = ("c_path", "mode")
    opcode = Opcode.MKDIRAT
    used_for = "Path.mkdir()"
    since = "5.15"

    def __init__(self, path: bytes, mode: int, filename: object) -> None:
        super().__init__(-1, filename)
        self.c_path = _c_path(path)
        self.mode = mode

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(self.opcode, 0, 0, AT_FDCWD, 0, _address(self.c_path), self.mode, 0, 0, 0, 0, user_data)


# ---------------------------------------------------------------- direct descriptors
#
# Sockets that live only in the ring's registered file table (trio_uring.direct):
# SOCKET and ACCEPT put a file in a slot, IOSQE_FIXED_FILE ops name it by slot, a
# direct CLOSE empties it. Written with the generic SQE writer: they set fields
# (file_index, IOSQE_FIXED_FILE) the named writers do not.

#: IORING_FILE_INDEX_ALLOC (5.19): the kernel picks a free slot (-ENFILE: none left).
FILE_INDEX_ALLOC: Final = 0xFFFF_FFFF
_SOCKET_URING_OP_SETSOCKOPT: Final = 3  # 6.7


class DirectSocket(Op):
    """IORING_OP_SOCKET into the file table: the result is the socket's slot.
    ``file_slot`` None: the kernel picks a free one. ``on_discard(slot)`` closes
    a slot made for a caller who left."""

    __slots__ = ("domain", "file_slot", "on_discard", "proto", "type")
    opcode = Opcode.SOCKET
    used_for = "direct sockets (trio_uring.direct)"
    since = "5.19"

    def __init__(
        self, domain: int, type: int, proto: int, file_slot: int | None, on_discard: Callable[[int], None]
    ) -> None:
        super().__init__(-1)
        self.domain = domain
        self.type = type
        self.proto = proto
        self.file_slot = file_slot
        self.on_discard = on_discard

    def write(self, w: Writers, user_data: int) -> int:
        index = FILE_INDEX_ALLOC if self.file_slot is None else self.file_slot + 1
        return w.sqe(self.opcode, 0, 0, self.domain, self.type, 0, self.proto, 0, 0, index, 0, user_data)

    def result(self) -> int:
        res = self.res
        if res < 0:
            raise os_error(-res)
        return res if self.file_slot is None else self.file_slot

    def discard(self) -> None:
        if self.res >= 0:
            self.on_discard(self.res if self.file_slot is None else self.file_slot)


class DirectAccept(DirectSocket):
    """IORING_OP_ACCEPT from the listening socket ``fd`` (a normal fd) into a slot
    the kernel picks: the result is the slot."""

    __slots__ = ()
    opcode = Opcode.ACCEPT
    slot = READ  # one accepting task per listener, as Trio's accept (BusyResourceError)
    used_for = "direct sockets: accept() into the file table"
    since = "5.19"

    def __init__(self, fd: int, on_discard: Callable[[int], None]) -> None:
        super().__init__(0, 0, 0, None, on_discard)
        self.fd = fd

    def write(self, w: Writers, user_data: int) -> int:
        # accept flags 0: SOCK_CLOEXEC is EINVAL for a direct descriptor (it has no fd).
        return w.sqe(self.opcode, 0, 0, self.fd, 0, 0, 0, 0, 0, FILE_INDEX_ALLOC, 0, user_data)


class DirectAcceptMulti(AcceptMulti):
    """A multishot IORING_OP_ACCEPT into slots the kernel picks: one CQE per
    connection, each carrying a slot (``io_uring_prep_multishot_accept_direct(3)``)."""

    __slots__ = ()
    used_for = "direct sockets: accept() (multishot)"
    since = "5.19"

    def __init__(self, fd: int, on_fd: Callable[[AcceptMulti, int, bool], None]) -> None:
        super().__init__(fd, on_fd, 0)

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(self.opcode, 0, ACCEPT_MULTISHOT, self.fd, 0, 0, 0, 0, 0, FILE_INDEX_ALLOC, 0, user_data)


class DirectConnect(Connect):
    """IORING_OP_CONNECT of the direct descriptor in slot ``fd``."""

    __slots__ = ("c_sockaddr",)
    sqe_flags = IOSQE_FIXED_FILE
    used_for = "direct sockets: connect()"
    since = "5.19"

    def __init__(self, fd: int, sockaddr: bytes, context: str) -> None:
        super().__init__(fd, sockaddr, context)
        self.c_sockaddr = ffi.from_buffer(sockaddr)

    def write(self, w: Writers, user_data: int) -> int:
        addr = _address(self.c_sockaddr)
        return w.sqe(self.opcode, self.sqe_flags, 0, self.fd, len(self.sockaddr), addr, 0, 0, 0, 0, 0, user_data)


class DirectPollOut(PollOut):
    """`PollOut` on the direct descriptor in slot ``fd``."""

    __slots__ = ()
    sqe_flags = IOSQE_FIXED_FILE
    used_for = "direct sockets: wait_send_all_might_not_block()"
    since = "5.19"

    def write(self, w: Writers, user_data: int) -> int:
        # poll32_events shares its field with the per-op flags (little-endian layout).
        poll_flags = POLL_ADD_MULTI if self.multishot else 0
        return w.sqe(self.opcode, self.sqe_flags, 0, self.fd, 0, 0, poll_flags, self.events, 0, 0, 0, user_data)


class DirectSend(Send):
    """IORING_OP_SEND on the direct descriptor in slot ``fd`` (``buf`` a cffi pointer)."""

    __slots__ = ()
    sqe_flags = IOSQE_FIXED_FILE
    ready_poll = DirectPollOut
    used_for = "direct sockets: send_all()"
    since = "5.19"

    def write(self, w: Writers, user_data: int) -> int:
        addr = _address(self.buf) + self.offset
        return w.sqe(self.opcode, self.sqe_flags, 0, self.fd, 0, addr, self.nbytes, self.sqe_msg_flags, 0, 0, 0,
                     user_data)  # fmt: skip


class DirectRecvSelect(RecvSelect):
    """`RecvSelect` on the direct descriptor in slot ``fd``."""

    __slots__ = ()
    sqe_flags = IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT
    used_for = "direct sockets: receive_some() that waits"
    since = "5.19"

    def write(self, w: Writers, user_data: int) -> int:
        # buf_group shares its field with buf_index.
        return w.sqe(self.opcode, self.sqe_flags, 0, self.fd, 0, 0, self.nbytes, self.msg_flags, self.buffers.bgid,
                     0, 0, user_data)  # fmt: skip


class DirectShutdown(Op):
    """IORING_OP_SHUTDOWN of the direct descriptor in slot ``fd``."""

    __slots__ = ("how",)
    opcode = Opcode.SHUTDOWN
    sqe_flags = IOSQE_FIXED_FILE
    used_for = "direct sockets: send_eof()"
    since = "5.11"

    def __init__(self, fd: int, how: int) -> None:
        super().__init__(fd)
        self.how = how

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(self.opcode, self.sqe_flags, 0, self.fd, 0, 0, self.how, 0, 0, 0, 0, user_data)


class DirectSetsockopt(Op):
    """setsockopt(2) on the direct descriptor in slot ``fd``: IORING_OP_URING_CMD
    with SOCKET_URING_OP_SETSOCKOPT (6.7; older kernels fail it). The option's
    value, ``optval``, is read until the CQE."""

    __slots__ = ("level", "optname", "optval")
    opcode = Opcode.URING_CMD
    sqe_flags = IOSQE_FIXED_FILE
    used_for = "direct sockets: setsockopt() (TCP_NODELAY on a direct stream)"
    since = "6.7"
    opt_in = True  # URING_CMD also reaches drivers' passthrough commands (NVMe, ublk)

    def __init__(self, fd: int, level: int, optname: int, optval: bytes) -> None:
        super().__init__(fd)
        self.level = level
        self.optname = optname
        self.optval = ffi.from_buffer(optval)

    def write(self, w: Writers, user_data: int) -> int:
        # cmd_op shares its field with off, level/optname with addr, optlen with
        # file_index and optval with addr3.
        level_optname = self.level | self.optname << 32
        return w.sqe(self.opcode, self.sqe_flags, 0, self.fd, _SOCKET_URING_OP_SETSOCKOPT, level_optname, 0, 0, 0,
                     len(self.optval), _address(self.optval), user_data)  # fmt: skip


class DirectClose(Op):
    """IORING_OP_CLOSE of slot ``file_slot`` (fd 0, file_index slot + 1): the
    table lets go of the file; ops still in flight on it keep their reference."""

    __slots__ = ("file_slot",)
    opcode = Opcode.CLOSE
    used_for = "direct sockets: close()"
    since = "5.15"

    def __init__(self, file_slot: int) -> None:
        super().__init__(-1)
        self.file_slot = file_slot

    def write(self, w: Writers, user_data: int) -> int:
        return w.sqe(self.opcode, 0, 0, 0, 0, 0, 0, 0, 0, self.file_slot + 1, 0, user_data)


# ---------------------------------------------------------------- send_file


class Splice(Op):
    """IORING_OP_SPLICE of up to ``nbytes`` from ``fd_in`` to ``fd``, one of them a
    pipe: `trio_uring.send_file` moves a file's pages file -> pipe -> socket.

    ``off_in``: where to read a regular file (its position is left alone), or -1
    for a pipe. The kernel runs every SPLICE in an io-wq thread, where it resolves
    the fd numbers only when it starts: send_file hands it private duplicates, which
    nobody else can close and reuse meanwhile. It owns no memory (pages go from file
    to pipe to socket by reference), but what it moved must still be counted: the
    CQE decides, as for a SEND. ``slot`` WRITE: its FdState is the socket's.
    """

    __slots__ = ("fd_in", "nbytes", "off_in", "owned_fds")
    opcode = Opcode.SPLICE
    slot = WRITE
    used_for = "send_file() (file -> pipe -> socket)"
    since = "5.7"

    def __init__(self, fd: int, fd_in: int, off_in: int, nbytes: int) -> None:
        super().__init__(fd)
        self.fd_in = fd_in
        self.off_in = off_in
        self.nbytes = nbytes
        #: fds its caller could not close while the op was in flight (its task went
        #: away): closed by `discard` at its final CQE.
        self.owned_fds: tuple[int, ...] = ()

    def discard(self) -> None:
        for fd in self.owned_fds:
            close_quietly(fd)

    def write(self, w: Writers, user_data: int) -> int:
        return w.splice(self.fd, _NO_OFFSET, self.fd_in, self.off_in & _NO_OFFSET, self.nbytes, 0, user_data)


class ReadNoWait(Op):
    """IORING_OP_READ with RWF_NOWAIT of up to ``nbytes`` at ``offset`` into ``buf``
    (an owned buffer): what the page cache holds, completed within the submitting
    io_uring_enter, or -EAGAIN; never a wait for the disk (nor an io-wq thread).
    `trio_uring.send_file` reads small files with it (`Driver.try_now`)."""

    __slots__ = ("buf", "nbytes", "offset")
    opcode = Opcode.READ
    used_for = "send_file() of small files (what the page cache holds)"
    since = "5.6"

    def __init__(self, fd: int, buf: Any, nbytes: int, offset: int) -> None:
        super().__init__(fd)
        self.buf = buf
        self.nbytes = nbytes
        self.offset = offset

    def write(self, w: Writers, user_data: int) -> int:
        addr = int(ffi.cast("uintptr_t", self.buf))
        return w.sqe(self.opcode, 0, 0, self.fd, self.offset, addr, self.nbytes, RWF_NOWAIT, 0, 0, 0, user_data)


#: Every op class, for ``python -m trio_uring check`` and the restricted ring.
OPS: tuple[type[Op] | type[AsyncCancel], ...] = (
    PollIn,
    PollOut,
    AsyncCancel,
    Read,
    Socket,
    Connect,
    AcceptMulti,
    Send,
    Recv,
    RecvBytes,
    RecvSelect,
    RecvBundle,
    SendMsg,
    RecvMsg,
    OpenAt,
    FileRead,
    FileWrite,
    Fsync,
    Statx,
    Close,
    RenameAt,
    UnlinkAt,
    MkdirAt,
    DirectSocket,
    DirectAccept,
    DirectAcceptMulti,
    DirectConnect,
    DirectSend,
    DirectRecvSelect,
    DirectPollOut,
    DirectShutdown,
    DirectSetsockopt,
    DirectClose,
    SendSelect,
    SendBundle,
    Splice,
    ReadNoWait,
)


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
