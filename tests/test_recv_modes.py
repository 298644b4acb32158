"""The receive modes (issue 15 point 4): select and bundle (IORING_RECVSEND_BUNDLE),
on the real kernel.

Each test runs its own trio.run with a `UringIOManager` in the mode under test, most
with a ring of small buffers (256 bytes), so that a waiting bundle fills several:
the accounting of `BufferRing` (ring order, buffers given back in order) is what the
byte-exact checks test.
The peer writes while the reader waits (the waiting op, not the immediate attempt,
receives), in random sizes from a seeded generator.
"""

from __future__ import annotations

import errno
import random
import socket as stdlib_socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _recvmodes
from trio_uring._lifecycle import Driver
from trio_uring._ring import FEAT_RECVSEND_BUNDLE, BufferRing

from .test_close_reuse import B_DATA, close_and_reuse, current_driver

pytestmark = pytest.mark.timeout(60)

LOCALHOST = "127.0.0.1"
MODES = ("select", "bundle")
SMALL = 256  # bytes a buffer in the small rings


@pytest.fixture(autouse=True)
def _no_mode_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIO_URING_RECV_MODE", raising=False)


def run_in_mode(mode: str, fn: Callable[[], Awaitable[None]], buffers: int = 64, size: int = SMALL) -> None:
    """``trio.run(fn)`` on an io_uring backend whose waiting receives use ``mode``
    with ``buffers`` buffers of ``size`` bytes."""

    class Manager(trio_uring.UringIOManager):
        recv_mode = mode
        recv_buffers = buffers
        recv_buffer_size = size

    import trio._core._run as run_module

    trio_uring.uninstall()
    saved = run_module.TheIOManager
    run_module.TheIOManager = Manager  # type: ignore[misc]
    try:
        trio.run(fn)
    finally:
        run_module.TheIOManager = saved  # type: ignore[misc]
        trio_uring.install()


async def stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    with stdlib_socket.create_server((LOCALHOST, 0)) as server:
        a = trio.socket.socket()
        await a.connect(server.getsockname())
        b, _ = server.accept()
    return trio.SocketStream(a), trio.SocketStream(trio.socket.from_stdlib_socket(b))


def assert_ring_in_step(driver: Driver) -> None:
    """Once every CQE is taken: every buffer is back in the ring, in order, and our
    head is the kernel's (IORING_REGISTER_PBUF_STATUS)."""
    buffers = driver.buffers()
    assert buffers.in_step()
    assert buffers._tail - buffers.head == buffers.entries
    assert sorted(buffers._slot_bid) == list(range(buffers.entries))
    kernel_head = buffers.kernel_head()
    assert kernel_head is None or kernel_head == buffers.head & 0xFFFF


@contextmanager
def counting_takes() -> Iterator[list[tuple[int, int, bool]]]:
    """Record (res, bytes copied, bundle) of every CQE `BufferRing.take` handles."""
    seen: list[tuple[int, int, bool]] = []
    real = BufferRing.take

    def take(self: BufferRing, flags: int, res: int, limit: int, bundle: bool = False) -> bytes:
        data = real(self, flags, res, limit, bundle)
        seen.append((res, len(data), bundle))
        return data

    BufferRing.take = take  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        BufferRing.take = real  # type: ignore[method-assign]


# ---------------------------------------------------------------- the mode in use


@pytest.mark.parametrize("mode", MODES)
def test_the_run_uses_the_mode_asked_for(mode: str) -> None:
    """This kernel (6.18) has every mode and passes the self-check: no silent fallback."""
    assert _recvmodes.self_check(mode)

    async def main() -> None:
        driver = current_driver()
        assert driver.buffers().bundle == (mode == "bundle")
        assert driver.recv_mode == mode

    run_in_mode(mode, main)


def test_the_environment_chooses_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_URING_RECV_MODE", "bundle")

    async def main() -> None:
        driver = current_driver()
        driver.buffers()
        assert driver.recv_mode == "bundle"

    run_in_mode("select", main)
    monkeypatch.setenv("TRIO_URING_RECV_MODE", "sideways")
    with pytest.raises(ValueError, match="TRIO_URING_RECV_MODE"):
        run_in_mode("select", main)


