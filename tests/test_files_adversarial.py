"""Files through the ring, used the way a careless or hostile caller would: huge
sizes, FIFOs, buffers the stdlib refuses. Each result is compared with Trio's
(the stdlib's object in a worker thread)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
import trio

import trio_uring
from trio_uring._files import UringFile

ROOT = str(pathlib.Path(trio_uring.__file__).parent.parent)


@pytest.mark.timeout(60)
def test_a_huge_read_size_commits_no_memory(tmp_path: pathlib.Path) -> None:
    # The stdlib allocates read(n)'s buffer without touching it: a large n on a
    # short file costs address space, not RAM. Zeroing it first committed all n
    # bytes (read(2**31) of 5 bytes: 2 GiB of RAM; 2**34: the OOM killer).
    path = tmp_path / "short"
    path.write_bytes(b"hello")
    script = textwrap.dedent(f"""
        import resource, trio_uring

        async def main():
            for buffering in (-1, 0):
                async with await trio_uring.open_file({str(path)!r}, "rb", buffering) as f:
                    assert isinstance(f, trio_uring._files.UringFile)
                    assert await f.read(2**31) == b"hello"
                    if buffering:
                        await f.seek(0)
                        assert await f.read1(2**31) == b"hello"
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)

        trio_uring.run(main)
    """)
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < 512, f"peak RSS {out.stdout.strip()} MiB"


def _unblock_fifo(fifo: pathlib.Path, fired: list[bool] | None = None) -> None:
    # An O_RDWR open never waits, and is both a reader and a writer: it lets any
    # open still waiting on the FIFO (a failed test's) go on.
    if fired is not None:
        fired.append(True)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    time.sleep(0.05)
    os.close(fd)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("call", ["rb", "r", "read_bytes", "read_text"])
def test_a_fifo_opened_for_reading_waits_for_its_writer(tmp_path: pathlib.Path, call: str) -> None:
    # open(2) of a FIFO for reading waits for a writer; the ring's OPENAT first
    # tries O_NONBLOCK, which opens at once with none: reads then saw the end of
    # the file at once instead of the writer's data.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def writer() -> None:
        time.sleep(0.2)
        with open(fifo, "wb") as w:  # waits for the reader
            w.write(b"data\n")

    fired: list[bool] = []

    async def main() -> list[Any]:
        results = []
        for opener, path_cls in ((trio.open_file, trio.Path), (trio_uring.open_file, trio_uring.Path)):
            producer = threading.Thread(target=writer, daemon=True)
            producer.start()
            watchdog = threading.Timer(5, _unblock_fifo, (fifo, fired))
            watchdog.start()
            try:
                if call in ("rb", "r"):
                    async with await opener(fifo, call) as f:
                        assert not isinstance(f, UringFile)
                        results.append(await f.read())
                else:
                    results.append(await getattr(path_cls(fifo), call)())
            finally:
                watchdog.cancel()
                producer.join(5)
                if producer.is_alive():
                    _unblock_fifo(fifo)
        return results

    trio_ref, ours = trio_uring.run(main)
    assert not fired, "an open waited for a writer that had come and gone"
    assert trio_ref.strip() and ours == trio_ref


@pytest.mark.parametrize("case", ["closed", "closed-raw", "closed-readinto1", "write-only"])
def test_a_refused_readinto_leaves_the_buffer_alone(tmp_path: pathlib.Path, case: str) -> None:
    # A readinto that raises (closed file, file not readable) kept a view of the
    # caller's buffer in its frame, which the kept traceback holds: the bytearray
    # could then not be resized (BufferError), as it can after the stdlib's.
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)

    async def main() -> None:
        for opener in (trio.open_file, trio_uring.open_file):
            mode = "wb" if case == "write-only" else "rb"
            f = await opener(path, mode, 0 if case == "closed-raw" else -1)
            if case.startswith("closed"):
                await f.aclose()
            buf = bytearray(10)
            with pytest.raises((ValueError, OSError)) as info:
                await getattr(f, "readinto1" if case == "closed-readinto1" else "readinto")(buf)
            assert info.value.__traceback__ is not None  # (kept, with its frames)
            buf.extend(b"more")  # BufferError while a view of ours is alive
            view = memoryview(bytearray(10))
            with pytest.raises((ValueError, OSError)):
                await f.readinto(view)
            view.release()
            await f.aclose()

    trio_uring.run(main)


@pytest.mark.parametrize("buffering", [-1, 0])
def test_non_contiguous_writes_raise_as_the_stdlib(tmp_path: pathlib.Path, buffering: int) -> None:
    strided = memoryview(b"abcdefgh")[::2]

    async def main() -> list[Any]:
        outcomes = []
        for side, opener in (("trio", trio.open_file), ("uring", trio_uring.open_file)):
            path = tmp_path / side
            results = []
            async with await opener(path, "wb", buffering) as f:
                for call, arg in (("write", strided), ("writelines", [b"ab", strided, b"cd"]), ("write", b"!")):
                    try:
                        results.append(await getattr(f, call)(arg))
                    except Exception as exc:
                        results.append((type(exc), str(exc)))
            outcomes.append((results, path.read_bytes()))
        return outcomes

    trio_ref, ours = trio_uring.run(main)
    assert ours == trio_ref
    assert trio_ref[0][0][0] is BufferError


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mode", ["wb", "ab", "w"])
def test_an_open_waiting_for_a_fifos_reader_is_cancellable(tmp_path: pathlib.Path, mode: str) -> None:
    # Opening a FIFO for writing waits (in io-wq) for a reader. The ASYNC_CANCEL
    # interrupts it, and OPENAT then reports -ERESTARTSYS, a kernel-internal errno:
    # it reached the caller as OSError 512 ("Unknown error 512") instead of
    # Cancelled. (Trio's open cannot be cancelled there at all.)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            with trio.move_on_after(0.2) as scope:
                await trio_uring.open_file(fifo, mode)
            assert scope.cancelled_caught
        # Nothing left waiting that a reader could still complete (and leak).
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        await trio.sleep(0.1)
        os.close(reader)
        assert len(os.listdir("/proc/self/fd")) == before
        # And a plain open still works once a reader is there.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            async with await trio_uring.open_file(fifo, mode) as f:
                await f.write(b"x" if "b" in mode else "x")
            assert os.read(reader, 10) == b"x"
        finally:
            os.close(reader)

    trio_uring.run(main)


def test_path_errors_name_the_path_as_trios_do(tmp_path: pathlib.Path) -> None:
    # An OSError's filename is what the os call got: on Python 3.11 the path's
    # str, on newer ones the pathlib object. Ours always gave a PosixPath, so
    # `exc.filename == str(path)` held for Trio's and not for ours.
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "dir").mkdir()

    async def attempt(path: Any, call: str, *args: Any) -> Any:
        try:
            await getattr(path, call)(*args)
        except OSError as exc:
            return type(exc), exc.errno, exc.filename, type(exc.filename), exc.filename2, type(exc.filename2)
        return None

    async def main() -> None:
        missing, other = str(tmp_path / "missing"), tmp_path / "file" / "x"
        for call, name, args in [
            ("stat", missing, ()),
            ("stat", str(other), ()),
            ("unlink", missing, ()),
            ("rmdir", str(tmp_path / "file"), ()),
            ("mkdir", str(tmp_path / "dir"), ()),
            ("rename", missing, (str(tmp_path / "z"),)),
            ("rename", missing, (tmp_path / "z",)),
            ("rename", str(tmp_path / "file"), (other,)),
        ]:
            ours = await attempt(trio_uring.Path(name), call, *args)
            assert ours is not None
            assert ours == await attempt(trio.Path(name), call, *args), (call, name, args)

    trio_uring.run(main)
