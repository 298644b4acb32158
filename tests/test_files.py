"""Files through the ring: trio_uring.open_file and trio_uring.Path, side by side with Trio's.

Every comparison runs the same script of calls on two copies of one file, one
opened by ``trio.open_file`` (Trio's thread path, the reference) and one by
``trio_uring.open_file``, both in one run on the io_uring backend; the results
(values, or the exception's type and message), the file positions and the files'
contents afterwards must be equal.
"""

from __future__ import annotations

import errno
import io
import os
import pathlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _files
from trio_uring._files import UringFile
from trio_uring._lifecycle import Driver
from trio_uring._ops import FileRead, FileWrite
from trio_uring._ring import Opcode

pytestmark = pytest.mark.timeout(30)

CONTENT = {
    0: b"",
    1: b"x",
    4095: bytes(range(256)) * 15 + b"\n" * 255,
    4096: (b"line one\nline two\r\nthree\n" * 200)[:4096],
    100_000: b"".join(b"%d: " % i + b"ab" * (i % 50) + b"\n" for i in range(2000))[:100_000],
}

Call = tuple[str, tuple[Any, ...]]

READ_SCRIPTS: dict[str, list[Call]] = {
    "read-all": [("read", ()), ("read", ()), ("tell", ())],
    "read-sizes": [("read", (0,)), ("read", (1,)), ("read", (10,)), ("read", (5000,)), ("tell", ()), ("read", (-1,))],
    "read-none": [("read", (None,)), ("read", (3,))],
    "read-bad": [("read", ("x",)), ("read", (-2,)), ("read", (2,))],
    # (read1 and peek at the start only: later the stdlib's return what is left of
    # its buffer, ours up to the size asked from the position; both are what they
    # promise. test_read1_and_peek_later checks ours.)
    "read1": [("read1", (5,)), ("tell", ())],
    "read1-all": [("read1", ()), ("tell", ())],
    "read1-big": [("read1", (10**6,)), ("tell", ())],
    "read1-zero": [("read1", (0,)), ("tell", ())],
    "readinto": [("readinto", (bytearray(7),)), ("readinto", (bytearray(9000),)), ("tell", ())],
    "readinto-readonly": [("readinto", (b"1234",)), ("tell", ())],
    "readinto1": [("readinto1", (bytearray(100),)), ("tell", ())],
    "readline": [("readline", ()), ("readline", (3,)), ("readline", (-1,)), ("tell", ()), ("readline", (None,))],
    "readlines": [("readlines", ()), ("readlines", ())],
    "readlines-hint": [("readlines", (10,)), ("tell", ()), ("readlines", (1,)), ("readline", ())],
    "seek": [("seek", (0, 2)), ("read", ()), ("seek", (-3, 2)), ("read", ()), ("seek", (5,)), ("read", (4,))],
    "seek-relative": [("seek", (2, 1)), ("tell", ()), ("seek", (-1,)), ("seek", (0, 7)), ("tell", ())],
    "past-eof": [("seek", (10**6,)), ("read", ()), ("read", (5,)), ("readline", ()), ("tell", ())],
    "iterate": [("__iter__", ()), ("tell", ())],
    "peek": [("peek", ()), ("tell", ()), ("read", (2,)), ("tell", ())],
    "write-to-reader": [("write", (b"no",))],
    "closed": [("close", ()), ("read", ()), ("readline", ()), ("write", (b"x",)), ("tell", ()), ("seek", (0,))],
}

WRITE_SCRIPTS: dict[str, list[Call]] = {
    "write": [("write", (b"abc",)), ("write", (bytearray(b"de"),)), ("tell", ()), ("write", (memoryview(b"fg"),))],
    "write-empty": [("write", (b"",)), ("tell", ())],
    "write-big": [("write", (b"z" * 300_000,)), ("tell", ())],
    "write-str": [("write", ("text",)), ("tell", ())],
    "write-array": [("write", (memoryview(b"12345678").cast("i"),)), ("tell", ())],
    "writelines": [("writelines", ([b"a\n", bytearray(b"b\n"), memoryview(b"c")],)), ("tell", ())],
    "writelines-bad": [("writelines", ([b"a\n", "b\n", b"c"],)), ("tell", ())],
    # (The stdlib's tell after an append-mode write is only right once flushed.)
    "overwrite": [("write", (b"0123456789",)), ("seek", (3,)), ("write", (b"XY",)), ("flush", ()), ("tell", ())],
    "truncate": [("write", (b"0123456789",)), ("truncate", (4,)), ("tell", ()), ("seek", (0, 2)), ("truncate", ())],
    "flush": [("write", (b"x",)), ("flush", ()), ("tell", ())],
    "read-from-writer": [("read", (1,))],
    "read-back": [("write", (b"hello\nworld",)), ("seek", (0,)), ("readline", ()), ("read", ()), ("tell", ())],
    "closed": [("close", ()), ("write", (b"x",)), ("flush", ())],
}