def test_no_bundle_feature_falls_back_to_select() -> None:
    """A kernel without IORING_FEAT_RECVSEND_BUNDLE (forced): select, and it works."""

    async def main() -> None:
        driver = current_driver()
        driver.ring.features &= ~FEAT_RECVSEND_BUNDLE
        a, b = await stream_pair()
        async with a, b:
            async with trio.open_nursery() as nursery:
                got: list[bytes] = []

                async def reader() -> None:
                    got.append(await b.receive_some(5000))

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await a.send_all(b"y" * 3000)
            assert driver.recv_mode == "select"
            assert not driver.buffers().bundle
            assert got[0] == b"y" * len(got[0]) and 0 < len(got[0]) <= SMALL  # one buffer, not a bundle

    run_in_mode("bundle", main)


def test_a_failed_self_check_falls_back_to_select(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recvmodes, "self_check", lambda mode: False)

    async def main() -> None:
        driver = current_driver()
        assert not driver.buffers().bundle
        assert driver.recv_mode == "select"

    run_in_mode("bundle", main)


@pytest.mark.parametrize("resource", ["Ring", "_tcp_pair"])
def test_a_self_check_that_cannot_run_falls_back_to_select(resource: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The self-check cannot open its private ring or its TCP pair (EMFILE: the
    process is out of fds): no error, the run uses select, and receives work. The
    check runs when the IOManager is created, not at the first waiting receive."""
    checked: list[str] = []
    real_self_check = _recvmodes.self_check

    def out_of_fds(*args: object) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    async def main() -> None:
        assert checked == ["bundle"]  # before any receive
        driver = current_driver()
        a, b = await stream_pair()
        async with a, b:
            async with trio.open_nursery() as nursery:
                got: list[bytes] = []

                async def reader() -> None:
                    got.append(await b.receive_some(5000))

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await a.send_all(b"q" * 3000)
            assert got[0] == b"q" * len(got[0]) and 0 < len(got[0]) <= SMALL  # one buffer: select
        assert driver.recv_mode == "select"
        assert not driver.buffers().bundle

    def counting(mode: str) -> bool:
        checked.append(mode)
        return real_self_check(mode)

    monkeypatch.setattr(_recvmodes, resource, out_of_fds)
    monkeypatch.setattr(_recvmodes, "self_check", counting)
    real_self_check.cache_clear()
    try:
        assert not real_self_check("bundle")
        real_self_check.cache_clear()
        run_in_mode("bundle", main)
    finally:
        real_self_check.cache_clear()  # the next test checks this kernel for real


def test_the_self_check_catches_reordered_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel (or bookkeeping) that hands a CQE's bytes back out of order fails the check."""
    real = BufferRing.take

    def reordering(self: BufferRing, flags: int, res: int, limit: int, bundle: bool = False) -> bytes:
        data = real(self, flags, res, limit, bundle)
        return data[1:] + data[:1] if len(data) > 1 else data

    assert _recvmodes._receive_known_stream("bundle")
    monkeypatch.setattr(BufferRing, "take", reordering)
    assert not _recvmodes._receive_known_stream("bundle")


# ---------------------------------------------------------------- order and bounds


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(20))
def test_random_writes_arrive_in_order_while_the_reader_waits(mode: str, seed: int) -> None:
    """Property: whatever the sizes written and asked for, receive_some(n) returns at most
    n bytes, and the bytes read are the bytes written, in order. The peer writes only
    once the reader is parked, so the waiting op (select / bundle) receives them."""
    rng = random.Random(seed)
    stats: dict[str, int] = {"waiting": 0, "largest": 0}

    async def main() -> None:
        a, b = await stream_pair()
        sent = bytearray()
        got = bytearray()
        async with a, b:
            for i in range(60):
                chunks = [rng.randbytes(rng.choice((1, 7, 100, 255, 256, 257, 1000, 3000, 10000)))
                          for _ in range(rng.randint(1, 3))]
                ask = rng.choice((1, 10, 200, 256, 600, 4096, 65536))
                if i == 0:  # at least one receive that needs many buffers
                    chunks, ask = [rng.randbytes(3000)], 65536
                async with trio.open_nursery() as nursery:

                    async def reader(ask: int = ask) -> None:
                        data = await b.receive_some(ask)
                        assert 0 < len(data) <= ask
                        got.extend(data)
                        stats["largest"] = max(stats["largest"], len(data))

                    nursery.start_soon(reader)
                    await trio.testing.wait_all_tasks_blocked()
                    stats["waiting"] += 1
                    for chunk in chunks:
                        await a.send_all(chunk)
                        sent.extend(chunk)
                # Now and then read what is left, with random sizes too (and enough
                # that the unread backlog never fills the socket: send_all would wait).
                while len(got) < len(sent) and (rng.random() < 0.5 or len(sent) - len(got) > 20_000):
                    ask = rng.choice((1, 50, 300, 5000))
                    data = await b.receive_some(ask)
                    assert 0 < len(data) <= ask
                    got.extend(data)
            await a.send_eof()
            while data := await b.receive_some(rng.choice((3, 333, 65536))):
                got.extend(data)
        assert got == sent
        assert_ring_in_step(current_driver())

    with counting_takes() as takes:
        run_in_mode(mode, main)
    assert stats["waiting"] == 60
    if mode == "bundle":
        # Some waiting receives filled more than one 256-byte buffer.
        assert any(bundle and res > SMALL for res, _, bundle in takes)


