"""Send bundles used the way their contract allows but the other tests don't:
BundleStream.send_many's joined path (bundles off, no kernel feature, stock Trio)
cancelled midway, an iterable that raises, a run out of send ring buffer group ids,
buffers of 4 GiB, buffers kept by a caller's exception, aclose while another task
sends, a completion reporting more than was queued; a lowlevel SendRing closed
while send_bundle sends from it.

Real kernel rings and sockets; the peer is a plain stdlib socket that compares
every byte.
"""

from __future__ import annotations

import mmap
import random
import socket as stdlib_socket
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from trio_uring import _sendring, bundles
from trio_uring.bundles import BundleStream
from trio_uring.lowlevel import SendRing, send_bundle, send_bundles_supported

from .test_close_reuse import current_driver

pytestmark = pytest.mark.timeout(30)


def _pair(*, bundles_on: bool) -> tuple[BundleStream, stdlib_socket.socket]:
    a, b = stdlib_socket.socketpair()
    a.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    b.setblocking(False)
    return BundleStream(trio.SocketStream(trio.socket.from_stdlib_socket(a)), bundles=bundles_on), b


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


async def _read(peer: stdlib_socket.socket, into: bytearray, total: int) -> None:
    while len(into) < total:
        await trio.lowlevel.wait_readable(peer)
        into.extend(_drain(peer))


async def _cancelled_midway_then_more(bundles_on: bool) -> None:
    """A send_many parked on a full socket, cancelled after several sends each took
    part of it: bytes_sent is exactly what the peer got, and the next call follows
    right on."""
    stream, peer = _pair(bundles_on=bundles_on)
    data = bytes(range(256)) * 2000
    got = bytearray()
    first: list[int] = []
    with trio.CancelScope() as scope:

        async def read_once_then_cancel() -> None:
            await trio.testing.wait_all_tasks_blocked()
            got.extend(_drain(peer))  # room for more sends of the same call
            first.append(len(got))
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_once_then_cancel)
            await stream.send_many([data[:300_000], data[300_000:]])
    assert scope.cancelled_caught, "the peer reads little: it cannot have finished"
    sent = stream.bytes_sent
    got.extend(_drain(peer))
    assert len(got) > first[0]  # a later send of the call took some too
    assert 0 < sent < len(data)
    after = b"and then this"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read, peer, got, sent + len(after))
        await stream.send_many([after[:3], after[3:]])
    assert bytes(got) == data[:sent] + after
    assert stream.bytes_sent == sent + len(after)
    await stream.aclose()
    peer.close()


@pytest.mark.parametrize("bundles_on", [False, True])
async def test_cancelled_midway_bytes_sent_is_what_the_peer_got(bundles_on: bool) -> None:
    # bundles_on=False is the default: the buffers joined and sent by plain SENDs.
    await _cancelled_midway_then_more(bundles_on)


def test_cancelled_midway_on_stock_trio(stock_trio: None) -> None:
    trio.run(_cancelled_midway_then_more, False)


async def _contract(bundles_on: bool) -> None:
    async def maker() -> tuple[BundleStream, BundleStream]:
        a, b = trio.socket.socketpair()
        return BundleStream(trio.SocketStream(a), bundles=bundles_on), BundleStream(
            trio.SocketStream(b), bundles=bundles_on
        )

    await trio.testing.check_half_closeable_stream(maker, None)


async def test_stream_contract_without_bundles() -> None:
    """trio.testing's checks of a half-closeable stream on the joined path (its own
    send loop: the send slot, EOF, closing)."""
    await _contract(False)


def test_stream_contract_on_stock_trio(stock_trio: None) -> None:
    trio.run(_contract, True)


def _raises_midway() -> Iterator[bytes]:
    yield b"never sent"
    raise ValueError("from the caller's iterable")


async def _iterable_that_raises(bundles_on: bool) -> None:
    """An iterable that raises: its error, after a checkpoint (a pending cancel wins,
    as at every checkpoint), nothing sent; and the stream is not left busy."""
    stream, peer = _pair(bundles_on=bundles_on)
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.send_many(_raises_midway())
    assert scope.cancelled_caught
    with trio.testing.assert_checkpoints(), pytest.raises(ValueError, match="caller's iterable"):
        await stream.send_many(_raises_midway())
    await stream.send_many([b"ok"])
    await trio.sleep(0.01)
    assert _drain(peer) == b"ok"
    assert stream.bytes_sent == 2
    await stream.aclose()
    peer.close()


@pytest.mark.parametrize("bundles_on", [False, True])
async def test_an_iterable_that_raises(bundles_on: bool) -> None:
    await _iterable_that_raises(bundles_on)


def test_an_iterable_that_raises_on_stock_trio(stock_trio: None) -> None:
    trio.run(_iterable_that_raises, True)


