"""Socket ops through the ring: each op's success and error paths, on real loopback sockets."""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import gc
import os
import socket as stdlib_socket
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import assert_checkpoints

import trio_uring
from trio_uring.socket import SocketType as UringSocket

from .conftest import fill_socket, io_stats, run_python

LOCALHOST = "127.0.0.1"


def open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


async def listener(family: int = stdlib_socket.AF_INET, host: str = LOCALHOST) -> trio.socket.SocketType:
    sock = trio.socket.socket(family)
    await sock.bind((host, 0))
    sock.listen(128)
    return sock


async def connected_pair(
    family: int = stdlib_socket.AF_INET, host: str = LOCALHOST
) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    lsock = await listener(family, host)
    with lsock:
        client = trio.socket.socket(family)
        await client.connect(lsock.getsockname())
        server, _ = await lsock.accept()
    return client, server


@pytest.fixture
async def pair() -> AsyncIterator[tuple[trio.socket.SocketType, trio.socket.SocketType]]:
    client, server = await connected_pair()
    with client, server:
        yield client, server


# ---------------------------------------------------------------- creation


async def test_trio_sockets_are_uring_sockets_and_made_by_the_ring() -> None:
    before = io_stats().ops_submitted.get("SOCKET", 0)
    sock = trio.socket.socket()
    with sock:
        assert isinstance(sock, UringSocket)
        assert isinstance(sock, trio.socket.SocketType)
        assert io_stats().ops_submitted["SOCKET"] == before + 1
        assert sock.family == stdlib_socket.AF_INET and sock.type == stdlib_socket.SOCK_STREAM
        flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL)
        assert flags & os.O_NONBLOCK
        assert not sock.get_inheritable()


async def test_sockets_trio_wraps_itself_are_uring_sockets_too() -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        assert isinstance(a, UringSocket) and isinstance(b, UringSocket)
        with a.dup() as c:
            assert isinstance(c, UringSocket)
    raw = stdlib_socket.socket()
    wrapped = trio.socket.from_stdlib_socket(raw)
    with wrapped:
        assert isinstance(wrapped, UringSocket)
    fd = stdlib_socket.socket().detach()
    with trio.socket.socket(fileno=fd) as s:
        assert isinstance(s, UringSocket)
    fd = stdlib_socket.socket().detach()
    with trio.socket.fromfd(fd, stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM) as s:
        assert isinstance(s, UringSocket)
    os.close(fd)


def test_outside_the_backend_trio_sockets_are_trios_own(stock_trio: None) -> None:
    async def main() -> str:
        with trio.socket.socket() as s:
            return type(s).__name__

    assert trio.run(main) == "_SocketType"


async def test_socket_module_api() -> None:
    with trio_uring.socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM) as s:
        assert isinstance(s, UringSocket) and s.family == stdlib_socket.AF_INET6
    with assert_checkpoints():
        s = await trio_uring.socket.socket_async()
    with s:
        assert isinstance(s, UringSocket)


@pytest.mark.parametrize(
    ("args", "err"),
    [
        ((12345, stdlib_socket.SOCK_STREAM, 0), errno.EAFNOSUPPORT),
        ((stdlib_socket.AF_INET, 12345, 0), errno.EINVAL),
        ((stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, 250), errno.EPROTONOSUPPORT),
    ],
)
async def test_socket_creation_errors_are_socket2s(args: tuple[int, int, int], err: int) -> None:
    # What socket(2) says, as the stdlib would raise it.
    with pytest.raises(OSError) as expected:
        stdlib_socket.socket(*args)
    assert expected.value.errno == err
    fds = open_fds()
    with pytest.raises(OSError) as info:
        trio.socket.socket(*args)
    assert info.value.errno == err
    assert str(info.value) == str(expected.value)
    with pytest.raises(OSError) as info:
        await trio_uring.socket.socket_async(*args)
    assert info.value.errno == err
    assert open_fds() == fds


