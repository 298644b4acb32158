"""trio_uring.lowlevel's send rings and send bundles: SendRing, send_bundle, send_select.

Real kernel send buffer rings and SEND bundles (6.10+; the tests that need them
skip without), on the run's restricted ring. The peer is a plain stdlib socket that
compares every byte: order, content, what a cancelled or closed op reports, and
that nothing reaches a socket that takes a closed one's number.
"""

from __future__ import annotations

import errno
import gc
import os
import random
import socket as stdlib_socket
import weakref
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _sendring
from trio_uring._ring import FEAT_RECVSEND_BUNDLE
from trio_uring.lowlevel import SendRing, send_bundle, send_bundles_supported, send_select

from .test_close_reuse import close_and_reuse, current_driver, tcp_pair

pytestmark = pytest.mark.timeout(30)


def _need_bundles() -> None:
    if not send_bundles_supported():
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")


def _sends() -> int:
    return current_driver().ring.ops_submitted().get("SEND", 0)


class Buf(bytearray):
    """A bytearray that can be watched with a weak reference."""

    __slots__ = ("__weakref__",)


def _messages(rng: random.Random, count: int, max_size: int) -> list[bytes]:
    # A counter and random bytes in each: a reordered or repeated piece cannot look right.
    return [k.to_bytes(4, "little") + rng.randbytes(rng.randrange(0, max_size)) for k in range(count)]


async def _read(peer: stdlib_socket.socket, into: bytearray, total: int, *, chunk: int = 65536,
                pause: float = 0.0) -> None:
    while len(into) < total:
        await trio.lowlevel.wait_readable(peer)
        try:
            data = peer.recv(chunk)
        except BlockingIOError:
            continue
        if not data:
            return
        into.extend(data)
        if pause:
            await trio.sleep(pause)


async def _read_to_eof(peer: stdlib_socket.socket) -> bytes:
    got = bytearray()
    await _read(peer, got, 1 << 62)
    return bytes(got)


def _fill(sock: trio.socket.SocketType) -> int:
    """Fill ``sock``'s send buffer (and the peer's receive buffer); the bytes written."""
    n = 0
    try:
        while True:
            n += os.write(sock.fileno(), b"f" * 65536)
    except BlockingIOError:
        return n


async def _small_pair(sndbuf: int = 4096, rcvbuf: int | None = 4096) -> tuple[trio.socket.SocketType,
                                                                               stdlib_socket.socket]:
    sock, peer = await tcp_pair()
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, sndbuf)
    if rcvbuf is not None:  # (a small one makes TCP itself slow: only where the peer does not read much)
        peer.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, rcvbuf)
    return sock, peer


# ---------------------------------------------------------------- order and content


@pytest.mark.parametrize("seed", range(4))
async def test_random_buffers_arrive_in_order_byte_exact(seed: int) -> None:
    """Many buffers of random sizes (bytes, bytearray, memoryview, empty ones), pushed
    until the ring is full and sent by bundles, on an fd number or a socket: the peer
    gets exactly their concatenation, with far fewer SENDs than buffers, on the
    run's restricted ring."""
    _need_bundles()
    assert trio.lowlevel.current_statistics().io_statistics.backend == "io_uring"
    from trio._core._run import GLOBAL_RUN_CONTEXT

    assert GLOBAL_RUN_CONTEXT.runner.io_manager.restrictions.active
    rng = random.Random(seed)
    sock, peer = await tcp_pair()
    msgs = _messages(rng, 2000, rng.choice([16, 400, 6000]))
    expected = b"".join(msgs)
    got = bytearray()
    before = _sends()
    with SendRing(rng.choice([1, 8, 64, 512])) as ring:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read, peer, got, len(expected))
            target: Any = sock
            for k, m in enumerate(msgs):
                buf: Any = (m, bytearray(m), memoryview(m))[k % 3]
                while True:
                    try:
                        ring.push(buf)
                        break
                    except trio.WouldBlock:
                        assert ring.room() == 0
                        await send_bundle(target, ring)
                        target = sock.fileno() if target is sock else sock
                if k % 7 == 0:
                    ring.push(b"")
            while ring.queued_bytes:
                await send_bundle(sock, ring)
        assert bytes(got) == expected
        assert ring.bytes_sent == len(expected)
        if ring.entries >= 64:
            assert _sends() - before <= len(msgs) // 16
    sock.close()
    peer.close()


