"""Direct descriptors (trio_uring.direct): sockets that live only in the ring's file table.

What the seeds (liburing's io_uring_prep_socket_direct(3), accept_direct(3)) document
is checked against the real kernel: ENFILE when the table is full, EINVAL for a
slot beyond it, EBADF for an empty slot, and what the kernel says without a table.
Then Trio's stream contract (trio.testing.check_half_closeable_stream), the
closed-fd rule for slots (a closed socket's ops never reach the slot's next file),
cancellation races, and no slot leak.
"""

from __future__ import annotations

import errno
import random
import socket as stdlib_socket
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from trio_uring import direct
from trio_uring._ops import DirectSend, Op
from trio_uring._ops import DirectSocket as DirectSocketOp
from trio_uring._ring import IOSQE_FIXED_FILE
from trio_uring.lowlevel import Opcode, Operation, perform

from .conftest import io_stats
from .test_cancel_race import SEED, Race, open_fds
from .test_close_reuse import between_sqes, current_driver

pytestmark = pytest.mark.timeout(30)

LOCALHOST = "127.0.0.1"
ALLOC = 0xFFFF_FFFF  # IORING_FILE_INDEX_ALLOC
B_DATA = b"data that belongs to the socket that took the slot"


async def direct_pair() -> tuple[direct.DirectSocketStream, direct.DirectSocketStream]:
    (listener,) = await direct.open_direct_tcp_listeners(0, host=LOCALHOST)
    async with listener:
        port = listener.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            accepted: list[direct.DirectSocketStream] = []

            async def accept() -> None:
                accepted.append(await listener.accept())

            nursery.start_soon(accept)
            client = await direct.open_direct_tcp_stream(LOCALHOST, port)
    return client, accepted[0]


async def clogged_direct_pair() -> tuple[direct.DirectSocketStream, direct.DirectSocketStream]:
    left, right = await direct_pair()
    for stream in (left, right):
        while True:
            with trio.move_on_after(0.05) as scope:
                await stream.send_all(b"x" * 65536)
            if scope.cancelled_caught:
                break
    return left, right


def table() -> direct.DirectTable:
    t = direct.current_table()
    assert t is not None
    return t


def stdlib_server() -> stdlib_socket.socket:
    return stdlib_socket.create_server((LOCALHOST, 0))


def black_hole() -> tuple[stdlib_socket.socket, list[stdlib_socket.socket]]:
    """A listener whose accept queue is full: a connect to it waits (its SYNs are dropped)."""
    server = stdlib_socket.socket()
    server.bind((LOCALHOST, 0))
    server.listen(0)
    fillers = []
    for _ in range(4):
        c = stdlib_socket.socket()
        c.setblocking(False)
        c.connect_ex(server.getsockname())
        fillers.append(c)
    return server, fillers


# ---------------------------------------------------------------- it works


@pytest.mark.parametrize("multishot", [False, True])
async def test_echo_through_a_direct_server_uses_no_fd(multishot: bool) -> None:
    fds = open_fds()

    async def handler(stream: direct.DirectSocketStream) -> None:
        assert stream.socket.slot >= 0
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        serve = partial(direct.serve_direct_tcp, handler, 0, host=LOCALHOST, multishot=multishot)
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        fds_with_listener = open_fds()
        streams = [await direct.open_direct_tcp_stream(LOCALHOST, port) for _ in range(10)]
        # Twenty sockets (ten each side), none of them in the process's fd table.
        await trio.testing.wait_all_tasks_blocked()
        assert len(table().live) == 20
        assert open_fds() == fds_with_listener
        for i, stream in enumerate(streams):
            payload = bytes([i]) * (1 + 100_000 * i)
            got = bytearray()
            async with trio.open_nursery() as sending:
                sending.start_soon(stream.send_all, payload)
                while len(got) < len(payload):
                    got += await stream.receive_some()
            assert got == payload
            await stream.aclose()
        nursery.cancel_scope.cancel()
    assert table().live == {}
    assert open_fds() == fds
    # The restricted ring (the default) allows the table and the fixed-file ops.
    assert trio.lowlevel.current_statistics().io_statistics.backend == "io_uring"
    submitted = io_stats().ops_submitted
    assert submitted["SOCKET"] >= 10 and submitted["CLOSE"] >= 20


