"""trio_uring.send_file: a file's bytes to a socket by IORING_OP_SPLICE (file -> pipe -> socket).

What is checked, on the real kernel: the bytes arrive exactly (sizes around the
pipe's capacity, offsets and counts, a count past the end); the file position is
offset + bytes sent after a return *and* after a cancellation (the way to learn
how much a cancelled call sent), and bytes left in the cancelled call's pipe never
reach the stream; a slow reader with a small send buffer; the close-and-reuse
rule (a socket closed while the call is parked, and a file closed and reused
meanwhile); bad input; no fd left behind (pipes, duplicates); the fallback when
the kernel's probe lacks SPLICE, and on Trio's own backend.
"""

from __future__ import annotations

import errno
import os
import random
import socket as stdlib_socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _send_file
from trio_uring._ops import Splice
from trio_uring._ring import Opcode, Ring

from .conftest import io_stats
from .test_close_reuse import between_sqes, close_and_reuse, current_driver

pytestmark = pytest.mark.timeout(30)

PIPE = _send_file.PIPE_SIZE
SMALL = _send_file.SMALL_FILE
DEFAULT_PIPE = 65536
LOCALHOST = "127.0.0.1"


async def parked() -> None:
    """Until every task has been blocked for a while: a send_file is then waiting
    for room in the socket (a SPLICE also blocks its task, for microseconds)."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)


def make_file(tmp_path: Path, size: int, name: str = "data") -> tuple[Path, bytes]:
    data = random.Random(size).randbytes(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


async def tcp_pair(small: bool = False) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A connected pair of Trio TCP sockets (sender, receiver); ``small``: little
    room between them (set before the handshake, so that the window is small too),
    so that a send of a small file parks part-way."""
    listener = trio.socket.socket()
    with listener:
        if small:
            listener.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
        await listener.bind((LOCALHOST, 0))
        listener.listen(1)
        sender = trio.socket.socket()
        if small:
            sender.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
        await sender.connect(listener.getsockname())
        receiver, _ = await listener.accept()
    return sender, receiver


async def read_all(sock: trio.socket.SocketType, into: bytearray, chunk: int = 1 << 20, pause: float = 0) -> None:
    """Receive until EOF into ``into`` (``pause``: sleep between receives, a slow reader)."""
    while True:
        data = await sock.recv(chunk)
        if not data:
            return
        into += data
        if pause:
            await trio.sleep(pause)


async def send_and_receive(tmp_path: Path, size: int, offset: int = 0, count: int | None = None) -> None:
    path, data = make_file(tmp_path, size)
    sender, receiver = await tcp_pair()
    got = bytearray()
    with receiver:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, receiver, got)
            stream = trio.SocketStream(sender)
            with path.open("rb") as f:
                sent = await trio_uring.send_file(stream, f, offset, count)
                expected = data[offset : None if count is None else offset + count]
                assert sent == len(expected)
                assert f.tell() == offset + sent
            await stream.aclose()
    assert bytes(got) == expected


# ---------------------------------------------------------------- bytes, offsets, counts


@pytest.mark.parametrize(
    "size",
    sorted({0, 1, DEFAULT_PIPE - 1, DEFAULT_PIPE, DEFAULT_PIPE + 1, SMALL - 1, SMALL, SMALL + 1, PIPE - 1, PIPE,
            PIPE + 1, 3 * PIPE + 12345}),
)
async def test_the_file_arrives_byte_for_byte(tmp_path: Path, size: int) -> None:
    await send_and_receive(tmp_path, size)
    # Small files from the page cache (a file just written is there), the rest by SPLICE.
    assert ("SPLICE" in io_stats().ops_submitted) == (size > SMALL)


@pytest.mark.parametrize(
    ("offset", "count"),
    [
        (7, None),
        (7, 1000),
        (PIPE - 3, PIPE + 10),  # the second file -> pipe SPLICE starts mid-file
        (0, 1),
        (2 * PIPE, None),  # the end exactly: nothing to send
        (2 * PIPE + 100, None),  # past the end
        (0, 3 * PIPE),  # a count past the end: what there is
        (PIPE + 1, 5 * PIPE),
    ],
)
async def test_offset_and_count(tmp_path: Path, offset: int, count: int | None) -> None:
    await send_and_receive(tmp_path, 2 * PIPE, offset, count)


