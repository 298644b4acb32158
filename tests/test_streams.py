"""trio_uring's own streams: Trio's stream contract, read-ahead, and the serve/open functions."""

from __future__ import annotations

import socket as stdlib_socket
import ssl
from functools import partial

import pytest
import trio
import trio.testing
import trustme

import trio_uring
from trio_uring import UringSocketListener, UringSocketStream

from .conftest import io_stats

LOCALHOST = "127.0.0.1"


async def stream_pair() -> tuple[UringSocketStream, UringSocketStream]:
    listeners = await trio_uring.open_tcp_listeners(0, host=LOCALHOST)
    listener = listeners[0]
    assert isinstance(listener, UringSocketListener)
    async with trio.open_nursery() as nursery:
        accepted: list[UringSocketStream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await trio_uring.open_tcp_stream(LOCALHOST, listener.socket.getsockname()[1])
    await listener.aclose()
    assert isinstance(client, UringSocketStream)
    return client, accepted[0]


async def clogged_pair() -> tuple[UringSocketStream, UringSocketStream]:
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
        assert isinstance(stream, UringSocketStream)
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
