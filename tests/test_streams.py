"""Trio's SocketStream and SocketListener on the io_uring backend (the short path of
trio_uring/_stream.py): Trio's stream contract, the serve/open functions, and the
switch that leaves them Trio's own."""

from __future__ import annotations

import socket as stdlib_socket
import ssl
from functools import partial

import pytest
import trio
import trio.testing
import trustme
from trio import SocketListener, SocketStream

import trio_uring

from .conftest import io_stats

LOCALHOST = "127.0.0.1"


async def stream_pair() -> tuple[SocketStream, SocketStream]:
    listeners = await trio_uring.open_tcp_listeners(0, host=LOCALHOST)
    listener = listeners[0]
    assert isinstance(listener, SocketListener)
    async with trio.open_nursery() as nursery:
        accepted: list[SocketStream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await trio_uring.open_tcp_stream(LOCALHOST, listener.socket.getsockname()[1])
    await listener.aclose()
    assert isinstance(client, SocketStream)
    return client, accepted[0]


async def clogged_pair() -> tuple[SocketStream, SocketStream]:
    left, right = await stream_pair()
    for stream in (left, right):
        while True:
            with trio.move_on_after(0.05) as scope:
                await stream.send_all(b"x" * 65536)
            if scope.cancelled_caught:
                break
    return left, right


async def test_trio_stream_conformance() -> None:
    await trio.testing.check_half_closeable_stream(stream_pair, clogged_pair)


async def test_streams_are_half_closeable_streams_with_sockets() -> None:
    client, server = await stream_pair()
    async with client, server:
        assert isinstance(client, trio.abc.HalfCloseableStream)
        assert client.socket.type == stdlib_socket.SOCK_STREAM
        assert client.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY)
        # Accepted streams inherit TCP_NODELAY from the listener.
        assert server.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY)
        client.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_KEEPALIVE, True)
        assert client.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_KEEPALIVE)


async def test_serve_tcp_and_open_tcp_stream_echo() -> None:
    before = io_stats().ops_submitted

    async def handler(stream: trio.abc.Stream) -> None:
        assert isinstance(stream, SocketStream)
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio_uring.serve_tcp, handler, 0, host=LOCALHOST))
        port = listeners[0].socket.getsockname()[1]
        streams = [await trio_uring.open_tcp_stream(LOCALHOST, port) for _ in range(20)]
        for round in range(5):
            for i, stream in enumerate(streams):
                await stream.send_all(b"%d:%d" % (i, round))
            for i, stream in enumerate(streams):
                assert await stream.receive_some() == b"%d:%d" % (i, round)
        for stream in streams:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    after = io_stats().ops_submitted
    for op in ("SOCKET", "CONNECT", "ACCEPT", "SEND", "RECV"):
        assert after[op] > before.get(op, 0), op


async def test_large_transfers_both_ways() -> None:
    client, server = await stream_pair()
    payload = bytes(range(256)) * 40_000  # 10 MB
    async with client, server:

        async def send() -> None:
            await client.send_all(payload)
            await client.send_eof()

        got = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while data := await server.receive_some():
                got += data
        assert got == payload


async def test_receive_some_respects_max_bytes_and_keeps_the_rest() -> None:
    client, server = await stream_pair()
    async with client, server:
        await client.send_all(b"abcdefghij")
        await trio.sleep(0.01)
        assert await server.receive_some(3) == b"abc"
        assert await server.receive_some(4) == b"defg"
        assert await server.receive_some() == b"hij"
        with pytest.raises(ValueError, match="max_bytes must be >= 1"):
            await server.receive_some(0)


async def test_cancelled_receive_loses_nothing() -> None:
    client, server = await stream_pair()
    async with client, server:
        with trio.move_on_after(0.01) as scope:
            await server.receive_some()
        assert scope.cancelled_caught
        await client.send_all(b"arrives while nobody waits")
        await trio.sleep(0.01)
        with trio.testing.assert_checkpoints():
            assert await server.receive_some() == b"arrives while nobody waits"


async def test_a_receiver_that_does_not_read_slows_the_sender() -> None:
    # Nothing is read ahead into user space: a peer that sends while we do not read
    # fills the kernel's buffers and then waits (TCP's backpressure), and every byte
    # arrives once we read.
    client, server = await stream_pair()
    async with client, server:
        sent = 0
        with trio.move_on_after(0.5):
            while True:
                await client.send_all(b"y" * 65536)
                sent += 65536
        assert sent < 64 * 1024 * 1024
        received = 0
        while received < sent:
            received += len(await server.receive_some())
        assert received == sent


async def test_blocked_receive_busy_then_closed() -> None:
    client, server = await stream_pair()
    errors: list[BaseException] = []

    async def receive() -> None:
        try:
            await server.receive_some()
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_some()
        await server.aclose()  # wakes the blocked receive with ClosedResourceError
    assert len(errors) == 1
    await client.aclose()