async def test_the_restricted_ring_allows_direct_descriptors() -> None:
    from trio._core._run import GLOBAL_RUN_CONTEXT

    assert GLOBAL_RUN_CONTEXT.runner.io_manager.restrictions.active
    client, server = await direct_pair()
    async with client, server:
        await client.send_all(b"ping")
        assert await server.receive_some() == b"ping"


async def test_trio_stream_conformance() -> None:
    await trio.testing.check_half_closeable_stream(direct_pair, clogged_direct_pair)


async def test_direct_socket_level_calls() -> None:
    with stdlib_server() as server:
        sock = await direct.socket()
        assert repr(sock).startswith("<trio_uring.direct.DirectSocket slot=")
        await sock.connect(server.getsockname())
        peer, _ = server.accept()
        with peer, sock:
            assert await sock.send(b"abc") == 3
            assert peer.recv(10) == b"abc"
            peer.sendall(b"def")
            assert await sock.recv(0) == b""
            assert await sock.recv(10) == b"def"
            await sock.wait_writable()
            await sock.shutdown(stdlib_socket.SHUT_WR)
            assert sock.did_shutdown_SHUT_WR
            assert peer.recv(10) == b""
            with pytest.raises(OSError) as info:
                await sock.shutdown(12345)
            assert info.value.errno == errno.EINVAL
            with pytest.raises(ValueError):
                await sock.recv(-1)
        assert sock.slot == -1


async def test_stream_options_are_set_through_the_ring() -> None:
    # A direct socket has no fd: its options go through IORING_OP_URING_CMD. A
    # connecting stream sets TCP_NODELAY and TCP_NOTSENT_LOWAT, as trio.SocketStream
    # does; an accepted one inherits them from the listener, set once.
    before = io_stats().ops_submitted.get("URING_CMD", 0)
    with stdlib_server() as server:
        sock = await direct.socket()
        await sock.connect(server.getsockname())
        peer, _ = server.accept()
        with peer:
            stream = direct.DirectSocketStream(sock)
            assert io_stats().ops_submitted["URING_CMD"] == before + 2
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_KEEPALIVE, 1)
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, b"\x00" * 8)
            with pytest.raises(OSError) as info:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, 12345, 1)
            assert info.value.errno == errno.ENOPROTOOPT
            await stream.aclose()
            with pytest.raises(OSError) as info:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_KEEPALIVE, 1)
            assert info.value.errno == errno.EBADF
    with pytest.raises(TypeError):
        direct.DirectSocketStream(object())  # type: ignore[arg-type]


async def test_connect_refused_is_an_oserror_and_frees_the_slot() -> None:
    direct.register_table(1)
    with stdlib_server() as server:
        address = server.getsockname()
    sock = await direct.socket()
    with pytest.raises(OSError) as info:
        await sock.connect(address)
    assert info.value.errno == errno.ECONNREFUSED
    sock.close()
    with pytest.raises(OSError) as info:
        await direct.open_direct_tcp_stream(LOCALHOST, address[1])
    assert info.value.errno == errno.ECONNREFUSED
    assert table().live == {}
    (await direct.socket()).close()  # the one slot is free again


# ---------------------------------------------------------------- the table and the kernel's errors


async def test_without_a_table_the_kernel_says_enfile_enxio_ebadf() -> None:
    # What the kernel answers before any table is registered (trio_uring.direct never
    # lets this happen: it registers one first).
    assert direct.current_table() is None
    cases = [
        (Operation(Opcode.SOCKET, fd=stdlib_socket.AF_INET, off=stdlib_socket.SOCK_STREAM, file_index=ALLOC),
         errno.ENFILE),
        (Operation(Opcode.SOCKET, fd=stdlib_socket.AF_INET, off=stdlib_socket.SOCK_STREAM, file_index=1),
         errno.ENXIO),
        (Operation(Opcode.SEND, fd=0, addr=b"x", len=1, sqe_flags=IOSQE_FIXED_FILE), errno.EBADF),
    ]  # fmt: skip
    for op, err in cases:
        with pytest.raises(OSError) as info:
            await perform(op)
        assert info.value.errno == err