async def test_send_select_sends_one_buffer_at_a_time() -> None:
    """send_select takes the next buffer of the ring only, in ring order."""
    _need_bundles()
    sock, peer = await tcp_pair()
    with SendRing(4) as ring:
        for b in (b"one", b"two!", b"three"):
            ring.push(b)
        for expected in (b"one", b"two!", b"three"):
            assert await send_select(sock, ring) == len(expected)
            got = bytearray()
            await _read(peer, got, len(expected))
            assert got == expected
        assert ring.queued_bytes == 0
        assert ring.room() == 4
    sock.close()
    peer.close()


async def test_an_empty_ring_sends_nothing() -> None:
    """-ENOBUFS on a send from an empty ring: the ring is empty, not a failure."""
    _need_bundles()
    sock, peer = await tcp_pair()
    with SendRing(4) as ring:
        before = _sends()
        assert await send_bundle(sock, ring) == 0
        assert await send_select(sock, ring) == 0
        assert _sends() - before == 2  # the kernel said so, both times
        ring.push(b"after")
        assert await send_bundle(sock, ring) == 5
    got = bytearray()
    await _read(peer, got, 5)
    assert got == b"after"
    sock.close()
    peer.close()


# ---------------------------------------------------------------- partial sends, cancellation


async def test_partial_send_against_a_slow_reader_then_the_rest() -> None:
    """A small SO_SNDBUF and a reader that takes little at a time: a bundle cut short
    by a deadline returns (or raises Cancelled) with its bytes counted; the rest
    stays queued in order, more is pushed while the next bundle is parked, and
    everything arrives byte-exact. Memory of the same sizes is allocated and
    scribbled over meanwhile: a buffer let go before its completion would show."""
    _need_bundles()
    rng = random.Random(5)
    sock, peer = await _small_pair(sndbuf=4096, rcvbuf=None)
    first = _messages(rng, 30, 20000)
    later = _messages(rng, 30, 3000)
    expected = b"".join(first) + b"".join(later)
    got = bytearray()
    with SendRing(64) as ring:
        for m in first:
            ring.push(Buf(m))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _read(peer, got, len(expected), chunk=1500, pause=0.001))
            with trio.move_on_after(0.02) as scope:
                await send_bundle(sock, ring)  # returns the bytes if they won the race with the cancel,
                await trio.lowlevel.checkpoint()  # and then Cancelled comes here
            assert scope.cancelled_caught
            assert 0 < ring.bytes_sent < len(b"".join(first))
            assert ring.queued_bytes == len(b"".join(first)) - ring.bytes_sent
            junk = [bytearray(b"\xee") * len(m) for m in first]
            del junk

            async def push_later() -> None:
                await trio.testing.wait_all_tasks_blocked()
                for m in later:
                    ring.push(Buf(m))

            nursery.start_soon(push_later)
            while ring.bytes_sent < len(expected):
                await send_bundle(sock, ring)
        assert bytes(got) == expected
    sock.close()
    peer.close()


@pytest.mark.parametrize("seed", range(3))
async def test_cancelled_bundle_reports_exactly_what_the_peer_gets(seed: int) -> None:
    """A bundle parked in the kernel (the peer reads nothing) is cancelled: the bytes
    returned (or, with Cancelled, counted in bytes_sent) are exactly the prefix the
    peer receives; the rest is still queued and goes out next."""
    _need_bundles()
    rng = random.Random(seed)
    sock, peer = await _small_pair(sndbuf=8192, rcvbuf=8192)
    msgs = _messages(rng, 100, 3000)
    data = b"".join(msgs)
    with SendRing(128) as ring:
        for m in msgs:
            ring.push(m)
        returned: int | None = None
        with trio.CancelScope() as scope:

            async def cancel_when_parked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_parked)
                returned = await send_bundle(sock, ring)
                await trio.lowlevel.checkpoint()  # the cancel is delivered here if the bytes won
        assert scope.cancelled_caught
        sent = ring.bytes_sent
        assert returned is None or returned == sent
        assert 0 < sent < len(data)
        assert ring.queued_bytes == len(data) - sent
        ring.clear()  # give up the rest
        assert ring.queued_bytes == 0
        ring.push(b"!end")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_bundle, sock, ring)
            got = bytearray()
            await _read(peer, got, sent + 4)
    assert bytes(got) == data[:sent] + b"!end"
    sock.close()
    peer.close()


