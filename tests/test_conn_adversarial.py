"""Socket creation, addresses and connections as an adversarial user meets them:
each compared with what the stdlib (so stock Trio) does."""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import assert_checkpoints

import trio_uring

LOCALHOST = "127.0.0.1"


def outcome(call: Callable[[], Any]) -> tuple[str, str]:
    try:
        result = call()
    except Exception as exc:
        return type(exc).__name__, str(exc)
    if isinstance(result, stdlib_socket.socket):
        result.close()
    return "ok", ""


@pytest.mark.parametrize(
    "args",
    [
        ("x",),
        (2.0,),
        (stdlib_socket.AF_INET, "x"),
        (stdlib_socket.AF_INET, 2**40),  # cut to 32 bits it was type 0: OSError ESOCKTNOSUPPORT
        (stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, 2**32 + 6),
        (2**31,),
        (-(2**31) - 1,),
    ],
)
async def test_socket_arguments_are_c_ints_as_the_stdlibs(args: tuple[Any, ...]) -> None:
    """IORING_OP_SOCKET's fields are wider than socket(2)'s C ints: an argument out
    of range must be the stdlib's OverflowError, not a number cut to size."""
    expected = outcome(lambda: stdlib_socket.socket(*args))
    assert expected[0] in ("TypeError", "OverflowError")
    assert outcome(lambda: trio.socket.socket(*args)) == expected
    with assert_checkpoints(), pytest.raises(Exception) as info:
        await trio_uring.socket.socket_async(*args)
    assert (type(info.value).__name__, str(info.value)) == expected


async def test_a_refused_recvfrom_into_lets_go_of_the_callers_buffer() -> None:
    udp = trio.socket.socket(type=stdlib_socket.SOCK_DGRAM)
    with udp:
        await udp.bind((LOCALHOST, 0))
        buf = bytearray(4)
        with pytest.raises(ValueError, match="nbytes is greater") as info:
            await udp.recvfrom_into(buf, 10)
        buf.extend(b"more")  # BufferError while the traceback kept a view of it exported
        del info


async def test_an_ipv6_address_is_read_as_the_stdlib_reads_it() -> None:
    """flowinfo and scope_id are the stdlib's "I" (any int, cut to 32 bits): what it
    sends to, we send to; what it refuses, we refuse with its words."""
    receiver = trio.socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM)
    sender = trio.socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM)
    stdlib_sender = stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM)
    with receiver, sender, stdlib_sender:
        await receiver.bind(("::1", 0))
        port = receiver.getsockname()[1]
        for extra in [(2**32,), (0, 2**32 + 1), (0, -1), (0, 2**64), (-1,), ("x",), (0, "x"), (1.0,)]:
            address = ("::1", port, *extra)
            expected = outcome(lambda: stdlib_sender.sendto(b"x", address))  # noqa: B023
            try:
                await sender.sendto(b"x", address)
                got = ("ok", "")
            except Exception as exc:
                got = (type(exc).__name__, str(exc))
            assert got == expected, address
        assert stdlib_sender.sendto(b"!", ("::1", port)) == 1
        with trio.fail_after(5):
            while await receiver.recv(10) != b"!":  # every datagram the stdlib sent, we sent
                pass


async def test_an_af_unix_path_with_undecodable_bytes(tmp_path: Path) -> None:
    """A str path is the stdlib's os.fsencode of it (surrogateescape): the name
    os.listdir returns for a file whose name is not UTF-8 connects to that file."""
    raw = os.fsencode(tmp_path) + b"/sock-\xff"
    server = stdlib_socket.socket(stdlib_socket.AF_UNIX)
    with server:
        server.bind(raw)
        server.listen()
        (name,) = os.listdir(tmp_path)
        assert name == "sock-\udcff"
        client = trio.socket.socket(stdlib_socket.AF_UNIX)
        with client:
            await client.connect(str(tmp_path / name))
            assert client.getpeername() == os.fsdecode(raw)
            datagram = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
            with datagram, pytest.raises(OSError) as info:
                await datagram.sendto(b"x", str(tmp_path / name))  # reaches the stream socket
            assert info.value.errno == errno.EPROTOTYPE  # (the file was found)


