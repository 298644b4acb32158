"""Peers that misbehave, seen through trio.SocketStream on the io_uring backend.

Our side is a SocketStream over a UringSocket (its sends and receives are SEND and
RECV ops); the peer is a plain stdlib socket, driven from a thread when it has to
block. Each test ends with the ring back at its baseline (nothing in flight).
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import struct
import time
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from trio_uring.socket import SocketType as UringSocket

from .conftest import io_stats

LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@pytest.fixture
async def baseline() -> AsyncIterator[None]:
    await trio.testing.wait_all_tasks_blocked()
    base = io_stats()
    yield
    for _ in range(100):
        if io_stats().ops_in_flight == base.ops_in_flight:
            break
        await trio.sleep(0.01)
    assert io_stats().ops_in_flight == base.ops_in_flight
    assert io_stats().tasks_waiting_read == base.tasks_waiting_read
    assert io_stats().tasks_waiting_write == base.tasks_waiting_write


def tcp_pair(buffers: int | None = None) -> tuple[trio.SocketStream, stdlib_socket.socket]:
    """(our SocketStream on a UringSocket, the peer's blocking stdlib socket)."""
    # Buffer sizes are set before the handshake, so that the window is small too.
    with stdlib_socket.socket() as lsock:
        peer = stdlib_socket.socket()
        if buffers is not None:
            lsock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, buffers)
            peer.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, buffers)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        peer.connect(lsock.getsockname())
        ours, _ = lsock.accept()
    sock = trio.socket.from_stdlib_socket(ours)
    assert isinstance(sock, UringSocket)
    return trio.SocketStream(sock), peer


def reset(peer: stdlib_socket.socket) -> None:
    peer.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, LINGER_RESET)
    peer.close()


def read_until_eof(peer: stdlib_socket.socket, chunk: int = 65536) -> bytes:
    got = bytearray()
    while data := peer.recv(chunk):
        got += data
    return bytes(got)


# ---------------------------------------------------------------- reset


async def test_reset_mid_send_is_broken_resource_error(baseline: None) -> None:
    stream, peer = tcp_pair(buffers=16384)
    data = os.urandom(4 << 20)
    before = io_stats().ops_submitted.get("SEND", 0)

    def peer_reads_a_little_then_resets() -> int:
        got = peer.recv(65536)
        time.sleep(0.05)  # our send_all is blocked in a SEND by now
        reset(peer)
        return len(got)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, peer_reads_a_little_then_resets)
        with trio.fail_after(10):
            with pytest.raises(trio.BrokenResourceError) as info:
                await stream.send_all(data)
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and cause.errno in (errno.ECONNRESET, errno.EPIPE), repr(cause)
    assert io_stats().ops_submitted["SEND"] > before  # the sends went through the ring
    # Further sends and receives say the same; closing is fine.
    with pytest.raises(trio.BrokenResourceError):
        await stream.send_all(b"more")
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"after close")


async def test_reset_while_receive_is_blocked_is_broken_resource_error(baseline: None) -> None:
    stream, peer = tcp_pair()
    async with trio.open_nursery() as nursery:

        async def reset_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            peer.send(b"first")
            await trio.sleep(0.05)
            reset(peer)

        nursery.start_soon(reset_soon)
        with trio.fail_after(10):
            assert await stream.receive_some() == b"first"
            with pytest.raises(trio.BrokenResourceError) as info:
                await stream.receive_some()
    assert isinstance(info.value.__cause__, ConnectionResetError)
    await stream.aclose()


# ---------------------------------------------------------------- half-close


async def test_half_close_each_way(baseline: None) -> None:
    stream, peer = tcp_pair()
    with peer:
        await stream.send_all(b"request")
        await stream.send_eof()
        assert peer.recv(100) == b"request"
        assert peer.recv(100) == b""  # our EOF arrived
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"after eof")
        # The other direction still works after our EOF.
        peer.sendall(b"reply")
        assert await stream.receive_some() == b"reply"
        # The peer half-closes while our receive is blocked in a RECV.
        async with trio.open_nursery() as nursery:

            async def peer_eof() -> None:
                await trio.testing.wait_all_tasks_blocked()
                peer.sendall(b"last words")
                peer.shutdown(stdlib_socket.SHUT_WR)

            nursery.start_soon(peer_eof)
            got = b""
            while data := await stream.receive_some():
                got += data
            assert got == b"last words"
        assert await stream.receive_some() == b""  # EOF again, not an error
        await stream.aclose()


