"""Send bundles (trio_uring.bundles): order, content, partial sends, cancellation, closing.

Every test runs the real kernel's send buffer rings and SEND bundles (6.10+; the
tests that need them skip without). The peer is a plain stdlib socket, read by a
thread-free loop in the same run, and compares every byte.
"""

from __future__ import annotations

import random
import socket as stdlib_socket
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _sendring, bundles
from trio_uring._ops import SendBundle
from trio_uring._ring import FEAT_RECVSEND_BUNDLE
from trio_uring.bundles import BundleStream

from .test_close_reuse import between_sqes, close_and_reuse, current_driver, tcp_pair

pytestmark = pytest.mark.timeout(30)


def _need_bundles() -> None:
    if not bundles.send_bundles_supported(current_driver()):
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")


def _sends() -> int:
    return current_driver().ring.ops_submitted().get("SEND", 0)


def _messages(rng: random.Random, count: int, max_size: int) -> list[bytes]:
    # Distinct bytes everywhere (a counter and random bytes): a reordered or repeated
    # piece cannot look right.
    return [k.to_bytes(4, "little") + rng.randbytes(rng.randrange(0, max_size)) for k in range(count)]


async def _read_all(peer: stdlib_socket.socket, into: bytearray, total: int, *, chunk: int = 65536,
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


def _drain(peer: stdlib_socket.socket) -> bytes:
    out = bytearray()
    while True:
        try:
            data = peer.recv(1 << 20)
        except BlockingIOError:
            return bytes(out)
        if not data:
            return bytes(out)
        out.extend(data)


async def _pair(*, bundles_on: bool = True, ring_entries: int = 64, sndbuf: int | None = None,
                rcvbuf: int | None = None) -> tuple[BundleStream, stdlib_socket.socket]:
    sock, peer = await tcp_pair()
    if sndbuf is not None:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, sndbuf)
    if rcvbuf is not None:  # (small ones make TCP itself slow: only where the peer does not read)
        peer.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, rcvbuf)
    return BundleStream(trio.SocketStream(sock), bundles=bundles_on, ring_entries=ring_entries), peer


def _fresh(msgs: list[bytes]) -> Iterator[bytearray]:
    # New bytearrays nobody else holds: the ring's reference is their only one.
    for m in msgs:
        yield bytearray(m)


# ---------------------------------------------------------------- order and content


@pytest.mark.parametrize("seed", range(6))
async def test_random_writes_arrive_in_order_byte_exact(seed: int) -> None:
    """Several send_many calls of random counts and sizes (empty ones too, bytes and
    other buffers), ring sizes smaller and larger than a call: the peer gets exactly
    their concatenation, and the calls took far fewer SENDs than buffers."""
    _need_bundles()
    rng = random.Random(seed)
    stream, peer = await _pair(ring_entries=rng.choice([1, 4, 64, 256]))
    calls = [_messages(rng, rng.randrange(0, 200), rng.choice([8, 300, 5000])) for _ in range(8)]
    expected = b"".join(b"".join(c) for c in calls)
    got = bytearray()
    before = _sends()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_all, peer, got, len(expected))
        for i, call in enumerate(calls):
            bufs: list[Any] = call if i % 2 else list(_fresh(call))
            await stream.send_many([b"", bytearray(), memoryview(b""), *bufs, b""])
    assert bytes(got) == expected
    assert stream.bytes_sent == len(expected)
    buffers = sum(1 for c in calls for m in c if m)
    if stream.ring_entries >= 64:
        assert _sends() - before <= buffers // 4 + len(calls)
    peer.close()
    await stream.aclose()


async def test_more_buffers_than_one_bundle_takes() -> None:
    """More entries queued than the kernel sends in one pass (256 buffers here): the
    one bundle posts CQEs with IORING_CQE_F_MORE, each from the buffer after the
    last; our head follows them all, and the completions are counted."""
    _need_bundles()
    rng = random.Random(7)
    stream, peer = await _pair(ring_entries=4096)
    msgs = _messages(rng, 4000, 20)
    expected = b"".join(msgs)
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_all, peer, got, len(expected))
        before = _sends()
        await stream.send_many(msgs)
        sqes = _sends() - before
    assert bytes(got) == expected
    assert stream.completions > sqes  # some with IORING_CQE_F_MORE
    peer.close()
    await stream.aclose()