def test_socket_creation_emfile() -> None:
    proc = run_python(
        """
        import errno, os, resource, trio, trio_uring
        async def main():
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 1, hard))
            hold = []
            try:
                while True:
                    hold.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                pass
            try:
                trio.socket.socket()
            except OSError as exc:
                print(exc.errno == errno.EMFILE, exc)
            for fd in hold:
                os.close(fd)
            trio.socket.socket().close()
            print("recovered")
        trio_uring.run(main)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["True [Errno 24] Too many open files", "recovered"]


# ---------------------------------------------------------------- connect


async def test_connect_ipv4_and_ipv6() -> None:
    for family, host in [(stdlib_socket.AF_INET, "127.0.0.1"), (stdlib_socket.AF_INET6, "::1")]:
        before = io_stats().ops_submitted.get("CONNECT", 0)
        lsock = await listener(family, host)
        with lsock:
            client = trio.socket.socket(family)
            with client:
                with assert_checkpoints():
                    await client.connect(lsock.getsockname())
                server, peer = await lsock.accept()
                with server:
                    assert peer == client.getsockname()
                    assert client.getpeername() == lsock.getsockname()
        assert io_stats().ops_submitted["CONNECT"] == before + 1


async def test_connect_refused_says_where() -> None:
    port = stdlib_socket.socket()
    port.bind((LOCALHOST, 0))
    address = port.getsockname()
    port.close()  # bound, never listened, closed: nobody is there
    refused = r"^\[Errno 111\] Error connecting to \('127\.0\.0\.1', \d+\): Connection refused$"
    with (
        trio.socket.socket() as sock,
        assert_checkpoints(),
        pytest.raises(ConnectionRefusedError, match=refused),
    ):
        await sock.connect(address)


async def test_connect_bad_addresses() -> None:
    with trio.socket.socket() as sock:
        with pytest.raises(ValueError, match="address should be a"):
            await sock.connect("localhost")
        with pytest.raises(OverflowError, match="port must be 0-65535"):
            await sock.connect((LOCALHOST, 70000))
        with pytest.raises(stdlib_socket.gaierror):  # wrong family for this socket
            await sock.connect(("::1", 80))


async def test_connect_on_a_closed_socket_is_ebadf() -> None:
    sock = trio.socket.socket()
    sock.close()
    with pytest.raises(OSError) as info:
        await sock.connect((LOCALHOST, 80))
    assert info.value.errno == errno.EBADF


async def test_connect_twice_is_eisconn(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    client, server = pair
    with pytest.raises(OSError) as info:
        await client.connect(server.getsockname())
    assert info.value.errno == errno.EISCONN


async def pending_connect_target() -> tuple[trio.socket.SocketType, list[stdlib_socket.socket]]:
    """A listener whose backlog is full: further connects stay pending (SYN dropped)."""
    lsock = await listener()
    lsock.listen(0)
    fillers = []
    for _ in range(8):
        s = stdlib_socket.socket()
        s.setblocking(False)
        try:
            s.connect(lsock.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    await trio.sleep(0.05)
    return lsock, fillers


async def test_cancelled_connect_closes_the_socket() -> None:
    lsock, fillers = await pending_connect_target()
    try:
        sock = trio.socket.socket()
        before = io_stats().ops_submitted.get("ASYNC_CANCEL", 0)
        with trio.move_on_after(0.1) as scope:
            await sock.connect(lsock.getsockname())
        assert scope.cancelled_caught
        assert sock.fileno() == -1  # as in Trio: its state is unknown, so it is closed
        assert io_stats().ops_submitted["ASYNC_CANCEL"] == before + 1
    finally:
        lsock.close()
        for s in fillers:
            s.close()


# ---------------------------------------------------------------- accept


async def test_accept_many_with_correct_peers() -> None:
    lsock = await listener()
    with lsock:
        clients = [stdlib_socket.create_connection(lsock.getsockname()) for _ in range(20)]
        try:
            expected = {c.getsockname() for c in clients}
            seen = set()
            before = io_stats().ops_submitted.get("ACCEPT", 0)
            for _ in clients:
                with assert_checkpoints():
                    sock, peer = await lsock.accept()
                with sock:
                    assert isinstance(sock, UringSocket)
                    assert peer == sock.getpeername()
                    assert fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
                    assert fcntl.fcntl(sock.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
                    seen.add(peer)
            assert seen == expected
            # One multishot ACCEPT served all of them.
            assert io_stats().ops_submitted["ACCEPT"] == before + 1
        finally:
            for c in clients:
                c.close()


async def test_accept_on_a_socket_that_is_not_listening() -> None:
    with trio.socket.socket() as sock:
        await sock.bind((LOCALHOST, 0))
        with assert_checkpoints(), pytest.raises(OSError) as info:
            await sock.accept()
        assert info.value.errno == errno.EINVAL


async def test_accept_after_close_is_ebadf() -> None:
    lsock = await listener()
    lsock.close()
    with pytest.raises(OSError) as info:
        await lsock.accept()
    assert info.value.errno == errno.EBADF


async def test_two_accepts_at_once_is_busy() -> None:
    lsock = await listener()
    with lsock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lsock.accept)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await lsock.accept()
            assert io_stats().tasks_waiting_read >= 2
            nursery.cancel_scope.cancel()


async def test_cancelled_accept_loses_no_connection() -> None:
    lsock = await listener()
    with lsock:
        with trio.move_on_after(0.01):
            await lsock.accept()
        # The multishot stays armed: a connection that arrives now waits in the
        # queue for the next accept().
        client = stdlib_socket.create_connection(lsock.getsockname())
        with client:
            await trio.sleep(0.01)
            with trio.fail_after(1):
                sock, peer = await lsock.accept()
            with sock:
                assert peer == client.getsockname()


async def test_closing_a_listener_wakes_a_blocked_accept() -> None:
    lsock = await listener()
    async with trio.open_nursery() as nursery:
        errors: list[BaseException] = []

        async def accept() -> None:
            try:
                await lsock.accept()
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        nursery.start_soon(accept)
        await trio.testing.wait_all_tasks_blocked()
        lsock.close()
    assert len(errors) == 1


async def test_closing_a_listener_closes_queued_connections() -> None:
    fds = open_fds()
    lsock = await listener()
    clients = [stdlib_socket.create_connection(lsock.getsockname()) for _ in range(5)]
    sock, _ = await lsock.accept()  # arms the multishot: the other 4 are queued
    sock.close()
    await trio.sleep(0.05)
    lsock.close()
    for c in clients[1:]:
        c.settimeout(2)
        assert c.recv(1) == b""  # EOF: the queued connection was closed, not leaked
    for c in clients:
        c.close()
    assert open_fds() == fds


async def test_leaving_a_with_block_really_closes_a_listener() -> None:
    # The multishot ACCEPT holds the listening file; closing only the fd (as
    # Trio's SocketType.__exit__ does) would leave the port accepting connections.
    lsock = await listener()
    with lsock:
        address = lsock.getsockname()
        client = stdlib_socket.create_connection(address)
        sock, _ = await lsock.accept()
        sock.close()
        client.close()
    await trio.sleep(0.01)
    with pytest.raises(ConnectionRefusedError):
        stdlib_socket.create_connection(address).close()


async def test_accept_queue_is_bounded() -> None:
    # The kernel's multishot ACCEPT takes everything in the listen backlog at once;
    # once `accept_queue_limit` connections wait in our queue, it is stopped, and
    # later connections stay in the kernel's backlog until the queue drains.
    fds = open_fds()
    lsock = await listener()
    assert isinstance(lsock, UringSocket)
    lsock.accept_queue_limit = 8
    first = [stdlib_socket.create_connection(lsock.getsockname()) for _ in range(20)]
    clients = list(first)
    try:
        sock, _ = await lsock.accept()  # arms the multishot: a burst takes the other 19
        sock.close()
        await trio.sleep(0.05)
        queued = open_fds() - fds - 1 - len(clients)
        assert queued == 19
        clients += [stdlib_socket.create_connection(lsock.getsockname()) for _ in range(30)]
        await trio.sleep(0.1)
        # Stopped: none of the 30 newcomers was taken into this process.
        assert open_fds() - fds - 1 - len(clients) == queued
        peers = set()
        for _ in range(len(clients) - 1):
            with trio.fail_after(2):
                sock, peer = await lsock.accept()
            sock.close()
            peers.add(peer)
        assert len(peers) == len(clients) - 1
    finally:
        lsock.close()
        for c in clients:
            c.close()
    assert open_fds() == fds


def test_accept_emfile_then_recovers() -> None:
    proc = run_python(
        """
        import errno, os, resource, socket, trio, trio_uring
        async def main():
            lsock = trio.socket.socket()
            await lsock.bind(("127.0.0.1", 0))
            lsock.listen(16)
            clients = [socket.create_connection(lsock.getsockname()) for _ in range(3)]
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 1, hard))
            hold = []
            try:
                while True:
                    hold.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                pass
            try:
                await lsock.accept()
            except OSError as exc:
                print("accept:", errno.errorcode[exc.errno])
            for fd in hold:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            peers = set()
            for _ in clients:
                with trio.fail_after(2):
                    sock, peer = await lsock.accept()
                peers.add(peer)
                sock.close()
            print(peers == {c.getsockname() for c in clients})
        trio_uring.run(main)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["accept: EMFILE", "True"]


