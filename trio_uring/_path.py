"""`trio_uring.Path`: `trio.Path` with its file calls through the ring.

A subclass of Trio's ``PosixPath``: every method is Trio's (a worker thread) except
those below, which are ring ops on the io_uring backend when the kernel has the op
(IORING_REGISTER_PROBE) and the call is the plain form of it; otherwise (another
backend, a missing op, an argument only the thread path knows) they are Trio's.

* ``open``: `trio_uring.open_file` (see there for which path each mode takes).
* ``read_bytes`` / ``write_bytes``: OPENAT, READ / WRITE, CLOSE.
* ``read_text`` / ``write_text``: the same, with the text decoded or encoded by the
  stdlib's own TextIOWrapper (over a BytesIO), so encodings, BOMs, error handlers
  and newline translation are the stdlib's; ``write_text`` opens (truncates) the file
  before encoding, as pathlib does.
* ``stat`` / ``exists`` / ``is_file`` / ``is_dir``: STATX.
* ``unlink`` / ``rmdir``: UNLINKAT. ``rename`` / ``replace``: RENAMEAT.
  ``mkdir``: MKDIRAT (``parents`` and ``exist_ok`` as pathlib does them).
"""

from __future__ import annotations

import errno
import io
import os
import pathlib
import stat as _stat
import struct
from typing import TYPE_CHECKING, Any, ClassVar, Final

import trio
from trio.lowlevel import checkpoint_if_cancelled

from ._files import UringFile, open_file, ring_has
from ._iomanager import current_driver
from ._ops import AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, MkdirAt, Op, RenameAt, Statx, UnlinkAt
from ._ring import Opcode
from ._ring_cffi import ffi

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._lifecycle import Driver

__all__ = ["Path"]

# What open() makes of encoding=None (io.text_encoding: "locale", and the
# EncodingWarning of -X warn_default_encoding), as pathlib calls it.
_text_encoding: Callable[[str | None], str] = io.text_encoding  # type: ignore[attr-defined]

_IGNORED_BY_EXISTS = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


#: The methods this module does through the ring, and Trio's own versions of them
#: (whatever `trio_uring.use_ring_files` does to trio.Path later).
RING_METHODS: Final = (
    "open", "read_bytes", "read_text", "write_bytes", "write_text", "stat", "exists", "is_file", "is_dir",
    "unlink", "rmdir", "rename", "replace", "mkdir",
)  # fmt: skip
TRIO_PATH: Final[dict[str, Any]] = {name: getattr(trio.Path, name) for name in RING_METHODS}


