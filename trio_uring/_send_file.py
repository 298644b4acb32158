"""send_file: a regular file's bytes to a socket, without passing them through Python.

How
===

Linux moves file data to a socket without copying it through user space with
splice(2), which needs a pipe on one side: file -> pipe moves references to the
page-cache pages, pipe -> socket hands those pages to the socket (for TCP they
become the skb's fragments). `send_file` does both steps as IORING_OP_SPLICE ops
(`trio_uring._ops.Splice`) through the same `Driver` as every other op: one pipe
per call, filled from the file at an explicit offset, emptied into the socket,
until the count is sent or the file ends.

Every SPLICE runs in an io-wq thread: two thread hand-offs per chunk, which cost
more than the copies they save for small files (benchmarks/send_file.py). So a
call that sends at most `SMALL_FILE` bytes first reads what the page cache holds
with an IORING_OP_READ that may not wait (RWF_NOWAIT: it completes within the
io_uring_enter that submits it, `trio_uring._ops.ReadNoWait`) into a buffer of its
own, and sends that with SENDs; only if the page cache lacks the data (EAGAIN)
does it go on by SPLICE, whose io-wq thread may wait for the disk. The event loop
never waits for a disk.

Facts that shaped it
====================

* The kernel runs every SPLICE in an io-wq worker thread (io_uring forces them
  async), and since Linux 5.18 a worker resolves the SQE's fd numbers when it
  *starts*, not when the SQE is submitted. A socket closed by another task, and a
  new connection given its number, could then be the one a SPLICE submitted
  earlier writes to. So the SPLICEs never name the caller's numbers: they name
  private duplicates (``os.dup``) of the socket and the file, which nobody else
  can close, and which are closed only once no op of ours can still start. The
  closed-fd rule still applies as everywhere: the ops live in the *original*
  socket's FdState, which ``close()`` / ``notify_closing`` retires (the ops are
  cancelled, and nothing more is started).
* Sockets are non-blocking, so a pipe -> socket SPLICE never waits for room: it
  moves what fits and reports it (or -EAGAIN). Then we wait for POLLOUT (as Trio
  does on epoll) and go on.
* Bytes that reached the pipe (or the small-file buffer) but not the socket (the
  call was cancelled, the socket closed or failed) belong to nobody: such a pipe
  is closed, never reused, so they can never reach another call's socket. A pipe
  a call emptied completely goes back to its run's pool (`_PipePool`: making one
  is a pipe2 and two closes, about 18 µs on the VM measured), which the run
  closes when it ends.
* The READ and the SENDs are submitted and resolved while the fd numbers are
  still ours (the READ names the file's duplicate; a SEND is refused once the
  socket's FdState is retired), as for every socket op.

Semantics
=========

As Trio's ``send_all``: it returns once every byte belongs to the kernel; one
sender at a time (BusyResourceError, from the stream's own conflict detector);
ClosedResourceError after ``close()`` or ``send_eof()``, or if another task
closes the socket meanwhile; on a stream, socket errors become
BrokenResourceError. The file side is ``socket.sendfile``'s: ``offset`` and
``count`` as there (``count`` None: to the end of the file; a count past the end
sends what there is), and the **file position** is ``offset + bytes sent`` when
the call returns *or raises*, cancellation included. That is how a caller learns
how much of a cancelled send went out: ``file.tell() - offset``.

Without SPLICE (the kernel's probe lacks it, or the run is not on io_uring), the
file is read in chunks (in a worker thread, as Trio reads files) and sent with the
socket's ``send``, whose counts keep the position rule exact.
"""

from __future__ import annotations

import errno
import fcntl
import io
import operator
import os
import stat
import weakref
from typing import TYPE_CHECKING, Any, Final

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled, enable_ki_protection

from ._ops import WRITE, ReadNoWait, Send, Splice
from ._ring import NOT_SUBMITTED, Opcode, os_error
from ._ring_cffi import ffi
from ._socket import UringSocket
from ._stream import _translate

if TYPE_CHECKING:
    from ._lifecycle import Driver, FdState

__all__ = ["send_file"]

#: The pipe between file and socket: what one file -> pipe SPLICE moves (fewer,
#: larger ops; the pipe holds page references, not copies). Unprivileged processes
#: may go up to /proc/sys/fs/pipe-max-size (1 MiB by default); past the per-user
#: pipe page limit the kernel refuses, and the pipe keeps its default size.
PIPE_SIZE: Final = 1 << 20
DEFAULT_PIPE_SIZE: Final = 1 << 16  # what a new pipe holds (fewer pages past the per-user limit)
#: Calls that send at most this much (by the file's size when the call starts) are
#: sent from the page cache through a buffer of their own: an inline READ
#: (RWF_NOWAIT) and a SEND, with no io-wq thread. Larger ones, and data the page
#: cache does not hold, go by SPLICE.
SMALL_FILE: Final = 1 << 16
#: What the fallback reads per chunk.
FALLBACK_CHUNK: Final = 1 << 18