@pytest.mark.parametrize("multishot", [False, True])
async def test_a_full_table_is_enfile_for_socket_and_accept(multishot: bool) -> None:
    direct.register_table(2)
    socks = [await direct.socket(), await direct.socket()]
    assert sorted(s.slot for s in socks) == [0, 1]
    with pytest.raises(OSError) as info:
        await direct.socket()
    assert info.value.errno == errno.ENFILE
    (listener,) = await direct.open_direct_tcp_listeners(0, host=LOCALHOST, multishot=multishot)
    async with listener:
        address = listener.socket.getsockname()
        with stdlib_socket.create_connection(address) as lost:
            with pytest.raises(OSError) as info:
                await listener.accept()
            assert info.value.errno == errno.ENFILE
            # The kernel took the connection off the queue before it found no slot:
            # it is closed (unlike accept4's EMFILE, which leaves it queued).
            lost.settimeout(5)
            try:
                assert lost.recv(1) == b""
            except ConnectionResetError:
                pass
        socks[0].close()  # a free slot: the next connection is accepted into it
        with stdlib_socket.create_connection(address) as client:
            stream = await listener.accept()
            assert stream.socket.slot == 0
            client.sendall(b"hi")
            assert await stream.receive_some() == b"hi"
            await stream.aclose()
    socks[1].close()
    assert table().live == {}


async def test_a_slot_beyond_the_table_is_einval_and_an_empty_slot_ebadf() -> None:
    direct.register_table(4)
    with pytest.raises(OSError) as info:
        await perform(Operation(Opcode.SOCKET, fd=stdlib_socket.AF_INET, off=stdlib_socket.SOCK_STREAM,
                                file_index=4 + 1))  # fmt: skip
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        await perform(Operation(Opcode.CLOSE, fd=0, file_index=4 + 1))
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        await perform(Operation(Opcode.SEND, fd=2, addr=b"x", len=1, sqe_flags=IOSQE_FIXED_FILE))
    assert info.value.errno == errno.EBADF


async def test_register_table_errors() -> None:
    with pytest.raises(ValueError):
        direct.register_table(0)
    with pytest.raises(TypeError):
        direct.register_table("8")  # type: ignore[arg-type]
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1 << 20:
        with pytest.raises(OSError) as info:
            direct.register_table(1 << 20)  # more slots than RLIMIT_NOFILE allows
        assert info.value.errno == errno.EMFILE
    t = direct.register_table(8)
    assert direct.register_table(8) is t
    with pytest.raises(RuntimeError, match="has 8 slots already"):
        direct.register_table(16)


def test_outside_the_io_uring_backend(stock_trio: None) -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="need a run on the io_uring backend"):
            await direct.socket()
        with pytest.raises(RuntimeError, match="need a run on the io_uring backend"):
            direct.register_table(8)

    trio.run(main)