@pytest.mark.parametrize("kind", ["fd", "buffered", "raw", "trio_file", "uring_file"])
async def test_any_binary_file_and_its_position(tmp_path: Path, kind: str) -> None:
    # The position rule (socket.sendfile's): offset + bytes sent, whatever the
    # kind of file; a buffered file's read buffer is dropped, so reading goes on
    # from there.
    path, data = make_file(tmp_path, 300_000)
    sender, receiver = await tcp_pair()
    got = bytearray()
    with receiver:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, receiver, got)
            if kind in ("trio_file", "uring_file"):
                opener = trio.open_file if kind == "trio_file" else trio_uring.open_file
                async with await opener(path, "rb") as af:
                    await af.read(10)  # fills its buffer
                    assert await trio_uring.send_file(sender, af, 100, 1000) == 1000
                    assert await af.tell() == 1100
                    assert await af.read(5) == data[1100:1105]
            elif kind == "fd":
                fd = os.open(path, os.O_RDONLY)
                try:
                    assert await trio_uring.send_file(sender, fd, 100, 1000) == 1000
                    assert os.lseek(fd, 0, os.SEEK_CUR) == 1100
                finally:
                    os.close(fd)
            else:
                with path.open("rb", buffering=0 if kind == "raw" else -1) as f:
                    f.read(10)
                    assert await trio_uring.send_file(sender, f, 100, 1000) == 1000
                    assert f.tell() == 1100
                    assert f.read(5) == data[1100:1105]
            sender.close()
    assert bytes(got) == data[100:1100]


async def test_a_raw_trio_socket(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, PIPE + 5)
    sender, receiver = await tcp_pair()
    got = bytearray()
    with receiver:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, receiver, got)
            with path.open("rb") as f:
                assert await trio_uring.send_file(sender, f) == len(data)
            sender.close()
    assert bytes(got) == data


async def test_slow_reader_and_small_send_buffer(tmp_path: Path) -> None:
    # The socket is full most of the time: SPLICEs move part of the pipe, or say
    # EAGAIN, and the call waits for POLLOUT. Every byte must still arrive once,
    # in order, and the count be exact.
    path, data = make_file(tmp_path, 600_000)
    sender, receiver = await tcp_pair()
    sender.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    receiver.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    polls = io_stats().ops_submitted.get("POLL_ADD", 0)
    got = bytearray()
    with receiver:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, receiver, got, 8192, 0.0005)
            stream = trio.SocketStream(sender)
            with path.open("rb") as f:
                assert await trio_uring.send_file(stream, f) == len(data)
                assert f.tell() == len(data)
            await stream.aclose()
    assert bytes(got) == data
    assert io_stats().ops_submitted.get("POLL_ADD", 0) > polls  # it did wait for room


async def test_a_small_file_is_a_checkpoint_even_when_nothing_waits(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 1000)
    sender, receiver = await tcp_pair()
    with sender, receiver, path.open("rb") as f:
        with trio.testing.assert_checkpoints():
            assert await trio_uring.send_file(sender, f) == len(data)
        assert await receiver.recv(2000) == data


async def test_a_small_file_not_in_the_page_cache_goes_by_splice(tmp_path: Path) -> None:
    # The inline READ (RWF_NOWAIT) says EAGAIN for what the page cache lacks; the
    # call goes on by SPLICE, whose io-wq thread may wait for the disk.
    path, data = make_file(tmp_path, SMALL - 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
        sender, receiver = await tcp_pair()
        got = bytearray()
        with receiver:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all, receiver, got)
                assert await trio_uring.send_file(sender, fd, 10) == len(data) - 10
                sender.close()
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(data)
    finally:
        os.close(fd)
    assert bytes(got) == data[10:]
    assert "SPLICE" in io_stats().ops_submitted


# ---------------------------------------------------------------- cancellation


