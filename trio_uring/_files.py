"""Files through the ring: `open_file`, and the async file object it returns.

Trio runs every file call in a worker thread (``trio.to_thread.run_sync``): a
thread hand-off each way, tens of microseconds, for a read that the page cache
answers in one. On the io_uring backend the calls below are ring ops instead, with
the results, errors and file positions the stdlib file object would give.

Which path each mode takes
==========================

* **Binary modes on a regular file** (``"rb"``, ``"wb"``, ``"ab"``, ``"xb"``, with
  or without ``+``, any ``buffering`` but 1): opened with IORING_OP_OPENAT, closed
  with IORING_OP_CLOSE, and read and written with IORING_OP_READ / WRITE at the
  kernel's file position (offset -1, which the kernel advances). Each read or write
  is first tried with RWF_NOWAIT, which the kernel completes within the
  io_uring_enter that submits it when no waiting is needed (data in the page
  cache): no scheduler round trip, as Trio's sockets try a non-blocking call first.
  Only when that would block is an op submitted that waits (in the kernel's io-wq
  threads). ``seek``, ``tell`` and ``flush`` are the stdlib object's own, which do
  no I/O here (lseek; the buffers are empty); ``truncate`` goes through Trio's
  thread path.
* **Text modes**: opened with IORING_OP_OPENAT; the stdlib text object (its
  decoder, newline translation, buffering) does every call in Trio's thread path,
  exactly as ``trio.open_file`` does: a text layer cannot sit on top of async raw
  reads without rewriting it.
* **Everything else** goes to ``trio.open_file`` unchanged: an fd or an ``opener``
  instead of a path, ``closefd=False``, unusual modes (which raise there as
  ``open`` raises), a file that is not a regular file (a FIFO, a terminal: their
  reads may wait forever and cannot be put back), a kernel without OPENAT, and
  another backend than io_uring.

The binary object keeps no data of its own
==========================================

``.wrapped`` is the stdlib object ``open`` would have made (BufferedReader,
BufferedWriter, BufferedRandom, or FileIO for ``buffering=0``), built on the fd the
ring opened, but its buffers are never used: every call goes to the kernel, so the
kernel's file position is the only one there is. What this changes, and what it
does not:

* Results are the stdlib's: a buffered ``read(n)`` returns n bytes unless the file
  ends first (several READs if need be), ``read1`` and the raw object's calls do one
  READ, ``readline`` reads ahead and puts the file position back after the newline.
* A buffered ``write`` is written by the time it returns (the stdlib would hold up
  to a buffer's worth until ``flush``): other readers see it sooner, nothing else
  differs. It returns the whole length, as BufferedWriter.write does.
* Calls on one file are one at a time, in arrival order (a lock per file), as the
  stdlib's buffered objects serialize Trio's threads: concurrent tasks never get
  BusyResourceError, and each read gets its own bytes.

Cancellation and close
======================

A READ or WRITE that waits is cancelled as every op is (`trio_uring._lifecycle`):
ASYNC_CANCEL, and the op's own CQE decides. A cancelled op that did nothing raises
Cancelled with the file position unchanged; one that completed is returned, and
Cancelled comes at the next checkpoint (Trio's thread path always completes the
call). When a call needs several ops (``read(n)``, ``write``): a write that has
written something finishes, shielded, so that a write either happened whole or not
at all; a read that is cancelled after it got some bytes puts the file position
back by that many (nothing read, nothing lost), then raises.

``aclose`` waits for the call in progress (as closing a buffered file waits for the
read in another thread), then retires the fd (``notify_closing``) and closes it
with IORING_OP_CLOSE: no op of this file can reach the kernel afterwards, whichever
file takes the number next. Calls after it raise ValueError ("I/O operation on
closed file."), as the stdlib's do.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import types
import warnings
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._iomanager import current_driver
from ._ops import RWF_NOWAIT, Close, FileRead, FileWrite, Fsync, OpenAt, close_quietly
from ._restrict import _kernel_supported
from ._ring import NOT_SUBMITTED, Opcode, os_error
from ._ring_cffi import ffi

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._lifecycle import Driver, FdState

__all__ = ["UringFile", "fsync", "open_file", "ring_has"]

_EAGAIN: Final = -errno.EAGAIN
_MAX_RW: Final = 0x7FFF_F000  # what one read(2)/write(2) moves at most on Linux
_LINE_CHUNK: Final = 8192
_FSYNC_DATASYNC: Final = 1  # IORING_FSYNC_DATASYNC
#: read(n)'s buffer, left uninitialised as the stdlib's is: a large n costs only
#: the pages the kernel fills (zeroing would commit all n bytes of RAM at once).
_uninitialised: Final = ffi.new_allocator(should_clear_after_alloc=False)

#: Trio's own, whatever `trio_uring.use_ring_files` does to ``trio.open_file`` later.
trio_open_file: Final = trio.open_file

#: Opcodes treated as missing whatever the kernel says (tests use it to take the
#: thread path of a kernel without them).
disabled_opcodes: set[int] = set()


def ring_has(driver: Driver, opcode: Opcode) -> bool:
    """Whether this kernel has ``opcode`` (IORING_REGISTER_PROBE, once per process)."""
    return opcode in _kernel_supported(driver.ring) and opcode not in disabled_opcodes


def _open_flags(mode: object) -> tuple[int, bool] | None:
    """``open``'s flags for ``mode``, and whether it is binary; None for a mode
    ``open`` would refuse (it says why: those go to its own path)."""
    if not isinstance(mode, str):
        return None
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        return None
    if ("t" in modes and "b" in modes) or sum(c in modes for c in "rwax") != 1:
        return None
    if "r" in modes:
        flags = os.O_RDONLY
    elif "w" in modes:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    elif "x" in modes:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    else:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    if "+" in modes:
        flags = (flags & ~os.O_WRONLY) | os.O_RDWR
    return flags | os.O_CLOEXEC, "b" in modes


async def open_file(
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[str, int], int] | None = None,
) -> trio._file_io.AsyncIOWrapper[Any]:
    """`trio.open_file`, through the ring on the io_uring backend (see the module
    docs for which path each mode takes). Same arguments, same results."""
    driver = current_driver()
    parsed = _open_flags(mode)
    if (
        driver is None
        or parsed is None
        or opener is not None
        or not closefd
        or not isinstance(file, (str, bytes, os.PathLike))
        or not ring_has(driver, Opcode.OPENAT)
    ):
        return await trio_open_file(file, mode, buffering, encoding, errors, newline, closefd, opener)
    flags, binary = parsed
    if binary and (encoding is not None or errors is not None or newline is not None or buffering == 1):
        return await trio_open_file(file, mode, buffering, encoding, errors, newline, closefd, opener)
    try:
        name = os.fspath(file)
        path = os.fsencode(name)
    except TypeError:
        return await trio_open_file(file, mode, buffering, encoding, errors, newline, closefd, opener)
    if b"\0" in path:
        return await trio_open_file(file, mode, buffering, encoding, errors, newline, closefd, opener)
    await checkpoint_if_cancelled()
    fd = await driver.perform(OpenAt(path, flags, 0o666, name), None)
    try:
        st_mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        if stat.S_ISFIFO(st_mode) and flags & os.O_ACCMODE == os.O_RDONLY:
            # OPENAT first tries O_NONBLOCK, which opens a FIFO for reading at once
            # with no writer (its reads then end at once); open(2) waits for one.
            # Trio's open does that wait; ours is closed only after (a reader all
            # along: a writer meanwhile is never refused).
            reopened = await trio_open_file(file, mode, buffering, encoding, errors, newline, closefd, opener)
            close_quietly(fd)
            return reopened
        if not binary or not stat.S_ISREG(st_mode):
            # Trio's thread path for every call, on the fd the ring opened.
            obj = open(fd, mode, buffering, encoding, errors, newline, closefd=True)  # noqa: SIM115
            _set_name(obj, name)
            return trio.wrap_file(obj)
        obj = open(fd, mode, buffering, closefd=False)  # noqa: SIM115
        _set_name(obj, name)
        return UringFile(obj, driver, fd, buffering)
    except BaseException:
        close_quietly(fd)
        raise


def _set_name(obj: Any, name: object) -> None:
    # open(fd) names the file by its number; open(path) by the path.
    raw = obj
    while not isinstance(raw, io.FileIO):
        raw = raw.buffer if hasattr(raw, "buffer") else raw.raw
    raw.name = name


class _IfWrappedHas:
    """A method that exists only where the wrapped file has the method of that name,
    as Trio's AsyncIOWrapper exposes only those (a BufferedWriter has no read)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self.fn
        if not hasattr(obj._wrapped, self.name):
            raise AttributeError(self.name)
        return types.MethodType(self.fn, obj)