async def test_a_buffer_is_kept_until_the_completion_that_reports_it_sent() -> None:
    """The ring holds the only reference to a pushed buffer until a CQE reports all of
    its bytes sent: alive (and not resizable) while a bundle is parked and after a
    cancel that sent part of it; let go once the rest went out."""
    _need_bundles()
    sock, peer = await _small_pair(rcvbuf=None)
    filler = _fill(sock)
    with SendRing(8) as ring:
        buf = Buf(b"k" * 200_000)
        ring.push(buf)
        with pytest.raises(BufferError):
            buf.extend(b"x")  # exported to the ring
        watch = weakref.ref(buf)
        del buf
        gc.collect()
        assert watch() is not None
        with trio.move_on_after(0.05):
            await send_bundle(sock, ring)
        gc.collect()
        assert watch() is not None  # nothing of it was reported sent yet
        got = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read, peer, got, filler + 200_000)
            await send_bundle(sock, ring)
            gc.collect()
            assert watch() is None
        assert got == b"f" * filler + b"k" * 200_000
    sock.close()
    peer.close()


# ---------------------------------------------------------------- closing


async def test_close_and_reuse_while_a_bundle_is_parked() -> None:
    """Another task closes the socket while send_bundle is parked (its send buffer was
    full: nothing of the bundle left), and a new socket takes the number in the same
    tick: ClosedResourceError, nothing counted, nothing reaches the new socket, and
    the ring still holds the data, in order, for another socket."""
    _need_bundles()
    sock, peer = await _small_pair(rcvbuf=None)
    filler = _fill(sock)
    reuse = None
    try:
        with SendRing(8) as ring:
            ring.push(b"not for the new socket" * 1000)
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await send_bundle(sock, ring)

                nursery.start_soon(sender)
                await trio.testing.wait_all_tasks_blocked()
                reuse = close_and_reuse(sock)
            await trio.sleep(0.05)
            reuse.assert_untouched()
            assert ring.bytes_sent == 0
            with pytest.raises(trio.ClosedResourceError):
                await send_bundle(sock, ring)  # its fileno() is -1 now
            assert ring.queued_bytes == 22000
            other, other_peer = await tcp_pair()
            got = bytearray()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read, other_peer, got, 22000)
                assert await send_bundle(other, ring) == 22000
            assert got == b"not for the new socket" * 1000
            other.close()
            other_peer.close()
        assert len(await _read_to_eof(peer)) == filler
    finally:
        peer.close()
        if reuse is not None:
            reuse.close()


async def test_close_and_reuse_after_part_of_a_bundle_left() -> None:
    """The same with part of the bundle sent before the close: whatever the op's
    completion says (bytes, or ClosedResourceError), the old peer gets exactly the
    bytes counted, and the new socket nothing."""
    _need_bundles()
    sock, peer = await _small_pair()
    data = random.Random(9).randbytes(300_000)
    reuse = None
    try:
        with SendRing(8) as ring:
            ring.push(data)
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    try:
                        assert await send_bundle(sock, ring) < len(data)
                    except trio.ClosedResourceError:
                        pass

                nursery.start_soon(sender)
                await trio.testing.wait_all_tasks_blocked()
                reuse = close_and_reuse(sock)
            assert 0 < ring.bytes_sent < len(data)
            assert await _read_to_eof(peer) == data[: ring.bytes_sent]
            reuse.assert_untouched()
    finally:
        peer.close()
        if reuse is not None:
            reuse.close()


async def test_ring_closed_and_its_group_id_reused() -> None:
    """close() unregisters the ring and gives its buffer group id back (a ring closed
    while an op sends from it: once that op ended); a closed ring takes nothing."""
    _need_bundles()
    groups = _sendring._groups
    ring = SendRing(8)
    bgid = ring._ring.bgid
    ring.close()
    ring.close()
    assert ring._ring.closed and bgid in groups[current_driver()].free
    with pytest.raises(trio.ClosedResourceError):
        ring.push(b"x")
    sock, peer = await _small_pair(rcvbuf=None)
    with pytest.raises(trio.ClosedResourceError):
        await send_bundle(sock, ring)
    assert ring.room() == 0

    ring2 = SendRing(8)
    assert ring2._ring.bgid == bgid  # given back, taken again
    filler = _fill(sock)
    ring2.push(b"last words")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_bundle, sock, ring2)
        await trio.testing.wait_all_tasks_blocked()
        ring2.close()  # an op is in flight: it keeps the ring until its completion
        assert not ring2._ring.closed
        got = bytearray()
        await _read(peer, got, filler + 10)
    assert ring2._ring.closed
    assert bytes(got[filler:]) == b"last words"
    sock.close()
    peer.close()