_EAGAIN: Final = -errno.EAGAIN
_MSG_WAITALL: Final = 0x100  # socket.MSG_WAITALL, as a plain int
_SOCK_STREAM: Final = 1  # socket.SOCK_STREAM (the type may carry SOCK_NONBLOCK etc.)
_TYPE_MASK: Final = 0xF

# Whether each run's kernel has IORING_OP_SPLICE (asked once per run).
_splice_supported: weakref.WeakKeyDictionary[Driver, bool] = weakref.WeakKeyDictionary()


def splice_supported(driver: Driver) -> bool:
    """Whether the ring of ``driver`` supports IORING_OP_SPLICE (IORING_REGISTER_PROBE)."""
    known = _splice_supported.get(driver)
    if known is None:
        known = _splice_supported[driver] = Opcode.SPLICE in driver.ring.probe()
    return known


@enable_ki_protection
async def send_file(
    stream: trio.SocketStream | trio.socket.SocketType, file: Any, offset: int = 0, count: int | None = None
) -> int:
    """Send ``count`` bytes of ``file`` from ``offset`` (``count`` None: to its end)
    on ``stream``, without the data passing through Python; returns the number of
    bytes sent (fewer than ``count`` only if the file ended first).

    ``stream``: a `trio.SocketStream`, or a Trio socket (SOCK_STREAM). ``file``: a
    regular file open for reading, as a binary file object or an fd.

    On io_uring the bytes go file -> pipe -> socket by IORING_OP_SPLICE (up to 64
    KiB in the page cache: by an inline READ into a buffer of the call's own and a
    SEND); elsewhere (or without SPLICE) they are read in a worker thread and sent.

    Like ``send_all``, it returns once every byte belongs to the kernel, and a
    second concurrent sender gets `trio.BusyResourceError`. Like `socket.sendfile`,
    it leaves the file position at ``offset`` plus the bytes sent, whether it
    returns or raises: after a cancellation, ``file.tell() - offset`` is what went
    out.

    :raises trio.ClosedResourceError: the stream or socket is closed (or another
        task closes it meanwhile), or ``send_eof`` was called.
    :raises trio.BrokenResourceError: (a stream) the connection failed; OSError
        for a socket.
    :raises ValueError: a text-mode file, a file not open for reading, not a
        regular file, a negative ``offset``, ``count`` <= 0, a socket that is not
        SOCK_STREAM.
    """
    detector = None
    if isinstance(stream, trio.SocketStream):
        sock = stream.socket
        detector = stream._send_conflict_detector
    elif isinstance(stream, trio.socket.SocketType):
        sock = stream
    else:
        raise TypeError(f"send_file needs a trio.SocketStream or a Trio socket, not {type(stream).__name__}")
    fd, size = _check_file(file)
    offset, count = _check_range(offset, count)
    # What the file holds from offset now (it may grow or shrink meanwhile: the
    # end of the file, not this, ends the call), to size the pipe.
    expected = max(size - offset, 0) if count is None else min(count, max(size - offset, 0))
    if sock.type & _TYPE_MASK != _SOCK_STREAM:
        raise ValueError("only SOCK_STREAM type sockets are supported")
    if detector is None:
        return await _send_file(sock, False, file, fd, offset, count, expected)
    if sock.did_shutdown_SHUT_WR:
        raise trio.ClosedResourceError("can't send data after sending EOF")
    with detector:
        return await _send_file(sock, True, file, fd, offset, count, expected)


def _check_file(file: Any) -> tuple[int, int]:
    """The fd and size of a binary, readable, regular file (ValueError/TypeError/OSError if not)."""
    if isinstance(file, int):
        fd = operator.index(file)
    else:
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        try:
            fileno = file.fileno
        except AttributeError:
            raise TypeError(f"send_file needs a file object or an fd, not {type(file).__name__}") from None
        fd = fileno()  # a closed file object: ValueError("I/O operation on closed file")
    info = os.fstat(fd)  # a closed fd: OSError(EBADF)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"send_file needs a regular file; fd {fd} is {_kind(info.st_mode)}")
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
        raise ValueError(f"send_file needs a file open for reading; fd {fd} is write-only")
    return fd, info.st_size


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_range(offset: Any, count: Any) -> tuple[int, int | None]:
    # asyncio's loop.sock_sendfile wording for offset; socket.sendfile's for count.
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    return int(offset), None if count is None else int(count)