async def test_slow_reader_small_sndbuf_partial_bundles() -> None:
    """A small SO_SNDBUF and a reader that takes little at a time: each bundle goes out
    in many pieces (the kernel waits for room and sends the rest itself); the peer
    still gets every byte, in order, and the buffers nobody else holds stay alive
    until their completion."""
    _need_bundles()
    rng = random.Random(11)
    stream, peer = await _pair(ring_entries=32, sndbuf=4096)
    calls = [_messages(rng, 40, 20000) for _ in range(3)]
    expected = b"".join(b"".join(c) for c in calls)
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _read_all(peer, got, len(expected), chunk=1500))
        for call in calls:
            await stream.send_many(_fresh(call))
            # Memory of the same sizes allocated and scribbled over meanwhile: a
            # buffer let go before its completion would be sent with these bytes.
            junk = [bytearray(b"\xee") * len(m) for m in call]
            del junk
    assert bytes(got) == expected
    peer.close()
    await stream.aclose()


async def test_send_select_takes_one_buffer_at_a_time() -> None:
    """The op without the bundle flag: each SEND takes the next buffer of the send
    ring, and the CQE names it (its id is our head's)."""
    _need_bundles()
    from trio_uring._ops import SendSelect

    driver = current_driver()
    sock, peer = await tcp_pair()
    ring = _sendring.open_send_ring(driver, 8)
    try:
        items: list[Any] = [b"one", b"two!", b"three"]
        assert ring.push_many(items, 0) == 3
        st = driver.fd(sock.fileno())
        for expected in (b"one", b"two!", b"three"):
            head = ring.head
            sent = await driver.perform(SendSelect(sock.fileno(), ring, 0), st)
            assert sent == len(expected)
            assert ring.head == (head + 1) & 0xFFFF
            await trio.sleep(0.01)
            assert _drain(peer) == expected
        assert not ring.queued()
    finally:
        ring.close()
        sock.close()
        peer.close()


# ---------------------------------------------------------------- cancellation


@pytest.mark.parametrize("ring_entries", [4, 256])
@pytest.mark.parametrize("seed", range(3))
async def test_cancelled_send_reports_exactly_what_left(ring_entries: int, seed: int) -> None:
    """A send_many parked with a bundle in flight (and more queued behind it) is
    cancelled: bytes_sent is exactly what the peer receives, a prefix of the data; the
    next call goes on right after it, in order."""
    _need_bundles()
    rng = random.Random(seed)
    stream, peer = await _pair(ring_entries=ring_entries, sndbuf=8192, rcvbuf=8192)
    msgs = _messages(rng, 300, 3000)
    data = b"".join(msgs)
    with trio.CancelScope() as scope:

        async def cancel_when_parked() -> None:
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_parked)
            await stream.send_many(list(_fresh(msgs)))
    assert scope.cancelled_caught, "the peer reads nothing: the send cannot have finished"
    sent = stream.bytes_sent
    assert 0 < sent < len(data)
    after = b"more after the cancel" * 10
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_all, peer, got, sent + len(after))
        await stream.send_many([after[:7], after[7:]])
    assert bytes(got) == data[:sent] + after
    assert stream.bytes_sent == sent + len(after)
    peer.close()
    await stream.aclose()


async def test_cancelled_before_anything_left() -> None:
    """Cancelled at its first checkpoint: nothing sent, nothing counted."""
    _need_bundles()
    stream, peer = await _pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.send_many([b"a", b"b"])
    assert scope.cancelled_caught
    assert stream.bytes_sent == 0
    await stream.send_many([b"c", b"d"])
    await trio.sleep(0.01)
    assert _drain(peer) == b"cd"
    peer.close()
    await stream.aclose()