@pytest.mark.parametrize("mode", MODES)
def test_receive_some_never_returns_more_than_asked(mode: str) -> None:
    """A bundle may receive more than its len (the kernel appends what is queued):
    the caller gets at most n, the rest comes next, in order."""
    payload = bytes(range(256)) * 800  # 200 KiB

    async def main() -> None:
        a, b = await stream_pair()
        got = bytearray()
        async with a, b:

            async def writer() -> None:
                await a.send_all(payload)
                await a.send_eof()

            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    first = await b.receive_some(300)
                    assert 0 < len(first) <= 300
                    got.extend(first)
                    while data := await b.receive_some(1000):
                        assert len(data) <= 1000
                        got.extend(data)

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(writer)
        assert got == payload

    run_in_mode(mode, main, buffers=1024, size=4096)


def test_bytes_kept_from_a_bundle_come_first_for_every_receive_method() -> None:
    """Bytes a bundle kept beyond its caller's count are the next bytes of the
    stream for recv, recv_into and recvmsg too (not only receive_some)."""

    async def main() -> None:
        a, b = await stream_pair()
        async with a, b:
            driver = current_driver()
            sock = b.socket
            st = driver.fd(sock.fileno())
            await a.send_all(b"-tail")
            st.keep(b"0123456789")
            assert await sock.recv(3) == b"012"
            buf = bytearray(3)
            assert await sock.recv_into(buf) == 3 and buf == b"345"
            assert await sock.recv(2, stdlib_socket.MSG_PEEK) == b"67"
            n, anc, _, _ = await sock.recvmsg_into([buf])
            assert (n, anc, bytes(buf)) == (3, [], b"678")
            assert await b.receive_some(100) == b"9"
            assert await b.receive_some(100) == b"-tail"

    run_in_mode("bundle", main)


def test_a_waiting_peek_is_no_bundle() -> None:
    """recv(n, MSG_PEEK) that waits: a plain RECV (a bundle's surplus would be kept,
    and then read twice); the bytes are still there for the next receive."""

    async def main() -> None:
        a, b = await stream_pair()
        async with a, b:
            async with trio.open_nursery() as nursery:
                peeked: list[bytes] = []

                async def peek() -> None:
                    peeked.append(await b.socket.recv(5000, stdlib_socket.MSG_PEEK))

                nursery.start_soon(peek)
                await trio.testing.wait_all_tasks_blocked()
                assert type(current_driver().fds[b.socket.fileno()].slots[0]).__name__ == "RecvSelect"
                await a.send_all(b"p" * 3000)
            assert peeked[0] == b"p" * len(peeked[0])
            assert await b.receive_some(3000) == b"p" * 3000

    run_in_mode("bundle", main, buffers=64, size=4096)


# ---------------------------------------------------------------- EOF


@pytest.mark.parametrize("mode", MODES)
def test_eof_while_waiting(mode: str) -> None:
    """EOF reaches a parked receive as b"" (again and again), after every byte; a
    no-data CQE gives no bundle buffer back. (Linux 6.18 names no
    buffer in its EOF CQE at all; kernels that do keep the buffer at their head.)"""

    async def main() -> None:
        a, b = await stream_pair()
        driver = current_driver()
        got = bytearray()
        async with b:
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    while data := await b.receive_some(700):
                        got.extend(data)

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await a.send_all(b"z" * 5000)
                await trio.testing.wait_all_tasks_blocked()
                head = driver.buffers().head
                await a.aclose()
            if mode != "select":  # (a plain RECV that names a buffer for no data has used it up)
                assert driver.buffers().head == head  # the EOF CQE gave no buffer back
            assert got == b"z" * 5000
            assert await b.receive_some() == b""
            assert await b.receive_some(5) == b""

    run_in_mode(mode, main)


# ---------------------------------------------------------------- cancellation