class _Transfer:
    """One call's progress, kept where the cleanup can read it whatever was raised."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0


async def _send_file(
    sock: Any, is_stream: bool, file: Any, fd: int, offset: int, count: int | None, expected: int
) -> int:
    await checkpoint_if_cancelled()
    sock_fd = sock.fileno()
    if sock_fd == -1:
        await cancel_shielded_checkpoint()
        if is_stream:
            raise trio.ClosedResourceError("socket was already closed")
        raise os_error(errno.EBADF)
    driver = sock._uring_driver() if type(sock) is UringSocket else None
    transfer = _Transfer()
    src = os.dup(fd)  # private numbers: see the module's essay
    try:
        try:
            if driver is not None and expected <= SMALL_FILE:
                if await _from_page_cache(driver, driver.fd(sock_fd), sock_fd, src, offset, count, expected, transfer):
                    return transfer.sent
                if count is not None:  # the page cache lacked the rest: on by SPLICE
                    count -= transfer.sent
            if driver is not None and splice_supported(driver):
                await _splice(driver, driver.fd(sock_fd), sock_fd, src, offset, count, expected, transfer)
            else:
                await _read_and_send(sock, src, offset, count, transfer)
        except _SocketSide as side:
            if is_stream:
                _translate(side.error)
            raise side.error from None
    finally:
        _set_position(file, src, offset + transfer.sent)
        os.close(src)
    return transfer.sent


class _PipePool:
    """A run's idle pipes, each empty (a call gives back only a pipe it emptied
    completely, with no op in flight), closed when the run ends."""

    #: Idle pipes kept per run (more are closed when given back).
    limit = 8

    def __init__(self) -> None:
        self.idle: list[tuple[int, int]] = []
        self.closed = False

    def take(self) -> tuple[int, int]:
        if self.idle:
            return self.idle.pop()
        return os.pipe2(os.O_CLOEXEC)

    def give(self, pipe: tuple[int, int]) -> None:
        if self.closed or len(self.idle) >= self.limit:
            _close_pipe(pipe)
        else:
            self.idle.append(pipe)

    def close(self) -> None:
        self.closed = True
        while self.idle:
            _close_pipe(self.idle.pop())


def _close_pipe(pipe: tuple[int, int]) -> None:
    os.close(pipe[0])
    os.close(pipe[1])


_pools: weakref.WeakKeyDictionary[Driver, _PipePool] = weakref.WeakKeyDictionary()


def _pipe_pool(driver: Driver) -> _PipePool:
    pool = _pools.get(driver)
    if pool is None:
        pool = _pools[driver] = _PipePool()
        try:
            trio.lowlevel.spawn_system_task(_close_when_the_run_ends, pool, name="trio_uring.send_file pipes")
        except RuntimeError:  # the run is ending (its system nursery is closed): keep none
            pool.closed = True
    return pool


async def _close_when_the_run_ends(pool: _PipePool) -> None:
    # System tasks are cancelled once the main task has finished.
    try:
        await trio.sleep_forever()
    finally:
        pool.close()


class _SocketSide(Exception):
    """An OSError of the socket side, on its way to `_send_file`: a stream's is
    translated (ClosedResourceError, BrokenResourceError); the file side's errors
    are the caller's to see as they are."""

    def __init__(self, error: OSError) -> None:
        self.error = error


async def _splice(
    driver: Driver,
    st: FdState,
    sock_fd: int,
    src: int,
    offset: int,
    count: int | None,
    expected: int,
    transfer: _Transfer,
) -> None:
    pool = _pipe_pool(driver)
    out = os.dup(sock_fd)
    try:
        r, w = pipe = pool.take()
    except BaseException:
        os.close(out)
        raise
    owned = (out, r, w)
    op: Splice | None = None
    in_pipe = 0
    try:
        if expected > DEFAULT_PIPE_SIZE:
            _grow_pipe(w)
        left = count
        while True:
            if not in_pipe:
                # (A file -> pipe SPLICE into an empty pipe moves what fits, up
                # to want: the pipe's capacity need not be known.)
                want = PIPE_SIZE if left is None else min(left, PIPE_SIZE)
                if want == 0:
                    return
                if op is not None:
                    await checkpoint_if_cancelled()  # a cancel that lost its race to the last op
                op = Splice(w, src, offset + transfer.sent, want)
                in_pipe = await driver.perform(op, st)
                if in_pipe == 0:
                    return  # the end of the file
                if left is not None:
                    left -= in_pipe
            await checkpoint_if_cancelled()
            op = Splice(out, r, -1, in_pipe)
            try:
                moved = await driver.perform(op, st)
            except BlockingIOError:
                await _wait_writable(driver, out, st)
                continue
            except OSError as exc:
                raise _SocketSide(exc) from None
            if moved <= 0:  # the pipe holds in_pipe bytes: SPLICE cannot say 0
                raise RuntimeError(f"trio_uring: SPLICE from a pipe holding {in_pipe} bytes moved {moved}")
            transfer.sent += moved
            in_pipe -= moved
    finally:
        if op is not None and op.user_data in driver.ops:
            # Abandoned in flight (the run is being torn down): its io-wq worker may
            # not have started, and would look the numbers up then. They stay ours
            # until its CQE (Splice.discard closes them).
            op.owned_fds = owned
        else:
            os.close(out)
            if in_pipe == 0:
                pool.give(pipe)  # empty, nothing in flight: the next call may use it
            else:
                _close_pipe(pipe)  # with bytes no socket must ever get


