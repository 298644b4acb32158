"""Datagram receives: whole datagrams at every size, recv(0), MSG_TRUNC without over-reads.

A datagram receive must return the datagram whole (up to the size asked for),
whether it was already there (the immediate MSG_DONTWAIT receive) or arrived while
the receive waited in the kernel, and however its size compares with the
provided-buffer size that stream receives use (16 KiB). With MSG_TRUNC the kernel
reports the datagram's real length, which may be more than the buffer holds: never
copy more than the buffer holds.
"""

from __future__ import annotations

import socket as stdlib_socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring

LOCALHOST = "127.0.0.1"
BUFFER = trio_uring.UringIOManager.recv_buffer_size
SIZES = [1, BUFFER - 1, BUFFER, BUFFER + 1, 40000, 65507]

pytestmark = pytest.mark.timeout(20)


def payload(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


@pytest.fixture(params=["udp", "seqpacket"])
async def dgram_pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[trio.socket.SocketType, Any]]:
    if request.param == "udp":
        a = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        await a.bind((LOCALHOST, 0))
        b = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        b.connect(a.getsockname())
        a.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 1 << 20)
    else:
        a, b = trio.socket.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_SEQPACKET)
        b = b._sock  # type: ignore[attr-defined]
        b.setblocking(True)
        b.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 1 << 20)
    with a, b:
        yield a, b


async def received_while_waiting(receive: Callable[[], Awaitable[Any]], send: Callable[[], object]) -> Any:
    """Start ``receive`` so that it waits in the kernel, then ``send``."""
    result: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def receiver() -> None:
            result.append(await receive())

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        send()
    return result[0]


@pytest.mark.parametrize("size", SIZES)
async def test_a_datagram_comes_whole_when_it_was_there_already(
    dgram_pair: tuple[trio.socket.SocketType, Any], size: int
) -> None:
    a, b = dgram_pair
    b.send(payload(size))
    await trio.sleep(0.01)
    assert await a.recv(65536) == payload(size)


@pytest.mark.parametrize("size", SIZES)
async def test_a_datagram_comes_whole_when_the_receive_waited(
    dgram_pair: tuple[trio.socket.SocketType, Any], size: int
) -> None:
    a, b = dgram_pair
    data = await received_while_waiting(lambda: a.recv(65536), lambda: b.send(payload(size)))
    assert data == payload(size)


@pytest.mark.parametrize("method", ["recvfrom", "recvmsg"])
async def test_datagram_recvfrom_and_recvmsg_waiting_get_it_whole(
    dgram_pair: tuple[trio.socket.SocketType, Any], method: str
) -> None:
    a, b = dgram_pair
    call = (lambda: a.recvfrom(65536)) if method == "recvfrom" else (lambda: a.recvmsg(65536))
    got = await received_while_waiting(call, lambda: b.send(payload(40000)))
    assert got[0] == payload(40000)


async def test_a_short_read_of_a_datagram_keeps_what_fits(dgram_pair: tuple[trio.socket.SocketType, Any]) -> None:
    a, b = dgram_pair
    got = await received_while_waiting(lambda: a.recv(100), lambda: b.send(payload(40000)))
    assert got == payload(100)


async def test_recv_zero_returns_at_once_and_takes_nothing(dgram_pair: tuple[trio.socket.SocketType, Any]) -> None:
    # The stdlib's recv(0) and recv_into(<empty>) return at once without a system
    # call, datagram queued or not; recvfrom(0) and recvmsg(0) ask the kernel, which
    # waits for a datagram and takes it (the stdlib reports it cut: MSG_TRUNC).
    a, b = dgram_pair
    with trio.fail_after(1):
        assert await a.recv(0) == b""
        assert await a.recv_into(bytearray()) == 0
    b.send(b"kept")
    await trio.sleep(0.01)
    assert await a.recv(0) == b""
    assert await a.recv(100) == b"kept"
    got = await received_while_waiting(lambda: a.recvmsg(0), lambda: b.send(b"taken"))
    assert got[0] == b"" and got[2] & stdlib_socket.MSG_TRUNC
    b.send(b"after")
    await trio.sleep(0.01)
    assert await a.recv(100) == b"after"


@pytest.mark.parametrize("waiting", [False, True], ids=["there", "waiting"])
async def test_msg_trunc_never_copies_more_than_asked_for(
    dgram_pair: tuple[trio.socket.SocketType, Any], waiting: bool
) -> None:
    # The stdlib returns the datagram's full length from recv(n, MSG_TRUNC), padded
    # with whatever memory follows its n-byte buffer; we return the n bytes received.
    a, b = dgram_pair
    data = payload(60000)
    if waiting:
        got = await received_while_waiting(lambda: a.recv(10, stdlib_socket.MSG_TRUNC), lambda: b.send(data))
    else:
        b.send(data)
        await trio.sleep(0.01)
        got = await a.recv(10, stdlib_socket.MSG_TRUNC)
    assert got == data[:10]


@pytest.mark.parametrize("waiting", [False, True], ids=["there", "waiting"])
async def test_msg_trunc_recv_into_reports_the_real_length(
    dgram_pair: tuple[trio.socket.SocketType, Any], waiting: bool
) -> None:
    a, b = dgram_pair
    data = payload(60000)
    buf = bytearray(16)
    guard = bytearray(b"\xee" * 16)
    view = memoryview(buf)[:10]
    if waiting:
        n = await received_while_waiting(lambda: a.recv_into(view, 0, stdlib_socket.MSG_TRUNC), lambda: b.send(data))
    else:
        b.send(data)
        await trio.sleep(0.01)
        n = await a.recv_into(view, 0, stdlib_socket.MSG_TRUNC)
    assert n == len(data)  # as recv_into(2) with MSG_TRUNC says, and the stdlib returns
    assert buf[:10] == data[:10]
    assert buf[10:] == bytes(6)  # nothing written past the 10 bytes given
    assert guard == b"\xee" * 16


async def test_msg_trunc_recvmsg_flags_the_cut(dgram_pair: tuple[trio.socket.SocketType, Any]) -> None:
    a, b = dgram_pair
    got = await received_while_waiting(lambda: a.recvmsg(10), lambda: b.send(payload(1000)))
    data, _, flags, _ = got
    assert data == payload(10)
    assert flags & stdlib_socket.MSG_TRUNC


def test_datagram_results_match_stock_trio(stock_trio: None) -> None:
    """The same datagram receives on stock Trio and on io_uring give the same results
    (MSG_TRUNC with recv/recvfrom aside: there the stdlib over-reads)."""

    async def scenario() -> list[object]:
        a = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        await a.bind((LOCALHOST, 0))
        b = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        b.connect(a.getsockname())
        out: list[object] = []
        with a, b:
            for size in SIZES:
                out.append(await received_while_waiting(lambda: a.recv(65536), lambda s=size: b.send(payload(s))))
            out.append(await a.recv(0))
            got = await received_while_waiting(lambda: a.recvfrom(0), lambda: b.send(b"taken"))
            out.append(got[0])
            buf = bytearray(10)
            out.append(
                await received_while_waiting(
                    lambda: a.recv_into(buf, 0, stdlib_socket.MSG_TRUNC), lambda: b.send(payload(500))
                )
            )
            out.append(bytes(buf))
            msg = await received_while_waiting(lambda: a.recvmsg(10), lambda: b.send(payload(500)))
            out.append((msg[0], msg[2]))
        return out

    assert trio_uring.run(scenario) == trio.run(scenario)