@pytest.mark.parametrize("size", [SMALL, 8 << 20])
async def test_cancelled_while_parked_reports_what_was_sent_and_leaves_nothing_behind(
    tmp_path: Path, size: int
) -> None:
    # The peer does not read: the call parks with bytes in its pipe (or its
    # buffer, for a small file). Cancelled, the file position says what went
    # out; then a second send_file's bytes follow exactly those: nothing of the
    # first pipe reaches the stream.
    path, data = make_file(tmp_path, size)
    path2, data2 = make_file(tmp_path, 100_000, "second")
    sender, receiver = await tcp_pair(small=True)
    stream = trio.SocketStream(sender)
    got = bytearray()
    with receiver, path.open("rb") as f:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_when_parked() -> None:
                    await parked()
                    scope.cancel()

                nursery.start_soon(cancel_when_parked)
                await trio_uring.send_file(stream, f, 1000)
        assert scope.cancelled_caught
        sent = f.tell() - 1000
        assert 0 < sent < len(data) - 1000
        with path2.open("rb") as f2:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all, receiver, got)
                assert await trio_uring.send_file(stream, f2) == len(data2)
                await stream.aclose()
    assert bytes(got) == data[1000 : 1000 + sent] + data2


@pytest.mark.parametrize("seed", range(12))
async def test_cancelled_at_any_moment_the_position_is_exact(tmp_path: Path, seed: int) -> None:
    # A reader that keeps up, a cancel after a random number of scheduler ticks:
    # whether the cancel lands during a SPLICE, between two, or after the last,
    # what arrived is exactly the file from offset to the position.
    path, data = make_file(tmp_path, 4 * PIPE + 99)
    rng = random.Random(seed)
    sender, receiver = await tcp_pair()
    stream = trio.SocketStream(sender)
    got = bytearray()
    with receiver, path.open("rb") as f:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, receiver, got)
            with trio.CancelScope() as scope:

                async def cancel_later() -> None:
                    for _ in range(rng.randrange(1, 40)):
                        await trio.lowlevel.checkpoint()
                    scope.cancel()

                nursery.start_soon(cancel_later)
                await trio_uring.send_file(stream, f, 50)
                sent_all = True
            position = f.tell()
            await stream.aclose()
    assert bytes(got) == data[50:position]
    if not scope.cancelled_caught:
        assert sent_all and position == len(data)


# ---------------------------------------------------------------- one sender, closing


async def test_a_second_sender_is_busy(tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, 8 << 20)
    sender, receiver = await tcp_pair()
    stream = trio.SocketStream(sender)
    with receiver, sender, path.open("rb") as f:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio_uring.send_file, stream, f)
            await parked()
            with pytest.raises(trio.BusyResourceError):
                await trio_uring.send_file(stream, f)
            with pytest.raises(trio.BusyResourceError):
                await stream.send_all(b"x")
            with pytest.raises(trio.BusyResourceError):  # (no op: only the stream's own rule says busy)
                await stream.send_all(b"")
            nursery.cancel_scope.cancel()


async def test_closed_and_after_send_eof(tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, 10)
    sender, receiver = await tcp_pair()
    stream = trio.SocketStream(sender)
    with receiver, path.open("rb") as f:
        await stream.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await trio_uring.send_file(stream, f)
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await trio_uring.send_file(stream, f)
        with pytest.raises(OSError) as info:
            await trio_uring.send_file(sender, f)  # a raw socket says what its send says
        assert info.value.errno == errno.EBADF


async def test_peer_gone_is_broken(tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, 8 << 20)
    sender, receiver = await tcp_pair()
    receiver.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    stream = trio.SocketStream(sender)
    with path.open("rb") as f:
        async with trio.open_nursery() as nursery:

            async def reset_when_parked() -> None:
                await parked()
                receiver.close()  # RST

            nursery.start_soon(reset_when_parked)
            with pytest.raises(trio.BrokenResourceError):
                await trio_uring.send_file(stream, f)
        assert 0 < f.tell() < 8 << 20
    await stream.aclose()