# ---------------------------------------------------------------- Trio's rules, refusals


async def test_busy_ring_and_busy_fd() -> None:
    """One op per ring (BusyResourceError for a second sender, even on another socket)
    and one writer per fd (another task's send on the fd: BusyResourceError)."""
    _need_bundles()
    sock, peer = await _small_pair(rcvbuf=None)
    sock2, peer2 = await tcp_pair()
    filler = _fill(sock)
    with SendRing(8) as ring, SendRing(8) as other:
        ring.push(b"a")
        other.push(b"b")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_bundle, sock, ring)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await send_bundle(sock2, ring)
            with pytest.raises(trio.BusyResourceError):
                await send_select(sock, other)
            with pytest.raises(trio.BusyResourceError):
                ring.clear()
            got = bytearray()
            await _read(peer, got, filler + 1)
        assert got[filler:] == b"a"
        assert other.queued_bytes == 1
    for s in (sock, sock2, peer, peer2):
        s.close()


async def test_datagram_sockets_are_refused_for_bundles() -> None:
    """A bundle would merge its buffers into one datagram: ValueError for SOCK_DGRAM and
    SOCK_SEQPACKET (nothing sent); send_select sends one buffer, one datagram."""
    _need_bundles()
    for kind in (stdlib_socket.SOCK_DGRAM, stdlib_socket.SOCK_SEQPACKET):
        a, b = trio.socket.socketpair(stdlib_socket.AF_UNIX, kind)
        with SendRing(4) as ring:
            ring.push(b"one")
            ring.push(b"two")
            with pytest.raises(ValueError, match="datagram"):
                await send_bundle(a, ring)
            with pytest.raises(ValueError, match="datagram"):
                await send_bundle(a.fileno(), ring)
            assert ring.queued_bytes == 6
            assert await send_select(a, ring) == 3
            assert await send_select(a, ring) == 3
            assert await b.recv(100) == b"one"
            assert await b.recv(100) == b"two"
        a.close()
        b.close()
    r, w = os.pipe()
    try:
        with SendRing(4) as ring, pytest.raises(OSError) as info:
            ring.push(b"x")
            await send_bundle(w, ring)
        assert info.value.errno == errno.ENOTSOCK
    finally:
        os.close(r)
        os.close(w)


async def test_full_ring_and_bad_sizes() -> None:
    _need_bundles()
    with pytest.raises(ValueError, match="power of two"):
        SendRing(3)
    with SendRing(2) as ring:
        ring.push(b"a")
        ring.push(bytearray(b"b"))
        assert ring.room() == 0
        with pytest.raises(trio.WouldBlock):
            ring.push(b"c")
        assert ring.queued_bytes == 2


async def test_without_the_feature_a_clear_error() -> None:
    """The ring's feature bit forced off: send_bundles_supported() says no and a
    SendRing cannot be made (OSError EOPNOTSUPP), before any ring is registered."""
    driver = current_driver()
    features = driver.ring.features
    driver.ring.features = features & ~FEAT_RECVSEND_BUNDLE
    try:
        assert not send_bundles_supported()
        groups = _sendring._groups.get(driver)
        taken = groups.next if groups is not None else None
        with pytest.raises(OSError) as info:
            SendRing(8)
        assert info.value.errno == errno.EOPNOTSUPP
        assert "IORING_FEAT_RECVSEND_BUNDLE" in str(info.value)
        groups = _sendring._groups.get(driver)
        assert (groups.next if groups is not None else None) == taken
    finally:
        driver.ring.features = features


def test_outside_io_uring(stock_trio: None) -> None:
    """On Trio's epoll backend: no send bundles, and SendRing says why."""

    async def main() -> None:
        assert not send_bundles_supported()
        with pytest.raises(RuntimeError, match="io_uring backend"):
            SendRing(8)

    assert not send_bundles_supported()  # (outside any run)
    trio.run(main)


def test_a_ring_serves_the_run_that_made_it() -> None:
    rings: list[SendRing] = []

    async def main() -> None:
        if not send_bundles_supported():
            return
        if rings:
            with pytest.raises(RuntimeError, match="run that made it"):
                await send_bundle(0, rings[0])
        else:
            rings.append(SendRing(4))

    trio_uring.run(main)
    trio_uring.run(main)