async def test_a_closed_socket_and_stream_refuse_everything() -> None:
    client, server = await direct_pair()
    sock = client.socket
    slot = sock.slot
    await client.aclose()
    await client.aclose()  # idempotent
    assert sock.slot == -1 and slot not in table().live
    calls: list[Any] = [
        partial(sock.send, b"x"), partial(sock.recv, 1), partial(sock.connect, (LOCALHOST, 1)),
        partial(sock.shutdown, stdlib_socket.SHUT_WR), sock.wait_writable,
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(OSError) as info:
            await call()
        assert info.value.errno == errno.EBADF
    for call in [partial(client.send_all, b"x"), partial(client.send_all, b""), client.receive_some,
                 client.send_eof, client.wait_send_all_might_not_block]:  # fmt: skip
        with pytest.raises(trio.ClosedResourceError):
            await call()
    assert await server.receive_some() == b""
    await server.aclose()


async def test_send_eof_then_send_all_is_closed_resource_error() -> None:
    client, server = await direct_pair()
    async with client, server:
        await client.send_eof()
        await client.send_eof()  # idempotent, as Trio's
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")
        assert await server.receive_some() == b""
        await server.send_all(b"still open that way")
        assert await client.receive_some() == b"still open that way"


async def test_a_peer_reset_is_broken_resource_error() -> None:
    (listener,) = await direct.open_direct_tcp_listeners(0, host=LOCALHOST)
    async with listener:
        client = stdlib_socket.create_connection(listener.socket.getsockname())
        stream = await listener.accept()
    client.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # RST
    with pytest.raises(trio.BrokenResourceError):
        while True:
            await stream.receive_some()
    await stream.aclose()


async def test_multishot_accept_queue_is_bounded_and_closed_with_the_listener() -> None:
    direct.register_table(16)
    (listener,) = await direct.open_direct_tcp_listeners(0, host=LOCALHOST, multishot=True)
    listener = direct.DirectSocketListener(listener.socket, multishot=True, queue_limit=2)
    address = listener.socket.getsockname()
    clients = [stdlib_socket.create_connection(address)]
    first = await listener.accept()  # arms the multishot
    for _ in range(5):  # one at a time (once armed, it takes the whole backlog in one go)
        clients.append(stdlib_socket.create_connection(address))
        await trio.sleep(0.02)
    # At the limit the multishot stops; the kernel's backlog holds the rest.
    assert len(table().live) == 1
    queued = listener._queue.ready if listener._queue is not None else None
    assert queued is not None and len(queued) == 2
    streams = [first] + [await listener.accept() for _ in range(5)]
    for i, c in enumerate(clients):
        c.sendall(bytes([i]))
    for s in streams:
        assert len(await s.receive_some()) == 1
    late = [stdlib_socket.create_connection(address) for _ in range(2)]
    await trio.sleep(0.05)
    assert queued
    await listener.aclose()  # the queued ones are closed with it
    await trio.sleep(0.01)
    for c in late:
        c.settimeout(5)
        try:
            assert c.recv(1) == b""
        except ConnectionResetError:
            pass
    for s in streams:
        await s.aclose()
    assert table().live == {}
    socks = [await direct.socket() for _ in range(16)]  # every slot is free again
    for sock in socks:
        sock.close()
    for c in clients + late:
        c.close()
    with pytest.raises(ValueError):
        direct.DirectSocketListener(listener.socket, queue_limit=0)


# ---------------------------------------------------------------- Trio's rules


async def test_concurrent_calls_are_busy_resource_error() -> None:
    left, right = await clogged_direct_pair()
    async with left, right, trio.open_nursery() as nursery:
        nursery.start_soon(left.send_all, b"y" * 65536)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await left.send_all(b"")
        with pytest.raises(trio.BusyResourceError):
            await left.wait_send_all_might_not_block()
        with pytest.raises(trio.BusyResourceError):
            await left.send_eof()
        nursery.cancel_scope.cancel()
    client, server = await direct_pair()
    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_some()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("multishot", [False, True])
async def test_two_tasks_accepting_on_one_listener_is_busy_resource_error(multishot: bool) -> None:
    (listener,) = await direct.open_direct_tcp_listeners(0, host=LOCALHOST, multishot=multishot)
    async with listener, trio.open_nursery() as nursery:
        nursery.start_soon(listener.accept)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await listener.accept()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("multishot", [False, True])
async def test_closing_the_listener_ends_a_parked_accept(multishot: bool) -> None:
    (listener,) = await direct.open_direct_tcp_listeners(0, host=LOCALHOST, multishot=multishot)
    async with trio.open_nursery() as nursery:

        async def acceptor() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await listener.accept()

        nursery.start_soon(acceptor)
        await trio.testing.wait_all_tasks_blocked()
        await listener.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_every_call_is_a_checkpoint() -> None:
    client, server = await direct_pair()
    async with client, server:
        for call in [partial(client.send_all, b"x"), server.receive_some, client.wait_send_all_might_not_block,
                     partial(client.send_all, b"")]:  # fmt: skip
            with trio.testing.assert_checkpoints():
                await call()
        with trio.testing.assert_checkpoints():
            await client.send_eof()
        with trio.testing.assert_checkpoints():
            await server.receive_some()


# ---------------------------------------------------------------- close and reuse of a slot


class SlotReuse:
    """A direct socket B that took a closed socket's slot, connected to its own peer,
    which has sent B_DATA: nothing may be taken from B or sent to the peer by the
    closed socket's calls."""

    def __init__(self, b: direct.DirectSocket, peer: stdlib_socket.socket) -> None:
        self.b = b
        self.peer = peer

    @classmethod
    async def take(cls, slot: int, server: stdlib_socket.socket) -> SlotReuse:
        b = await direct.socket()
        assert b.slot == slot  # the table has one slot: B took the closed socket's
        await b.connect(server.getsockname())
        peer, _ = server.accept()
        peer.setblocking(False)
        peer.send(B_DATA)
        return cls(b, peer)

    async def assert_untouched(self) -> None:
        await trio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            self.peer.recv(65536)
        got = b""
        while len(got) < len(B_DATA):
            got += await self.b.recv(65536)
        assert got == B_DATA

    def close(self) -> None:
        self.b.close()
        self.peer.close()


async def one_slot_stream(server: stdlib_socket.socket) -> tuple[direct.DirectSocketStream, stdlib_socket.socket]:
    """A direct stream in a table of one slot, and its (stdlib) peer."""
    direct.register_table(1)
    sock = await direct.socket()
    assert sock.slot == 0
    await sock.connect(server.getsockname())
    peer, _ = server.accept()
    peer.setblocking(False)
    return direct.DirectSocketStream(sock), peer


async def test_receive_parked_then_closed_takes_nothing_from_the_slots_next_socket() -> None:
    with stdlib_server() as server:
        stream, peer = await one_slot_stream(server)
        reuse = None
        try:
            async with trio.open_nursery() as nursery:

                async def receiver() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await stream.receive_some()

                nursery.start_soon(receiver)
                await trio.testing.wait_all_tasks_blocked()
                await stream.aclose()
                reuse = await SlotReuse.take(0, server)
            await reuse.assert_untouched()
        finally:
            peer.close()
            if reuse is not None:
                reuse.close()


async def test_send_all_parked_then_closed_sends_nothing_to_the_slots_next_socket() -> None:
    with stdlib_server() as server:
        stream, peer = await one_slot_stream(server)
        reuse = None
        try:
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await stream.send_all(b"x" * (8 << 20))  # the peer never reads: it parks

                nursery.start_soon(sender)
                await trio.testing.wait_all_tasks_blocked()
                await stream.aclose()
                reuse = await SlotReuse.take(0, server)
            await reuse.assert_untouched()
        finally:
            peer.close()
            if reuse is not None:
                reuse.close()


async def test_wait_send_all_might_not_block_parked_then_closed() -> None:
    with stdlib_server() as server:
        stream, peer = await one_slot_stream(server)
        while True:  # clog it
            with trio.move_on_after(0.05) as scope:
                await stream.send_all(b"x" * 65536)
            if scope.cancelled_caught:
                break
        try:
            async with trio.open_nursery() as nursery:

                async def waiter() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await stream.wait_send_all_might_not_block()

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await stream.aclose()
        finally:
            peer.close()
        assert table().live == {}


async def test_the_rest_of_a_send_all_never_reaches_the_slot_after_a_close() -> None:
    # A send_all that has sent part and is about to write its next SEND: the socket
    # is closed at exactly that moment, and the slot given to a new socket (its
    # SOCKET written right behind the CLOSE). The SEND must be refused, not written.
    with stdlib_server() as server:
        stream, peer = await one_slot_stream(server)
        driver = current_driver()
        sends_before = io_stats().ops_submitted.get("SEND", 0)
        new_slot: list[DirectSocketOp] = []

        def close_and_reuse() -> None:
            stream.socket.close()
            op = DirectSocketOp(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, 0, None, table().close_slot)
            driver.start(op, None)
            new_slot.append(op)

        try:
            with (
                between_sqes(driver, lambda op: isinstance(op, DirectSend), close_and_reuse) as seen,
                pytest.raises(trio.ClosedResourceError),
            ):
                await stream.send_all(b"x" * (16 << 20))
            assert seen
            await trio.sleep(0.01)
            (op,) = new_slot
            assert op.res == 0  # the new socket took slot 0
            # Only the immediate attempt went out: the waiting SEND was refused.
            assert io_stats().ops_submitted["SEND"] == sends_before + 1
        finally:
            peer.close()
            table().close_slot(0)


async def test_closing_the_slot_while_a_direct_connect_is_parked() -> None:
    # A connect to an address that never answers, closed by another task.
    direct.register_table(1)
    server, fillers = black_hole()
    sock = await direct.socket()
    async with trio.open_nursery() as nursery:

        async def connector() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await sock.connect(server.getsockname())

        nursery.start_soon(connector)
        await trio.testing.wait_all_tasks_blocked()
        sock.close()
    (await direct.socket()).close()
    for s in [server, *fillers]:
        s.close()


# ---------------------------------------------------------------- cancellation and leaks


async def test_a_socket_made_for_a_caller_who_left_is_closed() -> None:
    # The SOCKET completes after its caller has gone (the op is abandoned): its CQE
    # discards the result, which closes the slot. A table of one slot shows it.
    direct.register_table(1)
    driver = current_driver()
    op = DirectSocketOp(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, 0, None, table().close_slot)
    driver.start(op, None)
    driver.abandon(op)
    await trio.sleep(0.01)
    assert op.res == 0  # it was made, in slot 0 ...
    (await direct.socket()).close()  # ... and closed again


async def test_a_cancelled_connect_closes_the_socket() -> None:
    direct.register_table(1)
    server, fillers = black_hole()
    sock = await direct.socket()
    with trio.move_on_after(0.05) as scope:
        await sock.connect(server.getsockname())
    assert scope.cancelled_caught
    assert sock.slot == -1
    (await direct.socket()).close()
    for s in [server, *fillers]:
        s.close()


async def test_no_slot_leaks_over_many_connections() -> None:
    direct.register_table(4)
    for _ in range(30):
        client, server = await direct_pair()
        await client.send_all(b"x")
        assert await server.receive_some() == b"x"
        await client.aclose()
        await server.aclose()
    assert table().live == {}
    socks = [await direct.socket() for _ in range(4)]  # every slot is free
    for s in socks:
        s.close()


async def test_random_cancellation_of_direct_send_and_recv_loses_no_byte() -> None:
    base = io_stats()
    client, server = await direct_pair()
    send_race = Race(random.Random(SEED))
    recv_race = Race(random.Random(SEED + 1))
    sent = bytearray()
    received = bytearray()

    async def sender() -> None:
        rng = random.Random(SEED + 2)
        for _ in range(2000):
            chunk = rng.randbytes(rng.choice([1, 700, 20_000, 200_000]))
            completed, n = await send_race(partial(client.socket.send, chunk))
            if completed:
                assert 0 <= n <= len(chunk)
                sent.extend(chunk[:n])
        await client.send_eof()

    async def receiver() -> None:
        rng = random.Random(SEED + 3)
        while True:
            completed, data = await recv_race(partial(server.receive_some, rng.choice([1, 1000, 70_000])))
            if completed:
                if not data:
                    return
                received.extend(data)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            nursery.start_soon(receiver)
    print(f"\nseed {SEED}: send {dict(send_race.outcomes)}, recv {dict(recv_race.outcomes)}, {len(sent)} bytes")
    assert received == sent, "bytes lost, duplicated or reordered"
    for race in (send_race, recv_race):
        assert set(race.outcomes) == {"completed", "cancelled", "completed after the cancel"}
    await client.aclose()
    await server.aclose()
    await trio.sleep(0)
    assert io_stats().ops_in_flight == base.ops_in_flight
    assert table().live == {}


@pytest.mark.parametrize("multishot", [False, True])
async def test_random_cancellation_of_direct_accept_loses_no_slot(multishot: bool) -> None:
    size = 64
    direct.register_table(size)
    (listener,) = await direct.open_direct_tcp_listeners(0, host=LOCALHOST, backlog=1024, multishot=multishot)
    address = listener.socket.getsockname()
    race = Race(random.Random(SEED + 5))
    accepted: list[direct.DirectSocketStream] = []
    clients: list[stdlib_socket.socket] = []
    for _ in range(300):
        if not clients or random.Random(len(clients)).random() < 0.5:
            clients.append(stdlib_socket.create_connection(address))
        completed, stream = await race(listener.accept)
        if completed:
            accepted.append(stream)
            await stream.aclose()  # keep the table from filling up
    print(f"\nseed {SEED}: accept {dict(race.outcomes)}")
    assert race.outcomes["completed"] > 0 and race.outcomes["cancelled"] > 0
    for c in clients:
        c.close()
    await listener.aclose()
    await trio.sleep(0.01)
    assert table().live == {}
    # Every slot is free: no accepted socket was left in the table by a cancel.
    socks = [await direct.socket() for _ in range(size)]
    for s in socks:
        s.close()


async def test_an_op_on_an_empty_slot_from_the_public_op_api_is_ebadf() -> None:
    # The kernel's EBADF, surfaced as OSError, for a fixed-file op naming a slot
    # that a close emptied (Operation: the public op API).
    client, server = await direct_pair()
    slot = client.socket.slot
    await client.aclose()
    await trio.sleep(0)
    with pytest.raises(OSError) as info:
        await perform(Operation(Opcode.SEND, fd=slot, addr=b"x", len=1, sqe_flags=IOSQE_FIXED_FILE))
    assert info.value.errno == errno.EBADF
    await server.aclose()


def test_ops_are_declared_in_the_ops_table() -> None:
    from trio_uring import _ops, _restrict

    for name in ["DirectSocket", "DirectAccept", "DirectConnect", "DirectSend", "DirectRecvSelect",
                 "DirectPollOut", "DirectShutdown", "DirectClose"]:  # fmt: skip
        op: type[Op] = getattr(_ops, name)
        assert op in _ops.OPS
    assert Opcode.CLOSE in _restrict.BACKEND_OPCODES
    assert _restrict.BACKEND_SQE_FLAGS & IOSQE_FIXED_FILE
    assert _restrict.REGISTER_FILES2 in _restrict.BACKEND_REGISTER_OPS


@pytest.mark.timeout(15)
async def test_send_all_to_a_peer_that_shut_down_and_does_not_read_is_cancelled_at_once() -> None:
    # As tests/test_reliability_peers.py's test of the same name: a send on a direct
    # descriptor waits for room with a poll (DirectPollOut), never parked in the
    # kernel, where it would end up in an io-wq thread beyond the reach of a cancel.
    with stdlib_socket.create_server(("127.0.0.1", 0)) as lst:
        stream = await direct.open_direct_tcp_stream("127.0.0.1", lst.getsockname()[1])
        peer, _ = lst.accept()
    with peer:
        peer.shutdown(stdlib_socket.SHUT_WR)
        assert await stream.receive_some() == b""
        data = random.Random(SEED).randbytes(8 << 20)
        polls = io_stats().ops_submitted.get("POLL_ADD", 0)
        with trio.fail_after(5):
            with trio.move_on_after(0.3) as scope:
                await stream.send_all(data)
        assert scope.cancelled_caught
        # A few polls on the slot; not a spin (a poll on whatever plain fd has the
        # slot's number would be ready at once, again and again).
        assert io_stats().ops_submitted.get("POLL_ADD", 0) - polls < 20
        await stream.aclose()
        peer.settimeout(5)
        got = bytearray()
        while chunk := peer.recv(1 << 20):
            got += chunk
        assert 0 < len(got) < len(data)
        assert got == data[: len(got)]


async def test_msg_trunc_on_a_direct_stream_never_returns_another_connections_bytes() -> None:
    """recv(n, MSG_TRUNC) on TCP: the kernel writes nothing into the buffer; what
    comes back must not be the scratch buffer another connection's bytes went
    through (as for socket.recv, tests/test_recv_adversarial.py)."""
    secret = b"SECRET of another connection " * 4
    (a, a_peer), (b, b_peer) = await direct_pair(), await direct_pair()
    async with a, a_peer, b, b_peer:
        await a_peer.send_all(secret)
        got = b""
        while len(got) < len(secret):
            got += await a.receive_some(len(secret))  # through the driver's scratch buffer
        await b_peer.send_all(b"." * 100)
        await trio.sleep(0.01)
        assert await b.socket.recv(100, stdlib_socket.MSG_TRUNC) == bytes(100)
        with pytest.raises(TypeError):
            await b.socket.recv(100, "x")