async def test_busy_or_after_eof_the_iterable_is_not_touched() -> None:
    """Refused calls (BusyResourceError, ClosedResourceError after send_eof) leave the
    caller's iterable alone, on either path."""
    for bundles_on in (False, True):
        stream, peer = _pair(bundles_on=bundles_on)
        taken: list[bytes] = []

        def watched(taken: list[bytes] = taken) -> Iterator[bytes]:
            taken.append(b"x")
            yield b"x"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.transport_stream.send_all, b"w" * 1_000_000)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await stream.send_many(watched())
            nursery.cancel_scope.cancel()
        await stream.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_many(watched())
        assert not taken
        await stream.aclose()
        peer.close()


async def test_no_buffer_group_id_left_sends_joined() -> None:
    """Every buffer group id of the run is taken by other send rings (a server with
    65,535 bundle streams): the connection is fine, so send_many sends the joined
    buffers instead of raising BrokenResourceError, and registers a ring once an id
    is free again."""
    if not bundles.send_bundles_supported(current_driver()):
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")
    groups = _sendring._groups.get(current_driver())
    if groups is None:
        groups = _sendring._groups[current_driver()] = _sendring._Groups()
    saved = groups.next, list(groups.free)
    groups.next, groups.free[:] = _sendring._MAX_GROUP + 1, []  # all taken
    stream, peer = _pair(bundles_on=True)
    try:
        await stream.send_many([b"still ", bytearray(b"sent")])
        assert stream._ring is None and stream.completions == 0
        groups.free.append(7)  # another stream closed its ring
        await stream.send_many([b", and ", b"bundled"])
        assert stream._ring is not None and stream._ring.bgid == 7 and stream.completions
        await trio.sleep(0.01)
        assert _drain(peer) == b"still sent, and bundled"
        assert stream.bytes_sent == 23
        await stream.aclose()
    finally:
        groups.next, groups.free[:] = saved
        peer.close()


@pytest.mark.parametrize("bundles_on", [True, False])
async def test_buffers_let_go_when_the_call_raises(bundles_on: bool) -> None:
    """The connection breaks with buffers not yet queued (more than the ring takes),
    and the caller keeps the exception (logs it later, say): its bytearrays must be
    its own again, resizable, as after Trio's send_all. A view kept alive by the
    exception's traceback would make a buffer pool's next resize fail."""
    stream, peer = _pair(bundles_on=bundles_on)
    stream.ring_entries = 2
    pool = [bytearray(b"p" * 50_000) for _ in range(8)]
    kept: list[BaseException] = []
    async with trio.open_nursery() as nursery:

        async def sender() -> None:
            try:
                await stream.send_many(pool)
            except trio.BrokenResourceError as exc:
                kept.append(exc)

        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        peer.close()
    assert kept
    for buf in pool:
        buf.extend(b"resized")  # BufferError while a view of it is alive
    await stream.aclose()


async def test_a_buffer_larger_than_a_ring_entry_takes() -> None:
    """A buffer of 4 GiB and more (a ring entry's length is 32 bits), after a small one:
    sent in order like any other (Trio's send_all would), cancelled midway with
    bytes_sent exactly what the peer got, and the next call follows right on. (An
    entry that did not fit left the small one published to the kernel behind our
    back: the next call sent it again, from memory the ring no longer held.)"""
    if not bundles.send_bundles_supported(current_driver()):
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")
    try:
        big = mmap.mmap(-1, (1 << 32) + 10)  # untouched anonymous pages: no memory used
    except (OSError, OverflowError, ValueError):
        pytest.skip("no 4 GiB mapping here")
    stream, peer = _pair(bundles_on=True)
    try:
        with trio.move_on_after(0.1) as scope:
            await stream.send_many([b"head", big])
        assert scope.cancelled_caught
        sent = stream.bytes_sent
        got = bytearray(_drain(peer))
        assert 4 < sent == len(got)
        assert got == b"head" + bytes(sent - 4)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read, peer, got, sent + 4)
            await stream.send_many([b"tail"])
        assert got[sent:] == b"tail"
        assert stream.bytes_sent == sent + 4
        await stream.aclose()
    finally:
        big.close()
        peer.close()