@pytest.mark.parametrize("mode", MODES)
def test_cancelled_waiting_receive_loses_nothing(mode: str) -> None:
    """A waiting receive cancelled in the tick its data arrives: if the CQE won the
    race, its bytes are returned (the cancel raises at the next checkpoint), as
    RecvSelect does; else they stay in the socket. Either way none is lost."""
    rng = random.Random(15)

    async def main() -> None:
        with stdlib_socket.create_server((LOCALHOST, 0)) as server:
            peer = stdlib_socket.create_connection(server.getsockname())
            accepted, _ = server.accept()
        b = trio.SocketStream(trio.socket.from_stdlib_socket(accepted))
        sent = bytearray()
        got = bytearray()
        won = 0
        async with b:
            for _ in range(80):
                chunk = rng.randbytes(rng.randint(1, 3000))
                async with trio.open_nursery() as nursery:
                    cancel_scope = trio.CancelScope()

                    async def reader(scope: trio.CancelScope = cancel_scope) -> None:
                        nonlocal won
                        with scope:
                            while True:  # (bytes an earlier round left in the socket come at once)
                                data = await b.receive_some(rng.choice((100, 1000, 65536)))
                                got.extend(data)
                                if scope.cancel_called:
                                    won += 1
                                    await trio.lowlevel.checkpoint()  # where the cancel lands
                                    raise AssertionError("the cancel should have landed")

                    nursery.start_soon(reader)
                    await trio.testing.wait_all_tasks_blocked()
                    order = rng.randrange(3)
                    if order == 0:  # no checkpoint between: the data and the cancel meet in one tick
                        peer.sendall(chunk)
                        cancel_scope.cancel()
                    else:
                        cancel_scope.cancel()
                        if order == 1:
                            peer.sendall(chunk)
                if order == 2:  # after the cancel ended the receive: for the next one
                    peer.sendall(chunk)
                sent.extend(chunk)
            peer.shutdown(stdlib_socket.SHUT_WR)
            while data := await b.receive_some():
                got.extend(data)
        peer.close()
        assert got == sent
        assert 0 < won < 80  # both ends of the race happened

    run_in_mode(mode, main)


# ---------------------------------------------------------------- close and reuse


def test_parked_receive_then_closed_takes_nothing_from_the_new_socket() -> None:
    """Another task closes the socket while a bundle receive is parked,
    and a new socket takes the number in the same tick: ClosedResourceError, and
    nothing is read from the new socket."""

    async def main() -> None:
        with stdlib_socket.create_server((LOCALHOST, 0)) as server:
            victim = trio.socket.socket()
            await victim.connect(server.getsockname())
            peer, _ = server.accept()
        stream = trio.SocketStream(victim)
        reuse = None
        try:
            async with trio.open_nursery() as nursery:

                async def receiver() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await stream.receive_some()

                nursery.start_soon(receiver)
                await trio.testing.wait_all_tasks_blocked()
                assert type(current_driver().fds[victim.fileno()].slots[0]).__name__ == "RecvBundle"
                reuse = close_and_reuse(victim)
            await trio.sleep(0.05)
            reuse.assert_untouched()
        finally:
            peer.close()
            if reuse is not None:
                reuse.close()

    run_in_mode("bundle", main)


def test_kept_bytes_do_not_reach_a_socket_that_takes_the_number() -> None:
    """Bytes a bundle kept belong to their FdState: closed with it, never the next
    socket's on that number."""

    async def main() -> None:
        with stdlib_socket.create_server((LOCALHOST, 0)) as server:
            victim = trio.socket.socket()
            await victim.connect(server.getsockname())
            peer, _ = server.accept()
        try:
            driver = current_driver()
            driver.fd(victim.fileno()).keep(b"old socket's bytes")
            reuse = close_and_reuse(victim)
            try:
                new = trio.socket.from_stdlib_socket(reuse.sock)
                assert await new.recv(100) == B_DATA
                new.detach()
            finally:
                reuse.close()
        finally:
            peer.close()

    run_in_mode("bundle", main)