# ---------------------------------------------------------------- closing


async def test_close_and_reuse_while_bundle_in_flight() -> None:
    """Another task closes the socket while a bundle is parked in the kernel, and a new
    socket takes the number: the sender gets ClosedResourceError, and nothing reaches
    the new socket."""
    _need_bundles()
    stream, peer = await _pair(ring_entries=16, sndbuf=4096, rcvbuf=4096)
    reuse = None
    try:
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await stream.send_many([b"x" * 50000] * 40)

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            reuse = close_and_reuse(stream.socket)
        await trio.sleep(0.05)
        reuse.assert_untouched()
    finally:
        peer.close()
        if reuse is not None:
            reuse.close()


async def test_close_and_reuse_between_two_bundles() -> None:
    """The close lands right before the second bundle's SQE (the ring took the first
    batch): no SQE of it reaches the number's new file."""
    _need_bundles()
    stream, peer = await _pair(ring_entries=2)
    driver = current_driver()
    count = 0
    reuse: list[Any] = []

    def second_bundle(op: Any) -> bool:
        nonlocal count
        if isinstance(op, SendBundle):
            count += 1
        return count == 2

    try:
        with between_sqes(driver, second_bundle, lambda: reuse.append(close_and_reuse(stream.socket))), \
                pytest.raises(trio.ClosedResourceError):
            await stream.send_many([b"first", b"batch", b"second", b"batch"])
        assert reuse
        await trio.sleep(0.05)
        reuse[0].assert_untouched()
        assert _drain(peer) == b"firstbatch"
        assert stream.bytes_sent == len(b"firstbatch")
    finally:
        peer.close()
        for r in reuse:
            r.close()


async def test_closed_and_eof_and_busy() -> None:
    """Trio's contract: BusyResourceError for a second sender (send_many or the wrapped
    stream's send_all), ClosedResourceError after send_eof and after aclose."""
    stream, peer = await _pair(sndbuf=4096, rcvbuf=4096)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_many, [b"y" * 100000] * 4)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.send_many([b"z"])
        with pytest.raises(trio.BusyResourceError):
            await stream.transport_stream.send_all(b"z")
        nursery.cancel_scope.cancel()
    await stream.send_eof()
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_many([b"after eof"])
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_many([b"after close"])
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"after close")
    peer.close()


async def test_broken_connection() -> None:
    """The peer is gone (RST): BrokenResourceError, as SocketStream raises."""
    stream, peer = await _pair()
    peer.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()
    await trio.sleep(0.02)
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(20):
            await stream.send_many([b"q" * 10000] * 10)
    await stream.aclose()


async def test_reset_while_a_bundle_is_parked() -> None:
    """The peer resets the connection while a bundle is parked half sent: the kernel
    reports the bytes that went out (a short count, no error); the rest is sent next,
    in order, and that send finds the error: BrokenResourceError, never a quiet
    return with bytes missing."""
    _need_bundles()
    stream, peer = await _pair(ring_entries=8, sndbuf=4096, rcvbuf=4096)
    async with trio.open_nursery() as nursery:

        async def reset_when_parked() -> None:
            await trio.testing.wait_all_tasks_blocked()
            peer.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            peer.close()

        nursery.start_soon(reset_when_parked)
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_many([b"r" * 30000] * 4)
    assert 0 < stream.bytes_sent < 4 * 30000
    await stream.aclose()


def test_only_socket_streams() -> None:
    with pytest.raises(TypeError):
        BundleStream(trio.testing.MemorySendStream())  # type: ignore[arg-type]
    a, b = stdlib_socket.socketpair()
    with a, b, pytest.raises(ValueError):
        BundleStream(trio.SocketStream(trio.socket.from_stdlib_socket(a)), ring_entries=3)