async def test_peer_half_closes_and_we_keep_sending(baseline: None) -> None:
    stream, peer = tcp_pair()
    with peer:
        peer.shutdown(stdlib_socket.SHUT_WR)
        assert await stream.receive_some() == b""
        data = os.urandom(1 << 20)

        async def send_then_eof() -> None:
            await stream.send_all(data)
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_then_eof)
            got = await trio.to_thread.run_sync(read_until_eof, peer)
        assert got == data
        await stream.aclose()


# ---------------------------------------------------------------- a peer that never reads


async def test_peer_that_never_reads(baseline: None) -> None:
    stream, peer = tcp_pair(buffers=16384)
    with peer:
        data = os.urandom(8 << 20)
        with trio.move_on_after(0.3) as scope:
            await stream.send_all(data)
        assert scope.cancelled_caught  # blocked, then cancelled cleanly
        assert io_stats().tasks_waiting_write == 0
        with trio.fail_after(2):
            await stream.aclose()  # closing never waits for the peer
        # The peer gets a prefix of the data, then EOF: nothing invented, nothing twice.
        peer.settimeout(5)
        got = read_until_eof(peer)
        assert 0 < len(got) < len(data)
        assert got == data[: len(got)]


def _io_wq_workers() -> set[str]:
    """The ids of this process's io-wq worker threads (named iou-wrk-<pid>)."""
    task_dir = f"/proc/{os.getpid()}/task"
    workers = set()
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/comm") as f:
                if f.read().startswith("iou-wrk"):
                    workers.add(tid)
        except FileNotFoundError:  # the thread has exited meanwhile
            pass
    return workers


async def _send_with_send(stream: trio.SocketStream, data: bytes) -> None:
    sent = 0
    while True:
        sent += await stream.socket.send(data[sent:])


async def _send_with_send_view(stream: trio.SocketStream, data: bytes) -> None:
    view, sent = memoryview(data), 0
    while True:
        sent += await stream.socket.send(view[sent:])


async def _send_with_sendmsg(stream: trio.SocketStream, data: bytes) -> None:
    view, sent = memoryview(data), 0
    while True:
        sent += await stream.socket.sendmsg([view[sent : sent + 1000], view[sent + 1000 :]])


def _pieces(data: bytes) -> list[bytes]:
    return [data[i : i + 65536] for i in range(0, len(data), 65536)]


async def _send_with_bundles(stream: trio.SocketStream, data: bytes) -> None:
    from trio_uring import bundles
    from trio_uring._iomanager import current_driver

    driver = current_driver()
    assert driver is not None
    if not bundles.send_bundles_supported(driver):
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")
    await bundles.BundleStream(stream, bundles=True).send_many(_pieces(data))


async def _send_with_lowlevel_bundle(stream: trio.SocketStream, data: bytes) -> None:
    from trio_uring import lowlevel

    if not lowlevel.send_bundles_supported():
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")
    with lowlevel.SendRing(128) as ring:
        for piece in _pieces(data):
            ring.push(piece)
        await lowlevel.send_bundle(stream.socket, ring)


SENDERS = {
    "send_all": lambda stream, data: stream.send_all(data),
    "send": _send_with_send,
    "send-memoryview": _send_with_send_view,
    "sendmsg": _send_with_sendmsg,
    "bundles": _send_with_bundles,
    "lowlevel-send_bundle": _send_with_lowlevel_bundle,
}