async def _from_page_cache(
    driver: Driver,
    st: FdState,
    sock_fd: int,
    src: int,
    offset: int,
    count: int | None,
    expected: int,
    transfer: _Transfer,
) -> bool:
    """A small file: READs that take what the page cache holds at once (no io-wq
    thread), each followed by SENDs of exactly what it read. True when done; False
    when the page cache lacks the next bytes (the caller goes on by SPLICE)."""
    cap = max(expected, 4096)
    buf = ffi.new("char[]", cap)  # ours: kept by each op until its CQE
    left = count
    parked = False
    while left is None or left > 0:
        want = cap if left is None else min(left, cap)
        if transfer.sent:
            await checkpoint_if_cancelled()
        n = driver.try_now(ReadNoWait(src, buf, want, offset + transfer.sent), st)
        if n == _EAGAIN or n == NOT_SUBMITTED:
            return False
        if n < 0:
            raise os_error(-n)  # the file's
        if n == 0:
            break  # the end of the file
        n = min(n, want)
        if left is not None:
            left -= n
        parked |= await _send_exactly(driver, st, sock_fd, buf, n, transfer)
    if not parked:
        await cancel_shielded_checkpoint()  # a checkpoint, as every call is
    return True


async def _send_exactly(driver: Driver, st: FdState, sock_fd: int, buf: Any, n: int, transfer: _Transfer) -> bool:
    """Send ``n`` bytes of ``buf``, counting what the kernel took (exact even when
    a cancel or a close ends a SEND part-way). True if it had to wait."""
    res = driver.send_now(st, buf, n, 0)  # what fits, at once
    if res < 0 and res != _EAGAIN and res != NOT_SUBMITTED:
        raise _SocketSide(os_error(-res))
    pos = max(res, 0)
    transfer.sent += pos
    while pos < n:
        if pos:
            await checkpoint_if_cancelled()
        try:
            moved = await driver.perform(Send(sock_fd, buf, n - pos, _MSG_WAITALL, offset=pos), st)
        except OSError as exc:
            raise _SocketSide(exc) from None
        transfer.sent += moved
        pos += moved
    return n > max(res, 0)


async def _wait_writable(driver: Driver, out: int, st: FdState) -> None:
    try:
        await driver.wait_ready(out, WRITE, st)
    except OSError as exc:
        raise _SocketSide(exc) from None


def _grow_pipe(w: int) -> None:
    """Make the pipe PIPE_SIZE if allowed."""
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:  # EPERM past the per-user pipe page limit: it keeps what it has
        pass


async def _read_and_send(sock: Any, src: int, offset: int, count: int | None, transfer: _Transfer) -> None:
    """The fallback: chunks read by a worker thread, sent with the socket's send
    (its counts are exact, cancelled or not)."""
    buf = bytearray(FALLBACK_CHUNK if count is None else min(count, FALLBACK_CHUNK))
    view = memoryview(buf)
    left = count
    while left is None or left > 0:
        want = len(buf) if left is None else min(left, len(buf))
        chunk = view[:want]
        n = await trio.to_thread.run_sync(os.preadv, src, [chunk], offset + transfer.sent)
        if n == 0:
            return
        if left is not None:
            left -= n
        data = chunk[:n]
        while data:
            try:
                k = await sock.send(data)
            except OSError as exc:
                raise _SocketSide(exc) from None
            transfer.sent += k
            data = data[k:]


def _set_position(file: Any, src: int, position: int) -> None:
    """socket.sendfile's rule: the file's position is offset + bytes sent. A file
    object is told (it may hold a read buffer); an fd is moved with lseek (through
    our duplicate: the same open file)."""
    target = getattr(file, "wrapped", file)  # a trio.open_file wrapper's file
    if isinstance(target, io.IOBase) and not target.closed:
        target.seek(position)
    else:
        os.lseek(src, position, os.SEEK_SET)