async def test_stream_contract() -> None:
    """trio.testing's generic checks of a half-closeable stream, with bundles on."""

    async def maker() -> tuple[BundleStream, BundleStream]:
        a, b = trio.socket.socketpair()
        return (BundleStream(trio.SocketStream(a), bundles=True), BundleStream(trio.SocketStream(b), bundles=True))

    await trio.testing.check_half_closeable_stream(maker, None)


# ---------------------------------------------------------------- without the feature


@pytest.mark.parametrize("bundles_on", [True, False])
async def test_no_feature_or_off_same_bytes_through_plain_sends(bundles_on: bool) -> None:
    """The kernel's feature bit forced off (or bundles off): the same API sends the same
    bytes through plain SENDs of the joined buffers, one per call, and registers no
    send ring."""
    driver = current_driver()
    features = driver.ring.features
    driver.ring.features = features & ~FEAT_RECVSEND_BUNDLE
    try:
        rng = random.Random(3)
        stream, peer = await _pair(bundles_on=bundles_on)
        calls = [_messages(rng, rng.randrange(1, 50), 500) for _ in range(5)]
        expected = b"".join(b"".join(c) for c in calls)
        got = bytearray()
        before = _sends()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_all, peer, got, len(expected))
            for call in calls:
                await stream.send_many(call)
        assert bytes(got) == expected
        assert stream._ring is None
        assert _sends() - before == len(calls)
        assert stream.bytes_sent == len(expected)
        peer.close()
        await stream.aclose()
    finally:
        driver.ring.features = features


def test_stock_trio_same_bytes(stock_trio: None) -> None:
    """On Trio's epoll backend the same API works (joined, Trio's own send_all)."""

    async def main() -> None:
        a, b = trio.socket.socketpair()
        stream = BundleStream(trio.SocketStream(a), bundles=True)
        await stream.send_many([b"ab", bytearray(b"cd"), memoryview(b"ef")])
        assert await b.recv(10) == b"abcdef"
        await stream.aclose()
        b.close()

    trio.run(main)


async def test_send_ring_given_back_on_close() -> None:
    """aclose unregisters the send ring and its buffer group id is used again."""
    _need_bundles()
    stream, peer = await _pair()
    await stream.send_many([b"a", b"b"])
    ring = stream._ring
    assert ring is not None
    bgid = ring.bgid
    await stream.aclose()
    assert ring.closed
    stream2, peer2 = await _pair()
    await stream2.send_many([b"c", b"d"])
    assert stream2._ring is not None and stream2._ring.bgid == bgid
    await stream2.aclose()
    peer.close()
    peer2.close()




async def test_send_ring_of_a_dropped_stream_is_given_back() -> None:
    """A BundleStream dropped without aclose: its send ring is unregistered and its
    buffer group id given back when it is collected (no ring, mapping or id leaks)."""
    _need_bundles()
    import gc

    stream, peer = await _pair()
    await stream.send_many([b"a", b"b"])
    assert stream._ring is not None
    bgid = stream._ring.bgid
    groups = _sendring._groups[current_driver()]
    sock = stream.socket
    del stream
    gc.collect()
    assert bgid in groups.free
    sock.close()
    peer.close()


def test_one_stream_in_two_runs() -> None:
    """The same BundleStream in two trio_uring runs: each run registers its own send ring."""
    a, b = stdlib_socket.socketpair()
    b.settimeout(5)
    holder: list[BundleStream] = []
    rings: list[Any] = []

    async def main(payload: list[bytes]) -> None:
        if not holder:
            holder.append(BundleStream(trio.SocketStream(trio.socket.from_stdlib_socket(a)), bundles=True))
        stream = holder[0]
        await stream.send_many(payload)
        rings.append(stream._ring)

    trio_uring.run(main, [b"first ", b"run "])
    trio_uring.run(main, [b"second ", b"run"])
    data = b""
    while len(data) < len(b"first run second run"):
        data += b.recv(100)
    assert data == b"first run second run"
    if rings[0] is not None:  # (None: this kernel has no bundles; the same bytes went out)
        assert rings[0] is not rings[1]
    a.close()
    b.close()