@pytest.mark.timeout(15)
@pytest.mark.parametrize("how", SENDERS)
async def test_a_send_to_a_peer_that_shut_down_and_does_not_read_is_cancelled_at_once(
    baseline: None, how: str
) -> None:
    """A peer shuts down its side (as an HTTP/1.0 client does after its request) and
    reads nothing. A send that parked in the kernel here would, after 128 wake-ups
    on EPOLLRDHUP, move to an io-wq thread and block there, one kernel thread per
    connection, beyond the reach of ASYNC_CANCEL: the cancel below would hang. Every
    way of sending must wait for room with a poll instead, and stop at once."""
    stream, peer = tcp_pair(buffers=16384)
    with peer:
        peer.shutdown(stdlib_socket.SHUT_WR)
        assert await stream.receive_some() == b""
        data = os.urandom(4 << 20)
        workers = _io_wq_workers()
        start = time.monotonic()
        with trio.move_on_after(0.5) as scope:
            await SENDERS[how](stream, data)
        assert scope.cancelled_caught
        assert time.monotonic() - start < 2
        assert not _io_wq_workers() - workers, "an io-wq thread took a send"
        with trio.fail_after(2):
            await stream.aclose()
        # The peer gets a prefix of the data, then EOF: nothing invented, nothing twice.
        peer.settimeout(5)
        got = read_until_eof(peer)
        assert 0 < len(got) < len(data)
        assert got == data[: len(got)]


async def test_many_cancelled_sends_to_a_stuck_peer_then_close(baseline: None) -> None:
    # Sends blocked on a full pipe are cancelled again and again (the send in
    # flight each time); what the peer eventually reads is exactly what the
    # completed sends reported.
    stream, peer = tcp_pair(buffers=8192)
    sock = stream.socket
    reported = bytearray()
    with peer:
        for i in range(200):
            chunk = bytes([i]) * 3000
            with trio.move_on_after(0.001):
                n = await sock.send(chunk)
                reported += chunk[:n]
        await stream.aclose()
        peer.settimeout(5)
        assert read_until_eof(peer) == bytes(reported)


# ---------------------------------------------------------------- slow-loris


async def test_slow_loris_reader_gets_everything_intact(baseline: None) -> None:
    stream, peer = tcp_pair(buffers=4096)
    data = os.urandom(64 << 10)
    sends_before = io_stats().ops_submitted.get("SEND", 0)

    def read_one_byte_at_a_time() -> bytes:
        got = bytearray()
        peer.settimeout(10)
        while b := peer.recv(1):
            got += b
            if len(got) % 4096 == 0:
                time.sleep(0.001)
        return bytes(got)

    with peer:
        async with trio.open_nursery() as nursery:
            result: list[bytes] = []

            async def reader() -> None:
                result.append(await trio.to_thread.run_sync(read_one_byte_at_a_time))

            nursery.start_soon(reader)
            with trio.fail_after(30):
                await stream.send_all(data)
                await stream.send_eof()
        assert result[0] == data
    # The buffers were small: what did not fit at once went out with SENDs that
    # waited for room.
    assert io_stats().ops_submitted["SEND"] - sends_before >= 2
    await stream.aclose()


async def test_slow_loris_writer_is_received_intact(baseline: None) -> None:
    stream, peer = tcp_pair()
    data = os.urandom(3000)

    def write_one_byte_at_a_time() -> None:
        for i in range(len(data)):
            peer.send(data[i : i + 1])
            if i % 100 == 0:
                time.sleep(0.001)
        peer.shutdown(stdlib_socket.SHUT_WR)

    with peer:
        got = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, write_one_byte_at_a_time)
            with trio.fail_after(30):
                while chunk := await stream.receive_some(7):
                    got += chunk
        assert bytes(got) == data
    await stream.aclose()


async def test_idle_peer_does_not_block_others(baseline: None) -> None:
    # A peer that connects and then says nothing ties up its own handler only.
    pairs = [tcp_pair() for _ in range(50)]
    idle_stream, _idle_peer = pairs[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(idle_stream.receive_some)
        for stream, peer in pairs[1:]:
            peer.sendall(b"ping")
            with trio.fail_after(2):
                assert await stream.receive_some() == b"ping"
        nursery.cancel_scope.cancel()
    for stream, peer in pairs:
        await stream.aclose()
        peer.close()