@pytest.mark.parametrize("size", [SMALL, 8 << 20])
async def test_socket_closed_while_parked_then_reused_gets_nothing(tmp_path: Path, size: int) -> None:
    path, _ = make_file(tmp_path, size)
    sender, receiver = await tcp_pair(small=True)
    stream = trio.SocketStream(sender)
    reuse = None
    try:
        with path.open("rb") as f:
            async with trio.open_nursery() as nursery:

                async def send() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await trio_uring.send_file(stream, f)

                nursery.start_soon(send)
                await parked()
                reuse = close_and_reuse(sender)
            receiver.close()  # frees the old connection: a misdirected SPLICE could go out now
            await trio.sleep(0.05)
            reuse.assert_untouched()
    finally:
        receiver.close()
        if reuse is not None:
            reuse.close()


async def test_socket_closed_between_the_two_splices_gets_nothing(tmp_path: Path) -> None:
    # The close lands after the file -> pipe SPLICE, right before the pipe ->
    # socket one would be written: it is refused, the new socket untouched.
    path, _ = make_file(tmp_path, 3 * PIPE)
    sender, receiver = await tcp_pair()
    stream = trio.SocketStream(sender)
    reuses = []
    try:
        with (
            path.open("rb") as f,
            between_sqes(
                current_driver(),
                lambda op: isinstance(op, Splice) and op.off_in == -1,
                lambda: reuses.append(close_and_reuse(sender)),
            ),
        ):
            with pytest.raises(trio.ClosedResourceError):
                await trio_uring.send_file(stream, f)
            assert f.tell() == 0
        assert reuses
        await trio.sleep(0.05)
        reuses[0].assert_untouched()
    finally:
        receiver.close()
        for reuse in reuses:
            reuse.close()


async def test_file_closed_and_reused_meanwhile_still_sends_the_first_file(tmp_path: Path) -> None:
    # The caller's file closed while the call is parked, its number given to
    # another file: the rest still comes from the file the call was given.
    path, data = make_file(tmp_path, 5 * PIPE)
    other, _ = make_file(tmp_path, 5 * PIPE, "other")
    sender, receiver = await tcp_pair()
    stream = trio.SocketStream(sender)
    got = bytearray()
    fd = os.open(path, os.O_RDONLY)
    with receiver:
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                assert await trio_uring.send_file(stream, fd) == len(data)
                await stream.aclose()

            nursery.start_soon(send)
            await parked()  # the peer is not reading yet: parked
            other_fd = os.open(other, os.O_RDONLY)
            os.dup2(other_fd, fd)  # closes the caller's file; the number is the other's now
            os.close(other_fd)
            nursery.start_soon(read_all, receiver, got)
    os.close(fd)
    assert bytes(got) == data


# ---------------------------------------------------------------- bad input


async def test_bad_input(tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, 100)
    sender, receiver = await tcp_pair()
    stream = trio.SocketStream(sender)
    with receiver, sender:
        f = path.open("rb")
        f.close()
        with pytest.raises(ValueError, match="closed file"):
            await trio_uring.send_file(stream, f)
        fd = os.open(path, os.O_RDONLY)
        os.close(fd)
        with pytest.raises(OSError) as info:
            await trio_uring.send_file(stream, fd)
        assert info.value.errno == errno.EBADF
        r, w = os.pipe()
        try:
            with pytest.raises(ValueError, match=r"regular file; fd \d+ is a pipe"):
                await trio_uring.send_file(stream, r)
        finally:
            os.close(r)
            os.close(w)
        dfd = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(ValueError, match="is a directory"):
                await trio_uring.send_file(stream, dfd)
        finally:
            os.close(dfd)
        with path.open("r") as text, pytest.raises(ValueError, match="binary mode"):
            await trio_uring.send_file(stream, text)
        with path.open("ab") as wo, pytest.raises(ValueError, match="open for reading"):
            await trio_uring.send_file(stream, wo)
        with path.open("rb") as f:
            with pytest.raises(ValueError, match="offset must be a non-negative integer"):
                await trio_uring.send_file(stream, f, -1)
            with pytest.raises(TypeError, match="offset"):
                await trio_uring.send_file(stream, f, 1.5)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="count must be a positive integer"):
                await trio_uring.send_file(stream, f, 0, 0)
            with pytest.raises(TypeError, match="count"):
                await trio_uring.send_file(stream, f, 0, "10")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="SocketStream"):
                await trio_uring.send_file(object(), f)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="file object or an fd"):
                await trio_uring.send_file(stream, object())
            udp = trio.socket.socket(type=stdlib_socket.SOCK_DGRAM)
            with udp, pytest.raises(ValueError, match="SOCK_STREAM"):
                await trio_uring.send_file(udp, f)
            assert f.tell() == 0  # nothing started, nothing moved