# ---------------------------------------------------------------- send / recv


async def test_send_recv_and_checkpoints(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    client, server = pair
    before = io_stats().ops_submitted
    with assert_checkpoints():
        assert await client.send(b"hello") == 5
    with assert_checkpoints():
        assert await server.recv(100) == b"hello"
    await client.send(memoryview(b"xxworld")[2:])
    buf = bytearray(10)
    with assert_checkpoints():
        assert await server.recv_into(buf) == 5
    assert buf[:5] == b"world"
    await client.send(b"abc")
    assert await server.recv_into(buf, 2) == 2
    assert await server.recv(0) == b""
    assert await server.recv(10) == b"c"
    after = io_stats().ops_submitted
    assert after["SEND"] - before.get("SEND", 0) == 3
    assert after["RECV"] - before.get("RECV", 0) == 4  # recv(0) asks no kernel, as the stdlib's


async def test_recv_argument_errors(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    client, server = pair
    with assert_checkpoints(), pytest.raises(ValueError, match="negative buffersize in recv"):
        await server.recv(-1)
    with pytest.raises(TypeError, match="read-write bytes-like object, not bytes"):
        await server.recv_into(b"read-only")
    with pytest.raises(ValueError, match="buffer too small"):
        await server.recv_into(bytearray(4), 10)
    # The socket is still fine.
    await client.send(b"ok")
    assert await server.recv(10) == b"ok"


async def test_partial_send_is_reported(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    client, server = pair
    client.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 65536)
    data = os.urandom(8 << 20)  # far more than the socket buffers hold
    sent = await client.send(data)
    assert 0 < sent < len(data)
    got = bytearray()
    while len(got) < sent:
        got += await server.recv(1 << 20)
    assert bytes(got) == data[:sent]


async def test_recv_on_unconnected_socket_is_enotconn() -> None:
    with trio.socket.socket() as sock:
        with pytest.raises(OSError) as info:
            await sock.recv(10)
        assert info.value.errno == errno.ENOTCONN


async def test_send_after_peer_closed_is_epipe_or_econnreset(
    pair: tuple[trio.socket.SocketType, trio.socket.SocketType],
) -> None:
    client, server = pair
    server.close()
    await trio.sleep(0.01)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for _ in range(10):
            await client.send(b"x" * 1000)
            await trio.sleep(0.01)


async def test_send_after_own_shutdown_is_epipe(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    client, _ = pair
    client.shutdown(stdlib_socket.SHUT_WR)
    assert client.did_shutdown_SHUT_WR
    with pytest.raises(BrokenPipeError):
        await client.send(b"x")


async def test_recv_after_reset_is_econnreset(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    client, server = pair
    await server.send(b"unread")  # close() with unread data sends RST
    await trio.sleep(0.01)
    client.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    with pytest.raises(ConnectionResetError):
        for _ in range(10):
            await server.recv(10)
            await trio.sleep(0.01)


async def test_ops_on_a_closed_socket_are_ebadf() -> None:
    a, b = trio.socket.socketpair()
    b.close()
    a.close()
    for call in (partial(a.recv, 1), partial(a.send, b"x"), partial(a.recv_into, bytearray(1))):
        with assert_checkpoints(), pytest.raises(OSError) as info:
            await call()
        assert info.value.errno == errno.EBADF


async def test_two_receivers_is_busy(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    _, server = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.recv, 10)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.recv(10)
        nursery.cancel_scope.cancel()


async def test_ipv6_echo() -> None:
    client, server = await connected_pair(stdlib_socket.AF_INET6, "::1")
    with client, server:
        await client.send(b"over ipv6")
        assert await server.recv(100) == b"over ipv6"


# ---------------------------------------------------------------- datagrams, msg


@pytest.mark.parametrize(("family", "host"), [(stdlib_socket.AF_INET, "127.0.0.1"), (stdlib_socket.AF_INET6, "::1")])
async def test_udp_sendto_recvfrom(family: int, host: str) -> None:
    a = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
    b = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
    with a, b:
        await a.bind((host, 0))
        await b.bind((host, 0))
        before = io_stats().ops_submitted
        with assert_checkpoints():
            assert await a.sendto(b"datagram", b.getsockname()) == 8
        with assert_checkpoints():
            data, addr = await b.recvfrom(100)
        assert (data, addr) == (b"datagram", a.getsockname())
        assert await a.sendto(b"second", 0, b.getsockname()) == 6
        buf = bytearray(100)
        n, addr = await b.recvfrom_into(buf)
        assert (bytes(buf[:n]), addr) == (b"second", a.getsockname())
        after = io_stats().ops_submitted
        assert after["SENDMSG"] - before.get("SENDMSG", 0) == 2
        assert after["RECVMSG"] - before.get("RECVMSG", 0) == 2
        with pytest.raises(OverflowError):
            await a.sendto(b"x", (host, 99999))


async def test_connected_udp_send_recv() -> None:
    a = trio.socket.socket(type=stdlib_socket.SOCK_DGRAM)
    b = trio.socket.socket(type=stdlib_socket.SOCK_DGRAM)
    with a, b:
        await a.bind((LOCALHOST, 0))
        await b.bind((LOCALHOST, 0))
        await a.connect(b.getsockname())
        await a.send(b"one")
        assert await b.recvfrom(10) == (b"one", a.getsockname())


async def test_sendmsg_recvmsg_with_ancillary_data() -> None:
    # Pass a file descriptor over a unix socketpair: SCM_RIGHTS in the control data.
    a, b = trio.socket.socketpair()
    r, w = os.pipe()
    with a, b:
        fds = array.array("i", [w])
        sent = await a.sendmsg([b"fd", b"!"], [(stdlib_socket.SOL_SOCKET, stdlib_socket.SCM_RIGHTS, fds)])
        assert sent == 3
        data, ancdata, flags, _ = await b.recvmsg(10, stdlib_socket.CMSG_SPACE(4))
        assert data == b"fd!" and flags == 0
        [(level, kind, payload)] = ancdata
        assert (level, kind) == (stdlib_socket.SOL_SOCKET, stdlib_socket.SCM_RIGHTS)
        received_fd = array.array("i", payload)[0]
        os.write(received_fd, b"via passed fd")
        assert os.read(r, 100) == b"via passed fd"
        os.close(received_fd)
        await a.send(b"into")
        buf1, buf2 = bytearray(2), bytearray(10)
        n, ancdata, flags, _ = await b.recvmsg_into([buf1, buf2])
        assert (n, bytes(buf1), bytes(buf2[:2]), ancdata) == (4, b"in", b"to", [])
    os.close(r)
    os.close(w)


# ---------------------------------------------------------------- cancellation and close


async def test_cancelled_recv_loses_nothing(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    client, server = pair
    before = io_stats().ops_submitted.get("ASYNC_CANCEL", 0)
    with trio.move_on_after(0.01) as scope:
        await server.recv(10)
    assert scope.cancelled_caught
    assert io_stats().ops_submitted["ASYNC_CANCEL"] == before + 1
    await client.send(b"after")
    assert await server.recv(10) == b"after"


async def test_cancelled_send_reports_what_was_sent(
    pair: tuple[trio.socket.SocketType, trio.socket.SocketType],
) -> None:
    # Fill the pipe, then a send that blocks is cancelled: what the peer gets is
    # exactly what the send calls reported.
    client, server = pair
    reported = 0
    chunk = b"z" * 100_000
    while True:
        with trio.move_on_after(0.05) as scope:
            reported += await client.send(chunk)
        if scope.cancelled_caught:
            break
    got = 0
    while got < reported:
        with trio.fail_after(2):
            got += len(await server.recv(1 << 20))
    assert got == reported
    with trio.move_on_after(0.05):
        extra = await server.recv(10)
        pytest.fail(f"received {extra!r} that no send reported")


async def test_close_while_recv_is_blocked(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    client, server = pair
    raw_client = stdlib_socket.socket(fileno=os.dup(client.fileno()))
    raw_client.setblocking(True)
    raw_client.settimeout(2)
    async with trio.open_nursery() as nursery:
        errors: list[BaseException] = []

        async def blocked_recv() -> None:
            try:
                await client.recv(10)
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        nursery.start_soon(blocked_recv)
        await trio.testing.wait_all_tasks_blocked()
        client.close()
    assert len(errors) == 1
    raw_client.close()
    # The recv was cancelled before the close: no op pins the socket, so the last
    # close sent a FIN at once.
    await server.send(b"")
    assert await server.recv(10) == b""


async def test_close_while_send_is_blocked(pair: tuple[trio.socket.SocketType, trio.socket.SocketType]) -> None:
    client, _server = pair
    async with trio.open_nursery() as nursery:
        errors: list[BaseException] = []

        async def blocked_send() -> None:
            try:
                while True:
                    await client.send(b"x" * 100_000)
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        nursery.start_soon(blocked_send)
        await trio.testing.wait_all_tasks_blocked()
        client.close()
    assert len(errors) == 1


# ---------------------------------------------------------------- high level


async def test_serve_tcp_and_open_tcp_stream_run_on_the_ring() -> None:
    before = io_stats().ops_submitted

    async def handler(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOCALHOST))
        assert isinstance(listeners[0].socket, UringSocket)
        port = listeners[0].socket.getsockname()[1]
        streams = [await trio.open_tcp_stream(LOCALHOST, port) for _ in range(10)]
        for i, stream in enumerate(streams):
            assert isinstance(stream.socket, UringSocket)
            await stream.send_all(b"message %d" % i)
        for i, stream in enumerate(streams):
            assert await stream.receive_some() == b"message %d" % i
            await stream.aclose()
        nursery.cancel_scope.cancel()
    after = io_stats().ops_submitted
    for op in ("SOCKET", "CONNECT", "ACCEPT", "SEND", "RECV"):
        assert after[op] > before.get(op, 0), op


async def test_socket_stream_conformance() -> None:
    # Trio's own stream conformance checks, on SocketStreams over UringSockets.
    async def stream_maker() -> tuple[trio.SocketStream, trio.SocketStream]:
        a, b = await connected_pair()
        return trio.SocketStream(a), trio.SocketStream(b)

    async def clogged_stream_maker() -> tuple[trio.SocketStream, trio.SocketStream]:
        left, right = await stream_maker()
        for stream in (left, right):
            while True:
                with trio.move_on_after(0.05) as scope:
                    await stream.send_all(b"x" * 65536)
                if scope.cancelled_caught:
                    break
        return left, right

    await trio.testing.check_half_closeable_stream(stream_maker, clogged_stream_maker)


async def test_broken_send_all_releases_the_callers_buffer() -> None:
    # SocketStream.send_all releases its memoryview right after send() returns or
    # raises; a lingering export would make that raise BufferError.
    a, b = await connected_pair()
    stream = trio.SocketStream(a)
    b.close()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(20):
            await stream.send_all(b"x" * 1000)
            await trio.sleep(0.01)
    await stream.aclose()
    gc.collect()


async def test_send_of_a_memoryview_holds_it_exactly_as_long_as_the_kernel_may_read_it(
    pair: tuple[trio.socket.SocketType, trio.socket.SocketType],
) -> None:
    # send(memoryview) has the short path of send(bytes) (Trio's SocketStream.send_all
    # sends memoryview slices). The view is exported to C while the kernel may read
    # it, and let go of as soon as it may not: releasing it fails exactly then.
    client, server = pair
    view = memoryview(bytearray(b"a" * 10))
    assert await client.send(view) == 10  # completed at once
    view.release()  # nothing holds it any more
    assert await server.recv(100) == b"a" * 10

    fill_socket(client._sock)
    view = memoryview(bytearray(b"b" * 1000))
    sent: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append(sent, client.send(view)))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(BufferError):
            view.release()  # the waiting SEND may still read it
        with pytest.raises(trio.BusyResourceError):
            await client.send(memoryview(b"c"))
        while not sent:  # drain: the SEND completes
            server._sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                server._sock.recv(1 << 20)
            await trio.sleep(0.001)
    assert sent == [1000]
    view.release()

    view = memoryview(bytearray(b"d" * 1000))
    fill_socket(client._sock)
    with trio.move_on_after(0.05):
        await client.send(view)  # cancelled while waiting
    await trio.sleep(0.05)  # its CQE (-ECANCELED) has come
    view.release()

    # An error, as Trio's send_all meets it: `with data[n:] as remaining: await
    # sock.send(remaining)` releases the view while the exception (whose frames
    # hold our locals) is still alive.
    server.close()
    await trio.sleep(0.01)
    with pytest.raises(OSError):
        for _ in range(100):
            with memoryview(bytearray(b"e" * 70000)) as remaining:
                await client.send(remaining)


async def _append(results: list[int], coro: Any) -> None:
    results.append(await coro)


async def test_socket_defaults_are_the_stdlibs() -> None:
    # socket.socket's -1 stands for each argument's default: trio_uring.socket takes
    # it the same way (and so do the factory's callers).
    from trio_uring.socket import socket as uring_socket

    with uring_socket(-1, -1, -1) as s:
        assert (s.family, s.type, s.proto) == (stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, 0)
    with uring_socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, -1) as s:
        assert s.proto == 0


def test_cq_smaller_than_sq_is_a_value_error() -> None:
    from trio_uring._ring import Ring

    with pytest.raises(ValueError, match="cq_entries"):
        Ring(64, 32)


async def test_a_buffer_stays_pinned_until_its_ops_cqe(
    pair: tuple[trio.socket.SocketType, trio.socket.SocketType],
) -> None:
    """A recv_into whose task vanishes while its RECV is in flight (as the coroutines
    of an abandoned run are collected) must not let go of the caller's buffer: the
    kernel may still write into it. Held by the op until the CQE, the bytearray stays
    exported (and cannot be resized or freed)."""
    client, server = pair
    buf = bytearray(100)
    coro = server.recv_into(buf)
    coro.send(None)  # runs until it parks: the RECV is in the kernel
    coro.close()  # the task is gone; its op is not
    with pytest.raises(BufferError):
        buf.extend(b"more")
    await trio.sleep(0.05)  # abandoned, the RECV was cancelled: its CQE ends it
    gc.collect()
    buf.extend(b"more")  # let go of now
    await client.send(b"late")
    assert await server.recv(10) == b"late"  # and the cancelled RECV took nothing