async def test_blocked_send_busy_then_closed() -> None:
    client, server = await stream_pair()
    errors: list[BaseException] = []

    async def send_forever() -> None:
        try:
            await client.send_all(b"x" * 50_000_000)  # the server never reads
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_forever)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await client.send_all(b"y")
        with pytest.raises(trio.BusyResourceError):
            await client.wait_send_all_might_not_block()
        await client.aclose()  # wakes the blocked send with ClosedResourceError
    assert len(errors) == 1
    await server.aclose()


async def test_receive_after_close_and_send_after_eof() -> None:
    client, server = await stream_pair()
    await client.send_eof()
    with pytest.raises(trio.ClosedResourceError, match="can't send data after sending EOF"):
        await client.send_all(b"x")
    assert await server.receive_some() == b""
    await server.send_all(b"other direction still works")
    assert await client.receive_some() == b"other direction still works"
    await server.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await server.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await server.send_all(b"x")
    await client.aclose()


async def test_peer_reset_is_broken_resource() -> None:
    client, server = await stream_pair()
    client.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    await server.send_all(b"unread")
    await trio.sleep(0.01)
    await client.aclose()  # RST
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(10):
            await server.receive_some()
            await server.send_all(b"x")
            await trio.sleep(0.01)
    await server.aclose()


async def test_tls_over_uring_streams() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client, server = await stream_pair()
    tls_client = trio.SSLStream(client, client_ctx, server_hostname="localhost")
    tls_server = trio.SSLStream(server, server_ctx, server_side=True)

    async def serve() -> None:
        await tls_server.send_all((await tls_server.receive_some()).upper())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await tls_client.send_all(b"over tls")
        assert await tls_client.receive_some() == b"OVER TLS"
    await tls_client.aclose()
    await tls_server.aclose()


def test_outside_the_backend_they_are_trios_streams(stock_trio: None) -> None:
    async def main() -> list[str]:
        async def handler(stream: trio.abc.Stream) -> None:
            await stream.send_all(b"hi")

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio_uring.serve_tcp, handler, 0, host=LOCALHOST))
            stream = await trio_uring.open_tcp_stream(LOCALHOST, listeners[0].socket.getsockname()[1])
            data = await stream.receive_some()
            await stream.aclose()
            nursery.cancel_scope.cancel()
        return [type(listeners[0]).__name__, type(stream).__name__, data.decode()]

    assert trio.run(main) == ["SocketListener", "SocketStream", "hi"]


async def test_the_short_path_is_taken_on_the_backend() -> None:
    # receive_some and send_all become RECV/SEND ops of the ring (no readiness poll
    # in between), and an accepted stream gets no setsockopt of its own.
    client, server = await stream_pair()
    async with client, server:
        before = io_stats().ops_submitted
        await client.send_all(b"x" * 100)
        assert await server.receive_some() == b"x" * 100
        after = io_stats().ops_submitted
        assert after["SEND"] - before.get("SEND", 0) == 1
        assert after["RECV"] - before.get("RECV", 0) == 1
        assert after.get("POLL_ADD", 0) == before.get("POLL_ADD", 0)


def test_the_switch_leaves_trios_own_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    # use_fast_trio_streams(False): Trio's methods, on UringSockets (still the
    # ring's sockets underneath), pass Trio's stream conformance test too.
    trio_uring.use_fast_trio_streams(False)
    try:
        assert SocketStream.send_all.__module__ == "trio"

        async def main() -> None:
            await trio.testing.check_half_closeable_stream(stream_pair, clogged_pair)

        trio_uring.run(main)
    finally:
        trio_uring.use_fast_trio_streams(True)
    assert SocketStream.send_all.__module__ == "trio_uring._stream"


def test_the_switch_from_the_environment() -> None:
    from .conftest import run_python

    done = run_python(
        """
        import trio, trio_uring
        print(trio.SocketStream.send_all.__module__)
        """,
        env_extra={"TRIO_URING_TRIO_STREAMS": "0"},
    )
    assert done.stdout.strip() == "trio", done.stderr


def test_a_stock_run_in_another_thread_keeps_trios_path(stock_trio: None) -> None:
    # One thread on io_uring, one on epoll, at the same time, both with SocketStream.
    import threading

    results: dict[str, object] = {}

    async def echo_round(name: str) -> None:
        client, server = await stream_pair()
        async with client, server:
            for _ in range(50):
                await client.send_all(b"ping")
                assert await server.receive_some() == b"ping"
        results[name] = trio.lowlevel.current_statistics().io_statistics.backend

    thread = threading.Thread(target=lambda: trio_uring.run(echo_round, "uring"))
    thread.start()
    trio.run(echo_round, "stock")
    thread.join(30)
    assert results == {"uring": "io_uring", "stock": "epoll"}


async def test_a_second_sender_is_busy_even_when_it_need_not_wait() -> None:
    # Trio's rule is about the call, not about the kernel: while one send_all is
    # parked, another (even of nothing, which would not need to wait) raises
    # BusyResourceError, as SocketStream's conflict detector says on epoll.
    left, right = await clogged_pair()
    async with left, right, trio.open_nursery() as nursery:
        nursery.start_soon(left.send_all, b"y" * 65536)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await left.send_all(b"")
        with pytest.raises(trio.BusyResourceError):
            await left.wait_send_all_might_not_block()
        nursery.cancel_scope.cancel()