def test_enobufs_retry_of_a_bundle_refuses_a_closed_fd() -> None:
    """Two bundle receives wait with one buffer between them; one gets -ENOBUFS and is
    retried. The socket is closed and its number reused right before the retry's
    SQE: the retry is refused (ClosedResourceError), nothing is read from the new one."""
    from .test_close_reuse import between_sqes, tcp_pair

    async def main() -> None:
        driver = current_driver()
        pairs = [await tcp_pair() for _ in range(2)]
        streams = [trio.SocketStream(sock) for sock, _ in pairs]
        started: set[int] = set()
        retried: list[Any] = []
        box: list[Any] = []

        def is_retry(op: Any) -> bool:
            if type(op).__name__ != "RecvBundle":
                return False
            if id(op) in started:
                retried.append(op)
                return True
            started.add(id(op))
            return False

        def close_the_retrier() -> None:
            retrier = next(s for s in streams if s.socket.fileno() == retried[0].fd)
            box.append(close_and_reuse(retrier.socket))

        outcomes: list[object] = []
        with between_sqes(driver, is_retry, close_the_retrier):
            async with trio.open_nursery() as nursery:

                async def receive(stream: trio.SocketStream) -> None:
                    try:
                        outcomes.append(await stream.receive_some())
                    except trio.ClosedResourceError as exc:
                        outcomes.append(exc)

                for s in streams:
                    nursery.start_soon(receive, s)
                await trio.testing.wait_all_tasks_blocked()
                for _, peer in pairs:
                    peer.send(b"both at once")
        assert retried, "no receive was retried after ENOBUFS"
        assert sum(isinstance(o, trio.ClosedResourceError) for o in outcomes) == 1
        assert b"both at once" in outcomes
        box[0].assert_untouched()
        for (_, peer), s in zip(pairs, streams, strict=True):
            peer.close()
            s.socket.close()
        box[0].close()

    run_in_mode("bundle", main, buffers=1, size=4096)


# ---------------------------------------------------------------- the ring's order


def test_buffers_go_back_in_ring_order_even_when_cqes_do_not() -> None:
    """A CQE handled out of ring order (a kernel that posts them so) parks its
    buffers until every buffer before them is back: the entry that would be
    rewritten may name a buffer whose bytes are not read yet. (Synthetic CQE flags
    on a real registered ring that no receive uses.)"""
    from trio_uring._ring import CQE_BUFFER_SHIFT, CQE_F_BUFFER, Ring

    ring = Ring(4, 8)
    buffers = BufferRing(ring, 0, 4, 64)
    try:
        def cqe(bid: int) -> int:
            return CQE_F_BUFFER | bid << CQE_BUFFER_SHIFT

        assert buffers.take(cqe(1), 10, 64) == bytes(10)  # ring position 1 before position 0
        assert buffers.head == 0  # held back: position 0 is not read yet
        buffers.take(cqe(0), 10, 64)
        assert buffers.head == 2  # both back, in ring order
        assert buffers._slot_bid == [0, 1, 2, 3] and buffers._bid_pos == [4, 5, 2, 3]
    finally:
        buffers.close()
        ring.close()


@pytest.mark.parametrize("mode", MODES)
def test_many_receives_completing_in_one_tick_share_the_ring(mode: str) -> None:
    """16 connections' receives parked, data for all of them sent in one tick: their
    CQEs take buffers from one small ring together (ENOBUFS and retries included).
    Every stream gets its own bytes, in order, round after round: a buffer given
    back twice, or while another receive's bytes are in it, shows up here."""
    rng = random.Random(7)

    async def main() -> None:
        pairs = []
        for _ in range(16):
            with stdlib_socket.create_server((LOCALHOST, 0)) as server:
                peer = stdlib_socket.create_connection(server.getsockname())
                accepted, _ = server.accept()
            pairs.append((peer, trio.SocketStream(trio.socket.from_stdlib_socket(accepted))))
        sent = [bytearray() for _ in pairs]
        got = [bytearray() for _ in pairs]
        try:
            for _ in range(30):
                async with trio.open_nursery() as nursery:
                    for i, (_, stream) in enumerate(pairs):

                        async def reader(i: int = i, stream: trio.SocketStream = stream) -> None:
                            got[i].extend(await stream.receive_some(rng.choice((100, 700, 65536))))

                        nursery.start_soon(reader)
                    await trio.testing.wait_all_tasks_blocked()
                    for i, (peer, _) in enumerate(pairs):  # all in this tick
                        chunk = rng.randbytes(rng.randint(1, 1500))
                        peer.sendall(chunk)
                        sent[i].extend(chunk)
                for i, (_, stream) in enumerate(pairs):  # the rest, before the next round
                    while len(got[i]) < len(sent[i]):
                        got[i].extend(await stream.receive_some())
            assert got == sent
            assert_ring_in_step(current_driver())
        finally:
            for peer, stream in pairs:
                peer.close()
                await stream.aclose()

    run_in_mode(mode, main, buffers=8, size=SMALL)