@pytest.mark.parametrize("seed", range(3))
async def test_buffers_cut_into_entries_arrive_in_order(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same cut with a small entry size: buffers of every kind (bytes, bytearray,
    a memoryview of ints) larger than an entry arrive byte-exact, in order, through
    a ring smaller than the pieces."""
    if not bundles.send_bundles_supported(current_driver()):
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")
    monkeypatch.setattr(bundles, "_MAX_ENTRY", 1000)
    rng = random.Random(seed)
    stream, peer = _pair(bundles_on=True)
    stream.ring_entries = 4
    msgs = [rng.randbytes(rng.choice([10, 999, 1000, 1001, 2500, 7000])) for _ in range(30)]
    bufs = [
        m if k % 3 == 0 else bytearray(m) if k % 3 == 1 else memoryview(bytearray(m + bytes(-len(m) % 4))).cast("i")
        for k, m in enumerate(msgs)
    ]
    expected = b"".join(bytes(memoryview(b).cast("B")) for b in bufs)
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read, peer, got, len(expected))
        await stream.send_many(bufs)
    assert bytes(got) == expected
    assert stream.bytes_sent == len(expected)
    await stream.aclose()
    peer.close()


async def test_aclose_while_the_wrapped_stream_sends_gives_the_ring_back() -> None:
    """aclose while another task's send_all on the wrapped stream is parked (it holds
    the stream's send slot, not a send_many of ours): the send ring is unregistered
    and its buffer group id given back by aclose, whichever task runs first after
    the close (repeated: Trio may run either first). While a send_many of ours
    sends, its op keeps the ring until it ends (closing it under a written SQE
    would send from an unregistered group, or a new ring's)."""
    if not bundles.send_bundles_supported(current_driver()):
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")
    for _ in range(12):
        await _aclose_while_the_wrapped_stream_sends()
    for _ in range(12):
        await _aclose_while_send_many_sends()


async def _aclose_while_the_wrapped_stream_sends() -> None:
    stream, peer = _pair(bundles_on=True)
    await stream.send_many([b"x", b"y"])
    ring = stream._ring
    assert ring is not None

    async def plain_sender() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await stream.transport_stream.send_all(b"z" * 1_000_000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(plain_sender)
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
        assert ring.closed
        assert ring.bgid in _sendring._groups[current_driver()].free
    peer.close()


async def _aclose_while_send_many_sends() -> None:
    stream, peer = _pair(bundles_on=True)
    rings: list[Any] = []

    async def sender() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_many([b"z" * 100_000] * 4)

    async def closer() -> None:
        # Right after the sender wrote its SQE (same batch), or while it waits for room.
        while stream._ring is None or not stream._ring.queued():
            await trio.sleep(0)
        rings.append(stream._ring)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        nursery.start_soon(closer)
    assert rings[0].closed
    assert rings[0].bgid in _sendring._groups[current_driver()].free
    peer.close()


@pytest.mark.timeout(10)
async def test_a_completion_reporting_more_than_was_queued_stops_the_ring() -> None:
    """A completion that reports more bytes than the ring holds (the kernel read
    entries past our tail: how the 4 GiB bug above ended) marks the ring out of step
    (the stream stops), and our head stops at our tail: walked on over entries never
    pushed, it passed the tail, and the ring then counted 65,535-odd entries queued."""
    if not bundles.send_bundles_supported(current_driver()):
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")
    ring = _sendring.open_send_ring(current_driver(), 8)
    try:
        ring.push_many([b"abc", b"defg"], 0)
        ring.sent(7 + 5, 0)
        assert ring.out_of_step is not None
        assert ring.head == ring.tail  # what was queued is released; nothing beyond it
    finally:
        ring.close()


# ---------------------------------------------------------------- lowlevel


async def test_ring_closed_mid_send_stops_before_its_group_id_is_reused() -> None:
    """SendRing.close() while send_bundle sends from it (the peer reads slowly): once
    the op in flight ends the ring is unregistered and its buffer group id given back,
    and another ring takes it. The call must stop there (ClosedResourceError, the rest
    not sent), never submit another SEND naming that id: it would send the new ring's
    buffers, another connection's data, on this socket."""
    if not send_bundles_supported():
        pytest.skip("this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE)")
    a, peer = stdlib_socket.socketpair()
    a.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    peer.setblocking(False)
    sock = trio.socket.from_stdlib_socket(a)
    ring = SendRing(8)
    ring.push(b"A" * 100_000)
    others: list[SendRing] = []
    got = bytearray()
    try:
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await send_bundle(sock, ring)

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            ring.close()  # an op is in flight: it keeps the ring until it ends
            for _ in range(200):
                got.extend(_drain(peer))  # room: the op goes on, and ends
                if ring._ring.closed and not others:
                    other = SendRing(8)  # takes the id given back
                    other.push(b"another connection's secret")
                    others.append(other)
                await trio.sleep(0)
        got.extend(_drain(peer))
        assert others, "the ring was never unregistered"
        assert bytes(got) == b"A" * ring.bytes_sent
        assert 0 < ring.bytes_sent < 100_000
        assert others[0].queued_bytes == len(b"another connection's secret")
    finally:
        for r in others:
            r.close()
        sock.close()
        peer.close()