class Path(trio.Path, pathlib.PurePosixPath):
    """`trio.Path`, with open, read/write_bytes/text, stat, exists, is_file, is_dir,
    unlink, rmdir, rename, replace and mkdir through the ring."""

    __slots__ = ()
    _wrapped_cls: ClassVar[type[pathlib.Path]] = pathlib.PosixPath

    # ------------------------------------------------------------ files

    async def open(
        self,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """Like `trio.Path.open`: `trio_uring.open_file`."""
        if "b" not in mode:
            encoding = _text_encoding(encoding)
        return await open_file(self, mode, buffering, encoding, errors, newline)

    async def read_bytes(self) -> bytes:
        """Like pathlib's read_bytes."""
        async with await self.open("rb") as f:
            return await f.read()  # type: ignore[no-any-return]

    async def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        """Like pathlib's read_text: the bytes through the ring, decoded as the stdlib does."""
        encoding = _text_encoding(encoding)
        async with await open_file(self, "rb") as f:
            data = await f.read()  # (not opened twice: a FIFO's second open waits for another writer)
        with io.TextIOWrapper(io.BytesIO(data), encoding=encoding, errors=errors) as text:
            return text.read()

    async def write_bytes(self, data: Any) -> int:
        """Like pathlib's write_bytes."""
        view = memoryview(data)
        async with await self.open("wb") as f:
            return await f.write(view)  # type: ignore[no-any-return]

    async def write_text(
        self, data: str, encoding: str | None = None, errors: str | None = None, newline: str | None = None
    ) -> int:
        """Like pathlib's write_text: the file is opened (truncated) first, then the
        text encoded as the stdlib's TextIOWrapper does, and written through the ring."""
        if not isinstance(data, str):
            raise TypeError(f"data must be str, not {data.__class__.__name__}")
        encoding = _text_encoding(encoding)
        async with await open_file(self, "wb") as f:
            if not isinstance(f, UringFile):
                return await TRIO_PATH["write_text"](self, data, encoding, errors, newline)  # type: ignore[no-any-return]
            out = io.BytesIO()
            with io.TextIOWrapper(out, encoding=encoding, errors=errors, newline=newline, write_through=True) as text:
                n = text.write(data)
                text.flush()
                encoded = out.getvalue()
            await f.write(encoded)
            return n

    # ------------------------------------------------------------ metadata

    async def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        """Like pathlib's stat: IORING_OP_STATX."""
        driver = _driver_for(Opcode.STATX)
        path = _c_path(self)
        if driver is None or path is None:
            return await TRIO_PATH["stat"](self, follow_symlinks=follow_symlinks)  # type: ignore[no-any-return]
        op = Statx(path, 0 if follow_symlinks else AT_SYMLINK_NOFOLLOW, _named(pathlib.PosixPath(self)))
        await _perform(driver, op)
        return stat_result(op.buf)

    async def exists(self, *args: Any, **kwargs: Any) -> bool:
        """Like pathlib's exists."""
        if args or kwargs or _c_path(self) is None:
            return await TRIO_PATH["exists"](self, *args, **kwargs)  # type: ignore[no-any-return]
        try:
            await self.stat()
        except OSError as exc:
            if exc.errno not in _IGNORED_BY_EXISTS:
                raise
            return False
        return True

    async def is_file(self, *args: Any, **kwargs: Any) -> bool:
        """Like pathlib's is_file."""
        if args or kwargs or _c_path(self) is None:
            return await TRIO_PATH["is_file"](self, *args, **kwargs)  # type: ignore[no-any-return]
        return await _mode_is(self, _stat.S_ISREG)

    async def is_dir(self, *args: Any, **kwargs: Any) -> bool:
        """Like pathlib's is_dir."""
        if args or kwargs or _c_path(self) is None:
            return await TRIO_PATH["is_dir"](self, *args, **kwargs)  # type: ignore[no-any-return]
        return await _mode_is(self, _stat.S_ISDIR)

    # ------------------------------------------------------------ directory entries

    async def unlink(self, missing_ok: bool = False) -> None:
        """Like pathlib's unlink: IORING_OP_UNLINKAT."""
        driver = _driver_for(Opcode.UNLINKAT)
        path = _c_path(self)
        if driver is None or path is None:
            return await TRIO_PATH["unlink"](self, missing_ok)  # type: ignore[no-any-return]
        try:
            await _perform(driver, UnlinkAt(path, 0, _named(pathlib.PosixPath(self))))
        except FileNotFoundError:
            if not missing_ok:
                raise

    async def rmdir(self) -> None:
        """Like pathlib's rmdir: IORING_OP_UNLINKAT with AT_REMOVEDIR."""
        driver = _driver_for(Opcode.UNLINKAT)
        path = _c_path(self)
        if driver is None or path is None:
            return await TRIO_PATH["rmdir"](self)  # type: ignore[no-any-return]
        await _perform(driver, UnlinkAt(path, AT_REMOVEDIR, _named(pathlib.PosixPath(self))))

    async def rename(self, target: Any) -> Path:
        """Like pathlib's rename: IORING_OP_RENAMEAT. Returns the new path."""
        driver = _driver_for(Opcode.RENAMEAT)
        path = _c_path(self)
        try:
            new = os.fsencode(target)
        except TypeError:
            new = None
        if driver is None or path is None or new is None or b"\0" in new:
            return await TRIO_PATH["rename"](self, target)  # type: ignore[no-any-return]
        await _perform(driver, RenameAt(path, new, _named(pathlib.PosixPath(self)), _named(target)))
        return self.__class__(target)

    async def replace(self, target: Any) -> Path:
        """Like pathlib's replace (on Linux, rename)."""
        return await self.rename(target)

    async def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        """Like pathlib's mkdir: IORING_OP_MKDIRAT."""
        driver = _driver_for(Opcode.MKDIRAT)
        path = _c_path(self)
        if driver is None or path is None:
            return await TRIO_PATH["mkdir"](self, mode, parents, exist_ok)  # type: ignore[no-any-return]
        try:
            await _perform(driver, MkdirAt(path, mode, _named(pathlib.PosixPath(self))))
        except FileNotFoundError:
            if not parents or self.parent == self:
                raise
            await self.parent.mkdir(parents=True, exist_ok=True)
            await self.mkdir(mode, parents=False, exist_ok=exist_ok)
        except OSError:
            if not exist_ok or not await self.is_dir():
                raise


# Module functions, not methods: with `trio_uring.use_ring_files` the methods below
# run on Trio's own Path objects too.


def _driver_for(opcode: Opcode) -> Driver | None:
    driver = current_driver()
    if driver is None or not ring_has(driver, opcode):
        return None
    return driver


def _os_errors_keep_path_objects() -> bool:
    # What an os call names in its OSError for a path object: the object itself
    # (newer Pythons) or its os.fspath (3.11). pathlib's calls, so Trio's, do either.
    class Probe:
        def __fspath__(self) -> str:
            return ""

    probe = Probe()
    try:
        os.stat(probe)
    except OSError as exc:
        return exc.filename is probe
    return False


def _named(path: Any) -> Any:
    """``path`` as an os call would name it in its OSError (``filename``)."""
    return path if _KEEPS_PATH_OBJECTS or isinstance(path, (str, bytes)) else os.fspath(path)


_KEEPS_PATH_OBJECTS: Final = _os_errors_keep_path_objects()


def _c_path(path: Any) -> bytes | None:
    encoded = os.fsencode(path)
    return None if b"\0" in encoded else encoded


async def _perform(driver: Driver, op: Op) -> Any:
    await checkpoint_if_cancelled()
    return await driver.perform(op, None)


async def _mode_is(path: Any, test: Any) -> bool:
    try:
        return bool(test((await path.stat()).st_mode))
    except OSError as exc:
        if exc.errno not in _IGNORED_BY_EXISTS:
            raise
        return False


# struct statx (include/uapi/linux/stat.h), up to the dev numbers.
_STATX = struct.Struct("<IIQIIIHHQQQQ" + "qIi" * 4 + "IIII")


def stat_result(buf: Any) -> os.stat_result:
    """A ``struct statx`` as os.stat would give it."""
    (_mask, blksize, _attrs, nlink, uid, gid, mode, _spare, ino, size, blocks, _amask, *rest) = _STATX.unpack_from(
        ffi.buffer(buf)
    )
    stamps = {"atime": rest[0:2], "ctime": rest[6:8], "mtime": rest[9:11]}
    rdev_major, rdev_minor, dev_major, dev_minor = rest[12:16]
    fields: dict[str, Any] = {f"st_{name}": sec + nsec * 1e-9 for name, (sec, nsec) in stamps.items()}
    fields.update({f"st_{name}_ns": sec * 1_000_000_000 + nsec for name, (sec, nsec) in stamps.items()})
    fields.update(st_blksize=blksize, st_blocks=blocks, st_rdev=os.makedev(rdev_major, rdev_minor))
    seq = (mode, ino, os.makedev(dev_major, dev_minor), nlink, uid, gid, size)
    return os.stat_result((*seq, stamps["atime"][0], stamps["mtime"][0], stamps["ctime"][0]), fields)