class _CallLock:
    """A file's calls one at a time, in arrival order: trio.Lock's FIFO hand-off,
    without its owner bookkeeping (cheaper, and any task may release it)."""

    __slots__ = ("busy", "lot")

    def __init__(self) -> None:
        self.busy = False
        self.lot = trio.lowlevel.ParkingLot()

    async def acquire(self) -> bool:
        """Take it; whether that waited (a schedule point). Cancellable while waiting."""
        if not self.busy:
            self.busy = True
            return False
        await self.lot.park()  # woken holding it (handed over by release)
        return True

    def release(self) -> None:
        if self.lot:
            self.lot.unpark()  # still busy: it is the woken task's now
        else:
            self.busy = False


class UringFile(trio._file_io.AsyncIOWrapper[Any]):
    """The asynchronous file object of a binary regular file on the io_uring backend.

    Trio's `trio.AsyncIOWrapper` API, with the calls as ring ops; ``wrapped`` is
    the stdlib object ``open`` would have made (never use it directly while this
    object is in use: it is bypassed, see the module docs).
    """

    def __init__(self, file: Any, driver: Driver, fd: int, bufsize: int = 0) -> None:
        super().__init__(file)
        #: The stdlib object's buffer size (what read1(-1) and peek read).
        self._bufsize = bufsize if bufsize > 1 else _buffer_size(fd)
        self._driver = driver
        self._fd = fd
        self._st: FdState = driver.fd(fd)
        self._lock = _CallLock()
        self._raw = isinstance(file, io.FileIO)  # buffering=0: one op per call, as FileIO
        self._nowait = True  # RWF_NOWAIT first (off once the kernel says EOPNOTSUPP)
        self._closed = False
        self._yielded = False  # whether the call in progress has passed a schedule point

    def __del__(self) -> None:
        # The fd is ours (the stdlib object has closefd=False): a file nobody closed
        # is closed when it is collected, with the stdlib's warning.
        if not getattr(self, "_closed", True):
            self._closed = True
            warnings.warn(f"unclosed file {self._wrapped!r}", ResourceWarning, source=self, stacklevel=1)
            close_quietly(self._fd)

    def __dir__(self) -> Iterable[str]:
        # Trio's, less the methods the wrapped file lacks (a BufferedReader's readall).
        cls = type(self)
        return [
            name
            for name in super().__dir__()
            if not isinstance(cls.__dict__.get(name), _IfWrappedHas) or hasattr(self._wrapped, name)
        ]

    # ------------------------------------------------------------ one op

    def _fd_now(self) -> int:
        """The fd, for a system call of our own (lseek, fstat): refused once it is
        retired (``notify_closing``), when the number may name another file."""
        if self._st.retired:
            raise trio.ClosedResourceError("another task closed this file")
        return self._fd

    def _unread(self, n: int) -> None:
        """Put the file position back by ``n`` bytes read ahead or read by a call
        that then failed (not on a retired fd: the number may be another file's)."""
        if n and not self._st.retired:
            os.lseek(self._fd, -n, os.SEEK_CUR)

    async def _op(self, op_class: type[FileRead], buf: Any, nbytes: int, offset: int = -1) -> int:
        """One READ or WRITE of ``nbytes`` at ``buf``: at once if the kernel can
        (RWF_NOWAIT), else an op that waits. Its byte count, or OSError."""
        driver, st = self._driver, self._st
        if self._nowait:
            res = driver.try_now(op_class(st.fd, buf, nbytes, offset, RWF_NOWAIT), st)
            if res >= 0:
                return min(res, nbytes)
            if res == -errno.EOPNOTSUPP:
                self._nowait = False
            elif res != _EAGAIN and res != NOT_SUBMITTED:
                raise os_error(-res)
        self._yielded = True
        result: int = await driver.perform(op_class(st.fd, buf, nbytes, offset), st)
        return result

    async def _read_into(self, view: Any, nbytes: int, offset: int = -1) -> int:
        cbuf = ffi.from_buffer(view, require_writable=True)
        try:
            return await self._op(FileRead, cbuf, nbytes, offset)
        finally:
            self._release_if_done(cbuf)

    def _release_if_done(self, cbuf: Any) -> None:
        # A buffer the kernel may still write into (an op of a task thrown out of a
        # dying run) is kept by that op's record instead.
        background = self._st.background
        if not background or not any(getattr(op, "buf", None) is cbuf for op in background):
            ffi.release(cbuf)

    async def _read_n(self, n: int, loop: bool) -> bytes:
        """Up to ``n`` bytes at the file position: one READ, or (``loop``) as many
        as it takes to get ``n`` or reach the end of the file. A cancel after some
        bytes were read puts the position back by that many."""
        buf = ffi.buffer(_uninitialised("char[]", n))
        got = 0
        try:
            while got < n:
                with memoryview(buf) as view:
                    k = await self._read_into(view[got:], min(n - got, _MAX_RW))
                got += k
                if k == 0 or not loop:
                    break
        except BaseException:
            if got:
                self._unread(got)
            raise
        return buf[:got]  # type: ignore[no-any-return]  # (bytes: a copy of what was read)

    async def _read_all(self) -> bytes:
        """To the end of the file, as FileIO.readall and BufferedReader.read(-1) do
        (reading until a READ returns nothing)."""
        try:
            fd = self._fd_now()
            left = os.fstat(fd).st_size - os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:
            left = 0
        chunks = []
        size = max(left, 0) + 1 if left > 0 else 65536
        got = 0
        try:
            while True:
                chunk = await self._read_n(min(size, _MAX_RW), loop=False)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
                size = max(65536, got)
        except BaseException:
            if got:
                self._unread(got)
            raise
        return b"".join(chunks)

    async def _write_all(self, view: memoryview, loop: bool) -> int:
        """Write ``view`` at the file position: one WRITE, or (``loop``) until all of
        it is written. Once some of it is written the rest is written shielded from
        cancellation: a write happens whole or not at all."""
        total = view.nbytes
        done = 0
        with memoryview(view).cast("B") as data:
            while True:
                cbuf = ffi.from_buffer(data[done:], require_writable=False)
                try:
                    if done:
                        with trio.CancelScope(shield=True):
                            k = await self._op(FileWrite, cbuf, min(total - done, _MAX_RW))
                    else:
                        k = await self._op(FileWrite, cbuf, min(total - done, _MAX_RW))
                finally:
                    self._release_if_done(cbuf)
                done += k
                if not loop or done >= total or k == 0:
                    return done

    # ------------------------------------------------------------ the call protocol

    async def _thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(partial(fn, *args))

    # ------------------------------------------------------------ reading

    @_IfWrappedHas
    async def read(self, size: int | None = -1, /) -> bytes:
        """Like the stdlib's read: through the ring."""
        w = self._wrapped
        if size is None:
            size = -1
        if type(size) is not int or self._closed or w.closed or not w.readable() or (size < -1 and not self._raw):
            return await self._thread(w.read, size)  # type: ignore[no-any-return]  # (raises before any I/O)

        async def work() -> bytes:
            if size == 0:
                return b""
            if size < 0:
                return await self._read_all()
            return await self._read_n(size, loop=not self._raw)

        return await self._locked(work, partial(w.read, size))  # type: ignore[no-any-return]

    @_IfWrappedHas
    async def readall(self) -> bytes:
        """Like FileIO.readall: through the ring."""
        w = self._wrapped
        if self._closed or w.closed or not w.readable():
            return await self._thread(w.readall)  # type: ignore[no-any-return]
        return await self._locked(self._read_all, w.readall)  # type: ignore[no-any-return]

    @_IfWrappedHas
    async def read1(self, size: int | None = -1, /) -> bytes:
        """Like BufferedReader.read1: one READ."""
        w = self._wrapped
        if size is None:
            size = -1
        if type(size) is not int or self._closed or w.closed or not w.readable():
            return await self._thread(w.read1, size)  # type: ignore[no-any-return]
        if size < 0:
            size = self._bufsize

        async def work() -> bytes:
            return await self._read_n(size, loop=False) if size else b""

        return await self._locked(work, partial(w.read1, size))  # type: ignore[no-any-return]

    async def _readinto(self, method: str, buffer: Any, loop: bool) -> int:
        w = self._wrapped
        try:
            view = memoryview(buffer).cast("B")
            if view.readonly:
                raise TypeError
        except TypeError:
            return await self._thread(getattr(w, method), buffer)  # type: ignore[no-any-return]
        if self._closed or w.closed or not w.readable():
            view.release()  # (not left in the error's traceback: the buffer could not be resized)
            return await self._thread(getattr(w, method), buffer)  # type: ignore[no-any-return]

        async def work() -> int:
            n = view.nbytes
            got = 0
            try:
                while got < n:
                    k = await self._read_into(view[got:], min(n - got, _MAX_RW))
                    got += k
                    if k == 0 or not loop:
                        break
            except BaseException:
                if got:
                    self._unread(got)
                raise
            return got

        try:
            return await self._locked(work, partial(getattr(w, method), buffer))  # type: ignore[no-any-return]
        finally:
            view.release()

    @_IfWrappedHas
    async def readinto(self, buffer: Any, /) -> int:
        """Like the stdlib's readinto: through the ring, into ``buffer``."""
        return await self._readinto("readinto", buffer, loop=not self._raw)

    @_IfWrappedHas
    async def readinto1(self, buffer: Any, /) -> int:
        """Like BufferedReader.readinto1: one READ into ``buffer``."""
        return await self._readinto("readinto1", buffer, loop=False)

    @_IfWrappedHas
    async def readline(self, size: int | None = -1, /) -> bytes:
        """Like the stdlib's readline: reads ahead, then puts the file position back
        right after the newline."""
        w = self._wrapped
        if size is None:
            size = -1
        if type(size) is not int or self._closed or w.closed or not w.readable():
            return await self._thread(w.readline, size)  # type: ignore[no-any-return]
        return await self._locked(partial(self._readline, size), partial(w.readline, size))  # type: ignore[no-any-return]

    async def _readline(self, size: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        try:
            while size < 0 or got < size:
                want = _LINE_CHUNK if size < 0 else min(_LINE_CHUNK, size - got)
                chunk = await self._read_n(want, loop=False)
                if not chunk:
                    break
                end = chunk.find(b"\n")
                if end >= 0:
                    extra = len(chunk) - end - 1
                    if extra:
                        self._unread(extra)
                    parts.append(chunk[: end + 1])
                    got += end + 1
                    break
                parts.append(chunk)
                got += len(chunk)
        except BaseException:
            if got:
                self._unread(got)
            raise
        return b"".join(parts)

    @_IfWrappedHas
    async def readlines(self, hint: int | None = -1, /) -> list[bytes]:
        """Like the stdlib's readlines: through the ring."""
        w = self._wrapped
        if hint is None:
            hint = -1
        if type(hint) is not int or self._closed or w.closed or not w.readable():
            return await self._thread(w.readlines, hint)  # type: ignore[no-any-return]

        async def work() -> list[bytes]:
            if hint <= 0:
                data = await self._read_all()
                lines = data.split(b"\n")
                last = lines.pop()
                out = [line + b"\n" for line in lines]
                if last:
                    out.append(last)
                return out
            out, total = [], 0
            while True:
                line = await self._readline(-1)
                if not line:
                    return out
                out.append(line)
                if len(line) > hint - total:  # as IOBase.readlines counts
                    return out
                total += len(line)

        return await self._locked(work, partial(w.readlines, hint))  # type: ignore[no-any-return]

    @_IfWrappedHas
    async def peek(self, size: int = 0, /) -> bytes:
        """Like BufferedReader.peek: what one buffer fill would hold, position unchanged."""
        w = self._wrapped
        if type(size) is not int or self._closed or w.closed or not w.readable():
            return await self._thread(w.peek, size)  # type: ignore[no-any-return]

        async def work() -> bytes:
            fd = self._fd_now()
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            n = self._bufsize
            buf = bytearray(n)
            with memoryview(buf) as view:
                k = await self._read_into(view, n, pos)
            return bytes(buf[:k])

        return await self._locked(work, partial(w.peek, size))  # type: ignore[no-any-return]

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line:
            return line  # type: ignore[no-any-return]
        raise StopAsyncIteration

    # ------------------------------------------------------------ writing

    @_IfWrappedHas
    async def write(self, data: Any, /) -> int:
        """Like the stdlib's write: through the ring (written when it returns)."""
        w = self._wrapped
        try:
            view = memoryview(data)
        except TypeError:
            return await self._thread(w.write, data)  # type: ignore[no-any-return]
        if self._closed or w.closed or not w.writable() or not view.c_contiguous:  # (the stdlib's error)
            view.release()
            return await self._thread(w.write, data)  # type: ignore[no-any-return]

        async def work() -> int:
            if not view.nbytes:
                return 0
            return await self._write_all(view, loop=not self._raw)

        try:
            return await self._locked(work, partial(w.write, data))  # type: ignore[no-any-return]
        finally:
            view.release()

    @_IfWrappedHas
    async def writelines(self, lines: Iterable[Any], /) -> None:
        """Like the stdlib's writelines: the lines written as one."""
        w = self._wrapped
        if self._closed or w.closed or not w.writable():
            return await self._thread(w.writelines, lines)  # type: ignore[no-any-return]
        out = io.BytesIO()
        error: BaseException | None = None
        try:
            for line in lines:
                out.write(line)  # (a bad line: the stdlib write's TypeError or BufferError)
        except Exception as exc:  # the lines before it are written, as the stdlib's are
            error = exc
        data = out.getvalue()

        async def work() -> None:
            if data:
                await self._write_all(memoryview(data), loop=True)

        await self._locked(work, partial(w.writelines, ()))
        if error is not None:
            raise error

    # ------------------------------------------------------------ position, flush, truncate

    async def _sync(self, method: str, *args: Any) -> Any:
        # The stdlib's own method: an lseek or nothing (its buffers are empty).
        fn = getattr(self._wrapped, method)

        async def work() -> Any:
            if not self._closed:
                self._fd_now()
            return fn(*args)

        return await self._locked(work, None)

    @_IfWrappedHas
    async def seek(self, target: int, whence: int = 0, /) -> int:
        """Like the stdlib's seek (an lseek)."""
        return await self._sync("seek", target, whence)  # type: ignore[no-any-return]

    @_IfWrappedHas
    async def tell(self) -> int:
        """Like the stdlib's tell (an lseek)."""
        return await self._sync("tell")  # type: ignore[no-any-return]

    @_IfWrappedHas
    async def flush(self) -> None:
        """Like the stdlib's flush: nothing is held back, so nothing to write."""
        await self._sync("flush")

    @_IfWrappedHas
    async def truncate(self, size: int | None = None, /) -> int:
        """Like the stdlib's truncate, in Trio's thread path (no ring op for it here)."""
        w = self._wrapped

        async def work() -> int:
            if not self._closed:
                self._fd_now()
            return await self._thread(w.truncate, size)  # type: ignore[no-any-return]

        return await self._locked(work, None)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ the lock, close, detach

    async def _locked(self, work: Callable[[], Any], if_closed: Callable[[], object] | None) -> Any:
        """Run ``work`` as this file's one call in progress. A checkpoint, like
        every Trio file call: a cancel point first, and a schedule point at the end
        if ``work`` did not wait (its errors raised after it). ``if_closed``: the
        stdlib's own call, which raises its error for a closed file (None: ``work``
        runs anyway, the stdlib call in it raises)."""
        await checkpoint_if_cancelled()
        lock = self._lock
        waited = await lock.acquire()
        try:
            if self._closed and if_closed is not None:
                if_closed()  # raises (a closed file does no I/O)
                raise ValueError("I/O operation on closed file.")
            self._yielded = waited
            result = await work()
        except BaseException as exc:
            lock.release()
            if not self._yielded and not isinstance(exc, trio.Cancelled):
                await cancel_shielded_checkpoint()
            raise
        lock.release()
        if not self._yielded:
            await cancel_shielded_checkpoint()
        return result

    async def aclose(self) -> None:
        """Like Trio's aclose: shielded; waits for the call in progress, then closes
        the fd with IORING_OP_CLOSE (after ``notify_closing``: nothing of this file
        reaches whatever takes the number next)."""
        with trio.CancelScope(shield=True):
            lock = self._lock
            waited = await lock.acquire()
            try:
                if not self._closed:
                    await self._close()
                    waited = True
            finally:
                lock.release()
            if not waited:
                await cancel_shielded_checkpoint()
        await checkpoint_if_cancelled()

    async def _close(self) -> None:
        self._closed = True
        try:
            self._wrapped.close()  # marks it closed; closefd=False: the fd is ours
        finally:
            await self._close_fd()

    async def _close_fd(self) -> None:
        driver, fd = self._driver, self._fd
        if driver.closed:  # (the run's ring is gone: nothing of ours can reach the fd)
            os.close(fd)
        else:
            driver.notify_closing(fd)
            if ring_has(driver, Opcode.CLOSE):
                await driver.perform(Close(fd), None)
            else:
                await trio.to_thread.run_sync(os.close, fd)

    async def detach(self) -> Any:
        """Like Trio's detach: the raw file, as an async file object (through the ring)."""
        detach = self._wrapped.detach  # (AttributeError for a raw file, as Trio's)

        async def work() -> UringFile:
            raw = detach()
            self._closed = True  # the fd is the new object's
            new = UringFile.__new__(UringFile)
            UringFile.__init__(new, raw, self._driver, self._fd, self._bufsize)
            return new

        return await self._locked(work, detach)


def _buffer_size(fd: int) -> int:
    # As open() sizes a buffer: the file system's block size, else the default.
    try:
        size = os.fstat(fd).st_blksize
    except OSError:
        size = 0
    return size if size > 1 else io.DEFAULT_BUFFER_SIZE


async def fsync(file: Any, *, datasync: bool = False) -> None:
    """``os.fsync`` (``datasync``: ``os.fdatasync``) of ``file`` (an fd, or an object
    with ``fileno()``: an async file object too), as IORING_OP_FSYNC on the io_uring
    backend, in Trio's thread path elsewhere. A checkpoint."""
    fd = file if isinstance(file, int) else file.fileno()
    driver = current_driver()
    if driver is None or not ring_has(driver, Opcode.FSYNC):
        await trio.to_thread.run_sync(os.fdatasync if datasync else os.fsync, fd)
        return
    await checkpoint_if_cancelled()
    st = file._st if isinstance(file, UringFile) else driver.fd(fd)
    await driver.perform(Fsync(fd, _FSYNC_DATASYNC if datasync else 0), st)