async def test_a_detached_listener_leaves_the_new_owner_its_connections() -> None:
    """detach() hands the fd over. The multishot ACCEPT an earlier accept() armed
    must stop before detach returns (the new owner may accept without our run
    entering the kernel again); a connection it had queued ahead is closed, not kept."""
    listener = trio.socket.socket()
    await listener.bind((LOCALHOST, 0))
    listener.listen()
    address = listener.getsockname()
    with stdlib_socket.create_connection(address):
        accepted, _ = await listener.accept()  # arms the multishot
        accepted.close()
    queued = stdlib_socket.create_connection(address)
    await trio.sleep(0.05)  # accepted ahead, into the queue
    with queued, stdlib_socket.socket(fileno=listener.detach()) as owner:
        owner.settimeout(2)
        for _ in range(3):  # no checkpoint: the multishot would take them in our syscalls
            with stdlib_socket.create_connection(address):
                conn, _ = owner.accept()
                conn.close()
        queued.settimeout(2)
        assert queued.recv(1) == b""  # closed by us: nobody could accept it any more


async def _queue_two_and_reset_one() -> tuple[trio.socket.SocketType, list[stdlib_socket.socket]]:
    listener = trio.socket.socket()
    await listener.bind((LOCALHOST, 0))
    listener.listen()
    clients = [stdlib_socket.create_connection(listener.getsockname()) for _ in range(3)]
    conn, _ = await listener.accept()  # arms the multishot, which takes the other two
    conn.close()
    await trio.sleep(0.05)
    clients[1].setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
    clients[1].close()  # a reset, once queued: its address can no longer be read
    await trio.sleep(0.05)
    return listener, clients


async def _serve_one(listener: trio.socket.SocketType) -> Any:
    with trio.fail_after(5):
        stream = await trio.SocketListener(listener).accept()
    with stream.socket:
        return stream.socket.getpeername()


def test_a_later_stock_run_skips_a_queued_connection_whose_peer_is_gone(stock_trio: None) -> None:
    """Connections an io_uring run queued go to the listener's next accept() in a
    stock run. One reset meanwhile is skipped, as in a run on io_uring: its
    getpeername's ENOTCONN is no error SocketListener.accept expects (stock Trio's
    accept(2) says ECONNABORTED, which it ignores), so serve_listeners would die."""
    listener, clients = trio_uring.run(_queue_two_and_reset_one)
    try:
        assert trio.run(_serve_one, listener) == clients[2].getsockname()
    finally:
        trio.run(_close, listener)
        for client in clients:
            client.close()


async def _close(sock: trio.socket.SocketType) -> None:
    sock.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["socket", "listener"])
def test_a_listener_shared_by_runs_in_two_threads(how: str) -> None:
    """A listening socket shared by io_uring runs in two threads, as stock Trio
    allows: the run whose accept() armed the queue keeps it; the other accepts as
    stock Trio does. (Taking the queue over left the owner's parked accept()
    asleep for good, with its connections queued, or woke the other run's task
    from the owner's thread.)"""
    shared: list[trio.socket.SocketType] = []
    parked = threading.Event()
    other_done = threading.Event()
    clients: list[stdlib_socket.socket] = []
    owner_got: list[object] = []
    other_got: list[object] = []

    async def owner() -> None:
        listener = trio.socket.socket()
        await listener.bind((LOCALHOST, 0))
        listener.listen()
        shared.append(listener)
        with listener:
            async with trio.open_nursery() as nursery:

                async def accept_forever() -> None:
                    while True:
                        owner_got.append(await _accept_peer(listener, how))

                nursery.start_soon(accept_forever)
                await trio.testing.wait_all_tasks_blocked()
                parked.set()  # parked in accept(): the multishot is armed
                await trio.to_thread.run_sync(other_done.wait)
                clients.append(stdlib_socket.create_connection(listener.getsockname()))
                with trio.fail_after(5):
                    while len(owner_got) + len(other_got) < len(clients):
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    async def other() -> None:
        listener = shared[0]
        clients.append(stdlib_socket.create_connection(listener.getsockname()))
        with trio.move_on_after(0.5):  # the owner's multishot may take it first
            other_got.append(await _accept_peer(listener, how))

    thread = threading.Thread(target=lambda: trio_uring.run(owner))
    thread.start()
    try:
        assert parked.wait(10)
        trio_uring.run(other)
    finally:
        other_done.set()
        thread.join(20)
        names = sorted(str(client.getsockname()) for client in clients)
        for client in clients:
            client.close()
    assert not thread.is_alive()
    assert sorted(map(str, owner_got + other_got)) == names


async def _accept_peer(listener: trio.socket.SocketType, how: str) -> Any:
    if how == "socket":
        conn, peer = await listener.accept()
        with conn:
            return peer
    stream = await trio.SocketListener(listener).accept()
    with stream.socket:
        return stream.socket.getpeername()