async def run_script(f: Any, script: list[Call]) -> list[Any]:
    results: list[Any] = []
    for name, args in script:
        try:
            if name == "__iter__":
                value: Any = [line async for line in f]
            elif name == "close":
                value = await f.aclose()
            else:
                value = await getattr(f, name)(*args)
        except Exception as exc:
            value = (type(exc), str(exc))
        if isinstance(args[:1], tuple) and args and isinstance(args[0], bytearray):
            value = (value, bytes(args[0]))
        results.append(value)
    return results


def fresh(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # Each side gets its own buffers.
    return tuple(bytearray(a) if isinstance(a, bytearray) else a for a in args)


async def side_by_side(
    tmp_path: pathlib.Path, mode: str, content: bytes, script: list[Call], buffering: int = -1, **kw: Any
) -> tuple[Any, Any]:
    outcomes = []
    for side, opener in (("trio", trio.open_file), ("uring", trio_uring.open_file)):
        path = tmp_path / side
        if content is not None:
            path.write_bytes(content)
        f = await opener(path, mode, buffering, **kw)
        if side == "uring" and "b" in mode:
            assert isinstance(f, UringFile)
        results = await run_script(f, [(name, fresh(args)) for name, args in script])
        await f.aclose()
        outcomes.append((results, path.read_bytes() if path.exists() else None))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("size", sorted(CONTENT))
@pytest.mark.parametrize("script", sorted(READ_SCRIPTS))
@pytest.mark.parametrize(("mode", "buffering"), [("rb", -1), ("rb", 0), ("rb", 16), ("r+b", -1), ("r+b", 0)])
def test_binary_reads_like_trio(tmp_path: pathlib.Path, mode: str, buffering: int, script: str, size: int) -> None:
    async def main() -> None:
        ref, ours = await side_by_side(tmp_path, mode, CONTENT[size], READ_SCRIPTS[script], buffering)
        assert ours == ref

    trio_uring.run(main)


@pytest.mark.parametrize("script", sorted(WRITE_SCRIPTS))
@pytest.mark.parametrize(
    ("mode", "buffering"), [("wb", -1), ("wb", 0), ("w+b", -1), ("ab", -1), ("ab", 0), ("a+b", -1), ("r+b", -1)]
)
def test_binary_writes_like_trio(tmp_path: pathlib.Path, mode: str, buffering: int, script: str) -> None:
    async def main() -> None:
        ref, ours = await side_by_side(tmp_path, mode, CONTENT[4096], WRITE_SCRIPTS[script], buffering)
        assert ours == ref

    trio_uring.run(main)


def test_read1_and_peek_later(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    data = CONTENT[100_000]
    path.write_bytes(data)

    async def main() -> None:
        for buffering in (-1, 16, 0):
            async with await trio_uring.open_file(path, "rb", buffering) as f:
                assert await f.read(5) == data[:5]
                if buffering:
                    size = 16 if buffering == 16 else os.stat(path).st_blksize
                    assert await f.peek() == data[5 : 5 + size]
                    assert await f.read1() == data[5 : 5 + size]
                    assert await f.read1(10**6) == data[5 + size :]
                    assert await f.read1(3) == b""
                else:
                    assert await f.read(10**6) == data[5:]
                assert await f.tell() == len(data)

    trio_uring.run(main)


def test_exclusive_create_like_trio(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        for opener in (trio.open_file, trio_uring.open_file):
            path = tmp_path / opener.__module__
            async with await opener(path, "xb") as f:
                await f.write(b"new")
            with pytest.raises(FileExistsError) as info:
                await opener(path, "xb")
            assert info.value.filename == path.as_posix() or info.value.filename == path
            assert path.read_bytes() == b"new"

    trio_uring.run(main)


TEXT = "naïve café\r\nline two\rthree\n€ four\n" * 40


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "latin-1", "utf-8-sig"])
@pytest.mark.parametrize("newline", [None, "", "\r\n", "\n"])
def test_text_modes_like_trio(tmp_path: pathlib.Path, encoding: str, newline: str | None) -> None:
    script: list[Call] = [
        ("readline", ()), ("read", (5,)), ("tell", ()), ("readlines", ()), ("seek", (0,)), ("__iter__", ()),
    ]  # fmt: skip
    wscript: list[Call] = [("write", (TEXT,)), ("tell", ()), ("writelines", (["a\n", "b\r\n"],)), ("flush", ())]

    async def main() -> None:
        try:
            content = TEXT.encode(encoding)
        except UnicodeEncodeError:
            content = TEXT.encode(encoding, "replace")
        for mode, s in (("r", script), ("w", wscript), ("a+", wscript)):
            ref, ours = await side_by_side(
                tmp_path, mode, content, s, encoding=encoding, errors="replace", newline=newline
            )
            assert ours == ref

    trio_uring.run(main)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("rb",), {"encoding": "utf-8"}),
        (("rw",), {}),
        (("r",), {"buffering": 0}),
        (("rbt",), {}),
        (("q",), {}),
        (("r",), {"encoding": "no-such-codec"}),
        (("w",), {"encoding": "no-such-codec"}),
    ],
)
def test_bad_arguments_like_trio(tmp_path: pathlib.Path, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    async def main() -> None:
        errors = []
        for opener in (trio.open_file, trio_uring.open_file):
            path = tmp_path / ("exists" if "r" in args[0] else opener.__module__)
            path.touch()
            with pytest.raises(Exception) as info:
                await opener(path, *args, **kwargs)
            errors.append((type(info.value), str(info.value).replace(opener.__module__, "")))
        assert errors[0] == errors[1]

    trio_uring.run(main)


def test_open_errors_like_trio(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        for target in (tmp_path / "missing", tmp_path, str(tmp_path / "missing" / "x"), bytes(tmp_path / "nope")):
            got = []
            for opener in (trio.open_file, trio_uring.open_file):
                with pytest.raises(OSError) as info:
                    await opener(target, "rb")
                got.append((type(info.value), info.value.errno, info.value.filename, str(info.value)))
            assert got[0] == got[1]

    trio_uring.run(main)


def test_attributes_like_trio(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")

    async def main() -> None:
        for mode, buffering in (("rb", -1), ("rb", 0), ("ab", -1), ("r+b", -1)):
            a = await trio.open_file(path, mode, buffering)
            b = await trio_uring.open_file(path, mode, buffering)
            for attr in ("name", "mode", "closed", "readable", "writable", "seekable", "isatty"):
                va, vb = getattr(a, attr), getattr(b, attr)
                if callable(va):
                    va, vb = va(), vb()
                assert va == vb, attr
            assert type(a.wrapped) is type(b.wrapped)
            assert {n for n in dir(a) if not n.startswith("_")} == {n for n in dir(b) if not n.startswith("_")}
            for name in ("read", "read1", "peek", "readall", "write", "detach", "readinto1"):
                assert hasattr(a, name) == hasattr(b, name), name
            await a.aclose()
            await b.aclose()
            assert b.closed

    trio_uring.run(main)


def test_detach(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")

    async def main() -> None:
        f = await trio_uring.open_file(path, "rb")
        assert await f.read(2) == b"01"
        raw = await f.detach()
        assert isinstance(raw, UringFile) and isinstance(raw.wrapped, io.FileIO)
        assert await raw.read(3) == b"234"
        with pytest.raises(ValueError, match="detached"):
            await f.read(1)
        fd = raw.fileno()
        await raw.aclose()
        with pytest.raises(OSError):
            os.fstat(fd)

    trio_uring.run(main)


def test_other_backend_takes_trios_path(tmp_path: pathlib.Path, stock_trio: None) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")

    async def on_epoll() -> None:
        f = await trio_uring.open_file(path, "rb")
        assert type(f) is trio._file_io.AsyncIOWrapper
        assert await f.read() == b"abc"
        await f.aclose()
        p = trio_uring.Path(path)
        assert await p.read_bytes() == b"abc"
        assert await p.read_text() == "abc"
        assert await p.write_text("de") == 2
        assert (await p.stat()).st_size == 2
        assert await p.exists()
        await trio_uring.fsync(os.open(path, os.O_RDONLY))

    trio.run(on_epoll)


def test_non_regular_files_take_trios_path(tmp_path: pathlib.Path) -> None:
    async def fifo() -> None:
        os.mkfifo(tmp_path / "fifo")
        r = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)
        try:
            f = await trio_uring.open_file(tmp_path / "fifo", "wb", buffering=0)
            assert type(f) is trio._file_io.AsyncIOWrapper
            assert await f.write(b"hi") == 2
            await f.aclose()
            assert os.read(r, 10) == b"hi"
        finally:
            os.close(r)

    trio_uring.run(fifo)


@pytest.fixture
def without(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    saved = set(_files.disabled_opcodes)

    def disable(*opcodes: Opcode) -> None:
        _files.disabled_opcodes.update(opcodes)

    yield disable
    _files.disabled_opcodes.clear()
    _files.disabled_opcodes.update(saved)


def test_missing_ops_fall_back_to_threads(tmp_path: pathlib.Path, without: Callable[..., None]) -> None:
    without(Opcode.OPENAT, Opcode.CLOSE, Opcode.STATX, Opcode.UNLINKAT, Opcode.RENAMEAT, Opcode.MKDIRAT, Opcode.FSYNC)
    p = trio_uring.Path(tmp_path / "f")

    async def main() -> None:
        before = dict(trio.lowlevel.current_statistics().io_statistics.ops_submitted)
        await p.write_bytes(b"abc")
        f = await trio_uring.open_file(p, "rb")
        assert type(f) is trio._file_io.AsyncIOWrapper
        await trio_uring.fsync(f)
        await f.aclose()
        assert (await p.stat()).st_size == 3
        await p.parent.joinpath("d").mkdir()
        q = await p.rename(tmp_path / "g")
        await q.unlink()
        assert not await q.exists()
        after = trio.lowlevel.current_statistics().io_statistics.ops_submitted
        for name in ("OPENAT", "CLOSE", "STATX", "UNLINKAT", "RENAMEAT", "MKDIRAT", "FSYNC"):
            assert after.get(name, 0) == before.get(name, 0), name

    trio_uring.run(main)


def test_close_without_close_op(tmp_path: pathlib.Path, without: Callable[..., None]) -> None:
    without(Opcode.CLOSE)
    path = tmp_path / "f"
    path.write_bytes(b"abc")

    async def main() -> None:
        f = await trio_uring.open_file(path, "rb")
        assert isinstance(f, UringFile)
        fd = f.fileno()
        await f.aclose()
        with pytest.raises(OSError):
            os.fstat(fd)
        assert "CLOSE" not in trio.lowlevel.current_statistics().io_statistics.ops_submitted

    trio_uring.run(main)


# ---------------------------------------------------------------- the ring is used


def test_binary_calls_are_ring_ops(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"

    async def main() -> None:
        stats = trio.lowlevel.current_statistics
        threads_before = trio.to_thread.current_default_thread_limiter().statistics().borrowed_tokens
        before = dict(stats().io_statistics.ops_submitted)
        async with await trio_uring.open_file(path, "w+b") as f:
            await f.write(b"abc\ndef")
            await f.seek(0)
            assert await f.readline() == b"abc\n"
            assert await f.read() == b"def"
            await trio_uring.fsync(f, datasync=True)
        after = stats().io_statistics.ops_submitted
        for name in ("OPENAT", "WRITE", "READ", "FSYNC", "CLOSE"):
            assert after.get(name, 0) > before.get(name, 0), name
        assert trio.to_thread.current_default_thread_limiter().statistics().borrowed_tokens == threads_before

    trio_uring.run(main)


def test_every_call_is_a_checkpoint(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc\n" * 10)

    async def main() -> None:
        f = await trio_uring.open_file(path, "r+b")
        calls: list[Callable[[], Any]] = [
            lambda: f.read(1), lambda: f.read(), lambda: f.readline(), lambda: f.seek(0), lambda: f.tell(),
            lambda: f.write(b"x"), lambda: f.read1(2), lambda: f.readinto(bytearray(2)), lambda: f.flush(),
            lambda: f.readlines(), lambda: f.read("bad"), lambda: f.peek(),
        ]  # fmt: skip
        for call in calls:
            with trio.testing.assert_checkpoints():
                try:
                    await call()
                except TypeError:
                    pass
            with trio.CancelScope() as scope:
                scope.cancel()
                pos = await f.tell() if False else os.lseek(f.fileno(), 0, os.SEEK_CUR)
                with pytest.raises(trio.Cancelled):
                    await call()
                assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == pos
        with trio.testing.assert_checkpoints():
            await f.aclose()
        with trio.testing.assert_checkpoints():
            await f.aclose()  # again: nothing to do, still a checkpoint

    trio_uring.run(main)


# ---------------------------------------------------------------- concurrency, close


def test_concurrent_calls_are_serialized(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(64 * 1000)
    path.write_bytes(data)

    async def main() -> None:
        got: list[bytes] = []
        async with await trio_uring.open_file(path, "rb") as f:

            async def reader() -> None:
                while chunk := await f.read(1000):
                    got.append(chunk)

            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(reader)
        assert sorted(got) == sorted(data[i : i + 1000] for i in range(0, len(data), 1000))

    trio_uring.run(main)


def _new_file_at(number: int, tmp_path: pathlib.Path) -> int:
    """Give ``number`` to a new file (what an open in the same tick would do)."""
    other = tmp_path / "other"
    other.write_bytes(b"OTHER FILE")
    fd = os.open(other, os.O_RDWR)
    if fd != number:  # (the lowest free number may be that one already)
        os.dup2(fd, number)
        os.close(fd)
    return number


def _assert_untouched(number: int, tmp_path: pathlib.Path) -> None:
    assert os.lseek(number, 0, os.SEEK_CUR) == 0
    assert (tmp_path / "other").read_bytes() == b"OTHER FILE"
    os.close(number)


@contextmanager
def after_first(driver: Driver, op_class: type, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` right after the first ``op_class`` SQE is written."""
    real_start = driver.start

    def start(op: Any, st: Any) -> None:
        real_start(op, st)
        if type(op) is op_class:
            driver.start = real_start  # type: ignore[method-assign]
            action()

    driver.start = start  # type: ignore[method-assign]
    try:
        yield
    finally:
        driver.start = real_start  # type: ignore[method-assign]


LONG_LINE = b"y" * 100_000 + b"\n" + b"next"


def test_aclose_waits_for_the_call_in_progress(tmp_path: pathlib.Path) -> None:
    """Another task closes the file while a call is between two of its READs (a long
    line: 8 KiB each), and a new file takes the number at once: the call completes
    with the old file's bytes (as closing a buffered file waits for the read in a
    thread), the new file sees nothing, later calls raise the stdlib's ValueError."""
    path = tmp_path / "f"
    path.write_bytes(LONG_LINE)

    async def main() -> None:
        f = await trio_uring.open_file(path, "rb")
        assert isinstance(f, UringFile)
        f._nowait = False  # every READ waits for its CQE
        number = f.fileno()
        closed = trio.Event()

        async def closer() -> None:
            await f.aclose()
            _new_file_at(number, tmp_path)
            closed.set()
            with pytest.raises(ValueError, match="closed file"):
                await f.read(1)

        async with trio.open_nursery() as nursery:
            with after_first(f._driver, FileRead, lambda: nursery.start_soon(closer)):
                assert await f.readline() == LONG_LINE[:100_001]
            await closed.wait()
        _assert_untouched(number, tmp_path)

    trio_uring.run(main)


def test_calls_queued_behind_a_close_raise_valueerror(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(LONG_LINE)

    async def main() -> None:
        f = await trio_uring.open_file(path, "r+b")
        f._nowait = False
        number = f.fileno()
        outcomes: list[object] = []

        async def call(fn: Callable[[], Any]) -> None:
            try:
                outcomes.append(await fn())
            except ValueError as exc:
                outcomes.append(str(exc))

        async def queue_behind_aclose() -> None:
            while not f._lock.lot:  # until aclose waits for the readline
                await trio.lowlevel.checkpoint()
            for fn in (lambda: f.write(b"late"), lambda: f.read(5), lambda: f.readline(), lambda: f.seek(0)):
                nursery.start_soon(call, fn)

        def start_the_rest() -> None:
            nursery.start_soon(f.aclose)
            nursery.start_soon(queue_behind_aclose)

        async with trio.open_nursery() as nursery:
            with after_first(f._driver, FileRead, start_the_rest):
                assert await f.readline() == LONG_LINE[:100_001]
            await trio.testing.wait_all_tasks_blocked()
            _new_file_at(number, tmp_path)
        stdlib = open(path, "r+b")  # noqa: SIM115
        stdlib.close()
        expected = []
        for fn in (lambda: stdlib.write(b"late"), lambda: stdlib.read(5), stdlib.readline, lambda: stdlib.seek(0)):
            with pytest.raises(ValueError) as info:
                fn()
            expected.append(str(info.value))
        assert sorted(map(str, outcomes)) == sorted(expected)
        assert path.read_bytes() == LONG_LINE
        _assert_untouched(number, tmp_path)

    trio_uring.run(main)


def test_retired_fd_reaches_nothing(tmp_path: pathlib.Path) -> None:
    """If the fd is retired behind the file's back (notify_closing) and its number
    reused, no call of the file touches the new file: ClosedResourceError."""
    path = tmp_path / "f"
    path.write_bytes(b"abc\ndef\n" * 1000)

    async def main() -> None:
        f = await trio_uring.open_file(path, "r+b")
        number = f.fileno()
        trio.lowlevel.notify_closing(number)
        os.close(number)
        _new_file_at(number, tmp_path)
        calls: list[Callable[[], Any]] = [
            lambda: f.read(3), lambda: f.read(), lambda: f.readline(), lambda: f.write(b"zz"),
            lambda: f.seek(3), lambda: f.tell(), lambda: f.peek(), lambda: f.readlines(), lambda: f.truncate(0),
        ]  # fmt: skip
        for fn in calls:
            with pytest.raises(trio.ClosedResourceError):
                await fn()
        f._closed = True
        _assert_untouched(number, tmp_path)

    trio_uring.run(main)


def test_unread_after_the_fd_is_retired_mid_call(tmp_path: pathlib.Path) -> None:
    """A read of several ops whose fd is retired between two of them: ClosedResourceError,
    and the position is not put back on a number that may be another file's now."""
    path = tmp_path / "f"
    path.write_bytes(b"y" * 200_000)

    async def main() -> None:
        f = await trio_uring.open_file(path, "rb")
        assert isinstance(f, UringFile)
        f._nowait = False
        number = f.fileno()
        driver: Driver = f._driver
        real_start = driver.start
        starts = 0

        def start(op: Any, st: Any) -> None:
            nonlocal starts
            starts += 1
            if starts == 2:
                trio.lowlevel.notify_closing(number)
                os.close(number)
                _new_file_at(number, tmp_path)
            real_start(op, st)

        driver.start = start  # type: ignore[method-assign]
        try:
            # A line longer than one READ (8 KiB each): the second READ is refused.
            with pytest.raises(trio.ClosedResourceError):
                await f.readline()
        finally:
            driver.start = real_start  # type: ignore[method-assign]
        f._closed = True
        _assert_untouched(number, tmp_path)

    trio_uring.run(main)


# ---------------------------------------------------------------- cancellation


@contextmanager
def cancel_when_submitted(driver: Driver, scope: trio.CancelScope, op_class: type) -> Iterator[None]:
    """Cancel ``scope`` right after the first ``op_class`` SQE is written: the task
    is then cancelled with its op in flight (its abort writes the ASYNC_CANCEL)."""
    real_start = driver.start

    def start(op: Any, st: Any) -> None:
        real_start(op, st)
        if type(op) is op_class:
            driver.start = real_start  # type: ignore[method-assign]
            scope.cancel()

    driver.start = start  # type: ignore[method-assign]
    try:
        yield
    finally:
        driver.start = real_start  # type: ignore[method-assign]


def drop_from_page_cache(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("trial", range(10))
def test_cancelled_read_ends_by_its_cqe(tmp_path: pathlib.Path, trial: int, cached: bool) -> None:
    """A READ cancelled while in flight: either it completed (its bytes are returned
    and the position moved by that many; Cancelled at the next checkpoint) or it was
    cancelled (Cancelled, position unchanged). Never bytes consumed and lost; the
    task resumes only at the op's CQE (nothing left in flight). Uncached, the READ
    waits in io-wq and the cancel can win."""
    path = tmp_path / "f"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    if not cached:
        drop_from_page_cache(path)
    start = trial * 1000

    async def main() -> None:
        f = await trio_uring.open_file(path, "rb")
        f._nowait = False  # the READ goes through the waiting path (inline if cached)
        await f.seek(start)
        stats = trio.lowlevel.current_statistics
        before = stats().io_statistics.ops_submitted.get("ASYNC_CANCEL", 0)
        in_flight = stats().io_statistics.ops_in_flight  # (Trio's own wake-up poll)
        got: list[bytes] = []
        with trio.CancelScope() as scope, cancel_when_submitted(f._driver, scope, FileRead):
            got.append(await f.read(1 << 19))
            await trio.lowlevel.checkpoint()
            raise AssertionError("a cancelled task got past a checkpoint")
        assert stats().io_statistics.ops_submitted.get("ASYNC_CANCEL", 0) > before
        assert stats().io_statistics.ops_in_flight == in_flight
        pos = await f.tell()
        if got:
            assert got[0] == data[start : start + len(got[0])]
            assert pos == start + len(got[0])
        else:
            assert pos == start
        assert await f.read(10) == data[pos : pos + 10]
        await f.aclose()

    trio_uring.run(main)


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("trial", range(10))
def test_cancelled_write_is_whole_or_nothing(tmp_path: pathlib.Path, trial: int, cached: bool) -> None:
    """A WRITE cancelled while in flight: written whole (write returns its length,
    Cancelled at the next checkpoint) or not at all (Cancelled, position unchanged).
    A write the task never heard of did not happen."""
    path = tmp_path / "f"
    chunk = os.urandom(300_000)

    async def main() -> None:
        f = await trio_uring.open_file(path, "wb")
        f._nowait = False
        await f.write(b"head")
        in_flight = trio.lowlevel.current_statistics().io_statistics.ops_in_flight
        result: list[int] = []
        with trio.CancelScope() as scope, cancel_when_submitted(f._driver, scope, FileWrite):
            result.append(await f.write(chunk))
            await trio.lowlevel.checkpoint()
            raise AssertionError("a cancelled task got past a checkpoint")
        assert trio.lowlevel.current_statistics().io_statistics.ops_in_flight == in_flight
        pos = await f.tell()
        await f.aclose()
        content = path.read_bytes()
        if result:
            assert result == [len(chunk)]
            assert content == b"head" + chunk
        else:
            assert content == b"head"
        assert pos == len(content)

    trio_uring.run(main)


def test_cancel_after_part_of_a_read_puts_the_position_back(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(200_000).replace(b"\n", b" ")
    path.write_bytes(data)

    async def main() -> None:
        f = await trio_uring.open_file(path, "rb")
        driver: Driver = f._driver
        real_start = driver.start
        starts = 0

        def start(op: Any, st: Any) -> None:
            nonlocal starts
            starts += 1
            if starts == 2:
                raise KeyboardInterrupt  # stands for any error of the second op
            real_start(op, st)

        f._nowait = False
        driver.start = start  # type: ignore[method-assign]
        try:
            with pytest.raises(KeyboardInterrupt):
                await f.readline()  # no newline: READs of 8 KiB until the end
        finally:
            driver.start = real_start  # type: ignore[method-assign]
        assert await f.tell() == 0
        assert await f.read(5) == data[:5]
        await f.aclose()

    trio_uring.run(main)


# ---------------------------------------------------------------- Path


async def path_script(base: Any) -> list[Any]:
    """What a series of Path calls on ``base`` (a trio.Path or trio_uring.Path) gives."""
    out: list[Any] = []

    async def attempt(fn: Callable[[], Any]) -> None:
        try:
            value = await fn()
        except Exception as exc:
            value = (type(exc), exc.errno if isinstance(exc, OSError) else None)
        if isinstance(value, (trio.Path, pathlib.PurePath)):
            value = value.name
        if isinstance(value, os.stat_result):
            value = (value.st_mode, value.st_size, value.st_nlink)
        if isinstance(value, trio._file_io.AsyncIOWrapper):
            await value.aclose()
            value = "a file"
        out.append(value)

    f = base / "f.txt"
    await attempt(lambda: base.mkdir())
    await attempt(lambda: base.mkdir())
    await attempt(lambda: base.mkdir(exist_ok=True))
    await attempt(lambda: (base / "a" / "b").mkdir())
    await attempt(lambda: (base / "a" / "b").mkdir(parents=True))
    await attempt(lambda: f.write_text("héllo\nwörld\r\n", encoding="utf-16"))
    await attempt(lambda: f.read_text(encoding="utf-16"))
    await attempt(lambda: f.read_text("latin-1", "replace"))
    await attempt(lambda: f.read_bytes())
    await attempt(lambda: f.write_text("a\nb\n", newline="\r\n"))
    await attempt(lambda: f.read_bytes())
    await attempt(lambda: f.read_text())
    await attempt(lambda: f.write_text("€", encoding="ascii"))
    await attempt(lambda: f.read_bytes())
    await attempt(lambda: f.write_text(b"bytes"))
    await attempt(lambda: f.write_bytes(b"\x00\x01"))
    await attempt(lambda: f.write_bytes(memoryview(b"1234").cast("i")))
    await attempt(lambda: f.read_bytes())
    await attempt(lambda: f.stat())
    await attempt(lambda: f.exists())
    await attempt(lambda: f.is_file())
    await attempt(lambda: f.is_dir())
    await attempt(lambda: base.is_dir())
    await attempt(lambda: (base / "nope").exists())
    await attempt(lambda: (base / "nope").stat())
    await attempt(lambda: (f / "under-a-file").exists())
    await attempt(lambda: f.rename(base / "g.txt"))
    await attempt(lambda: f.exists())
    await attempt(lambda: (base / "g.txt").replace(base / "h.txt"))
    await attempt(lambda: (base / "nope").rename(base / "x"))
    await attempt(lambda: (base / "h.txt").unlink())
    await attempt(lambda: (base / "h.txt").unlink())
    await attempt(lambda: (base / "h.txt").unlink(missing_ok=True))
    await attempt(lambda: (base / "a").rmdir())
    await attempt(lambda: (base / "a" / "b").rmdir())
    await attempt(lambda: (base / "a").rmdir())
    await attempt(lambda: (base / "a").exists())
    await attempt(lambda: base.open("rb"))
    return out


def test_path_like_trio(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        ref = await path_script(trio.Path(tmp_path / "trio"))
        ours = await path_script(trio_uring.Path(tmp_path / "uring"))
        assert ours == ref

    trio_uring.run(main)


def test_path_stat_matches_os_stat(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"12345")
    link = tmp_path / "link"
    link.symlink_to(target)

    async def main() -> None:
        for path, follow in ((target, True), (link, True), (link, False), (tmp_path, True)):
            ours = await trio_uring.Path(path).stat(follow_symlinks=follow)
            ref = os.stat(path, follow_symlinks=follow)
            for name in dir(ref):
                if name.startswith("st_") and name != "st_atime" and name != "st_atime_ns":
                    assert getattr(ours, name) == getattr(ref, name), name
            assert ours == ref or ours[:7] == ref[:7]

    trio_uring.run(main)


def test_path_errors_name_the_path(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        for cls in (trio.Path, trio_uring.Path):
            missing = cls(tmp_path / "missing")
            for call in (missing.stat, missing.unlink, missing.rmdir, lambda m=missing: m.rename(tmp_path / "z")):
                with pytest.raises(FileNotFoundError) as info:
                    await call()
                assert str(info.value).endswith(repr(str(missing))) or str(tmp_path) in str(info.value)
                assert info.value.errno == errno.ENOENT

    trio_uring.run(main)


def test_path_uses_the_ring(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        p = trio_uring.Path(tmp_path / "f")
        before = dict(trio.lowlevel.current_statistics().io_statistics.ops_submitted)
        await p.write_text("x")
        assert await p.read_text() == "x"
        assert await p.exists()
        await (p.parent / "d").mkdir()
        await p.rename(tmp_path / "g")
        await trio_uring.Path(tmp_path / "g").unlink()
        after = trio.lowlevel.current_statistics().io_statistics.ops_submitted
        for name in ("OPENAT", "WRITE", "READ", "CLOSE", "STATX", "MKDIRAT", "RENAMEAT", "UNLINKAT"):
            assert after.get(name, 0) > before.get(name, 0), name

    trio_uring.run(main)


# ---------------------------------------------------------------- unchanged code (opt-in)


@pytest.fixture
def ring_files() -> Iterator[None]:
    trio_uring.use_ring_files(True)
    try:
        yield
    finally:
        trio_uring.use_ring_files(False)


def test_unchanged_trio_code_takes_the_ring_when_asked(tmp_path: pathlib.Path, ring_files: None) -> None:
    path = tmp_path / "f"

    async def main() -> None:
        before = dict(trio.lowlevel.current_statistics().io_statistics.ops_submitted)
        p = trio.Path(path)
        assert type(p) is trio.PosixPath
        await p.write_bytes(b"abc\n")
        assert await p.read_text() == "abc\n"
        assert (await p.stat()).st_size == 4
        async with await trio.open_file(path, "r+b") as f:
            assert isinstance(f, UringFile)
            assert await f.readline() == b"abc\n"
        async with await p.open("rb") as f:
            assert isinstance(f, UringFile)
        q = await p.rename(tmp_path / "g")
        assert type(q) is trio.PosixPath
        await q.unlink()
        assert not await q.exists()
        after = trio.lowlevel.current_statistics().io_statistics.ops_submitted
        for name in ("OPENAT", "WRITE", "READ", "CLOSE", "STATX", "RENAMEAT", "UNLINKAT"):
            assert after.get(name, 0) > before.get(name, 0), name
        assert trio.to_thread.current_default_thread_limiter().statistics().borrowed_tokens == 0

    trio_uring.run(main)


def test_unchanged_trio_code_elsewhere_and_switched_off(
    tmp_path: pathlib.Path, ring_files: None, stock_trio: None
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")

    async def on_epoll() -> None:
        f = await trio.open_file(path, "rb")
        assert type(f) is trio._file_io.AsyncIOWrapper
        await f.aclose()
        assert await trio.Path(path).read_bytes() == b"abc"
        assert await trio.Path(path).exists()

    trio.run(on_epoll)
    trio_uring.use_ring_files(False)
    assert trio.open_file is _files.trio_open_file

    async def off() -> None:
        f = await trio.open_file(path, "rb")
        assert type(f) is trio._file_io.AsyncIOWrapper
        await f.aclose()
        before = dict(trio.lowlevel.current_statistics().io_statistics.ops_submitted)
        assert await trio.Path(path).read_bytes() == b"abc"
        assert trio.lowlevel.current_statistics().io_statistics.ops_submitted.get("OPENAT", 0) == before.get(
            "OPENAT", 0
        )

    trio_uring.run(off)