# ---------------------------------------------------------------- no fd left behind


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_is_left_behind(tmp_path: Path) -> None:
    # Pipes and duplicates: closed, or (an emptied pipe) kept in the run's pool,
    # which the run closes when it ends. A pipe a cancel left bytes in is closed.
    path, _ = make_file(tmp_path, 4 << 20)
    before = open_fds()

    async def main() -> None:
        sender, receiver = await tcp_pair()
        stream = trio.SocketStream(sender)
        in_run = open_fds()
        got = bytearray()
        with receiver, path.open("rb") as f:
            for _ in range(3):  # cancelled with bytes in the pipe
                with trio.move_on_after(0.01):
                    await trio_uring.send_file(stream, f)
            assert pooled() == 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all, receiver, got)
                for _ in range(3):  # completed: one pipe, back in the pool each time
                    await trio_uring.send_file(stream, f)
                with pytest.raises(ValueError):
                    await trio_uring.send_file(stream, f, -1)
                assert pooled() == 1
                assert open_fds() == in_run + 1 + 2  # the file, the pooled pipe
                nursery.cancel_scope.cancel()
            receiver.close()
            with pytest.raises(trio.BrokenResourceError):  # failed
                for _ in range(100):
                    await trio_uring.send_file(stream, f)
        await stream.aclose()
        assert open_fds() == in_run - 2 + 2 * pooled()  # sender and receiver closed
        # One more that leaves its pipe in the pool when the run ends.
        sender, receiver = await tcp_pair()
        with sender, receiver, path.open("rb") as f:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all, receiver, bytearray())
                await trio_uring.send_file(sender, f)
                sender.shutdown(stdlib_socket.SHUT_WR)
        assert pooled() == 1

    trio_uring.run(main)
    assert open_fds() == before


def pooled() -> int:
    """Idle pipes in this run's pool."""
    pools = [pool for driver, pool in _send_file._pools.items() if not driver.closed]
    return sum(len(pool.idle) for pool in pools)


# ---------------------------------------------------------------- the fallback


@pytest.fixture
def no_splice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Rings from now on report no IORING_OP_SPLICE in their probe (the restricted
    ring then refuses it too, as a kernel without it would)."""
    real_probe = Ring.probe

    def probe(self: Ring) -> frozenset[Opcode | int]:
        return real_probe(self) - {Opcode.SPLICE}

    monkeypatch.setattr(Ring, "probe", probe)
    yield


def test_without_splice_it_reads_and_sends(tmp_path: Path, no_splice: None) -> None:
    path, data = make_file(tmp_path, 3 * PIPE + 1)

    async def main() -> None:
        await send_and_receive(tmp_path, 3 * PIPE + 1, 5, 2 * PIPE)
        assert "SPLICE" not in io_stats().ops_submitted
        # Cancelled while parked: the position rule holds here too.
        sender, receiver = await tcp_pair()
        stream = trio.SocketStream(sender)
        got = bytearray()
        with receiver, path.open("rb") as f:
            with trio.move_on_after(0.2):
                await trio_uring.send_file(stream, f)
            position = f.tell()
            await stream.aclose()
            await read_all(receiver, got)
        assert 0 < position < len(data)
        assert bytes(got) == data[:position]

    trio_uring.run(main)


def test_on_trios_own_backend(tmp_path: Path, stock_trio: None) -> None:
    async def main() -> None:
        assert trio.lowlevel.current_statistics().io_statistics.backend == "epoll"
        await send_and_receive(tmp_path, PIPE + 3, 1, None)

    trio.run(main)
