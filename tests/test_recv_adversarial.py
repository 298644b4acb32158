"""Receives used the way an adversarial user would: the bytes a receive bundle kept
(`FdState.kept`) against sockets closed behind Trio's back, fd numbers reused,
detached fds and concurrent receivers, on the real kernel.

Linux 6.18 keeps a bundle within its ``len`` in these scenarios, so a bundle that
goes past it (as the kernel may: it appends what is queued when it filled its
buffers) is made here by asking the kernel for more than the caller did
(`overreaching_bundles`): the caller's count stays the op's ``nbytes``.
"""

from __future__ import annotations

import gc
import os
import socket as stdlib_socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring._ops import RecvBundle
from trio_uring._ring_cffi import ffi

from .test_close_reuse import B_DATA, Reuse, _tcp_pair, current_driver
from .test_recv_modes import _no_mode_from_environment, run_in_mode, stream_pair  # noqa: F401

pytestmark = pytest.mark.timeout(30)

OVERREACH = 4096  # what an overreaching bundle asks the kernel for


@contextmanager
def overreaching_bundles() -> Iterator[None]:
    """Receive bundles that get up to OVERREACH bytes whatever their caller asked
    for: the surplus a kernel that appends past ``len`` leaves, made on demand."""
    real = RecvBundle.write

    def write(self: RecvBundle, w: Any, user_data: int) -> int:
        length = max(self.nbytes, OVERREACH)
        return w.recv(
            self.fd, ffi.NULL, length, self.msg_flags, self.sqe_flags, self.buffers.bgid, self.ioprio, user_data
        )

    RecvBundle.write = write  # type: ignore[method-assign]
    try:
        yield
    finally:
        RecvBundle.write = real  # type: ignore[method-assign]


async def receive_with_surplus(peer: trio.SocketStream, stream: trio.SocketStream, data: bytes, ask: int) -> bytes:
    """A receive_some(ask) parked while ``peer`` sends ``data``: it returns the
    first ``ask`` bytes; a bundle keeps the rest."""
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            got.append(await stream.receive_some(ask))

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await peer.send_all(data)
    assert got[0] == data[:ask]
    return got[0]


# ---------------------------------------------------------------- kept bytes and fd numbers


def _drop_unclosed(stream: list[trio.SocketStream], how: str) -> int:
    """Close the fd of the only stream in ``stream`` the ways Trio does not see (no
    notify_closing); its number."""
    sock = stream.pop().socket
    number = sock.fileno()
    if how == "garbage-collected":
        del sock
        gc.collect()
    elif how == "closed-as-stdlib-socket":
        sock._sock.close()  # type: ignore[attr-defined]
    else:
        os.close(sock.detach())
    return number


@pytest.mark.parametrize("how", ["garbage-collected", "closed-as-stdlib-socket", "detached-and-closed"])
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_kept_bytes_never_reach_the_next_socket_on_the_number(how: str) -> None:
    """A socket whose bundle kept bytes is closed without Trio knowing (its FdState
    stays behind); a new connection gets its number: its first receive is its own
    bytes, never the old connection's (they were the next socket's before)."""

    async def main() -> None:
        a, b = await stream_pair()
        async with a:
            with overreaching_bundles():
                await receive_with_surplus(a, b, b"old connection's bytes " * 20, 10)
            assert current_driver().fds[b.socket.fileno()].kept  # a surplus is kept
            fresh, peer = _tcp_pair()  # (before the number is free: Reuse moves it there)
            streams = [b]
            del b
            number = _drop_unclosed(streams, how)
            reuse = Reuse(number, fresh, peer)
            try:
                new = trio.socket.from_stdlib_socket(reuse.sock)
                assert await new.recv(100) == B_DATA
                new.detach()
            finally:
                reuse.close()

    run_in_mode("bundle", main)


def test_kept_bytes_follow_a_detached_fd_into_its_new_socket() -> None:
    """The same file under a new socket object (detach, then wrap the fd again): the
    kept bytes are still the next bytes of its stream, as with stock Trio, where
    they would still be in the kernel."""

    async def main() -> None:
        a, b = await stream_pair()
        data = bytes(range(256)) * 8
        async with a:
            with overreaching_bundles():
                await receive_with_surplus(a, b, data, 10)
            fd = b.socket.detach()
            again = trio.SocketStream(trio.socket.from_stdlib_socket(stdlib_socket.socket(fileno=fd)))
            async with again:
                await a.send_eof()
                got = bytearray(data[:10])
                while chunk := await again.receive_some(333):
                    got += chunk
                assert got == data

    run_in_mode("bundle", main)


# ---------------------------------------------------------------- receives that never succeed


def run_stock(fn: Callable[[], Awaitable[None]]) -> None:
    trio_uring.uninstall()
    try:
        trio.run(fn)
    finally:
        trio_uring.install()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("backend", ["stock", "select", "bundle"])
@pytest.mark.parametrize("method", ["recv", "recvfrom", "recvmsg"])
def test_a_receive_that_fails_at_once_every_time_waits_until_cancelled(backend: str, method: str) -> None:
    """recv(n, MSG_ERRQUEUE) on a TCP socket with data queued and nothing in its error
    queue: every try says EAGAIN at once, and the socket stays readable. Trio waits
    and tries again until cancelled; so must a waiting op that the kernel completes
    with -EAGAIN (no BlockingIOError), and its cancel must land although the ASYNC_CANCEL
    never finds the op in flight."""

    async def main() -> None:
        a, b = await stream_pair()
        async with a, b:
            await a.send_all(b"queued")
            with trio.move_on_after(0.2) as scope:
                await getattr(b.socket, method)(100, *([0] if method == "recvmsg" else []), stdlib_socket.MSG_ERRQUEUE)
            assert scope.cancelled_caught
            assert await b.receive_some() == b"queued"

    if backend == "stock":
        run_stock(main)
    else:
        run_in_mode(backend, main)


# ---------------------------------------------------------------- arguments, as the stdlib


ARGUMENTS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "recv(2**31)": lambda s: s.recv(2**31),
    "recv_into(buf, None)": lambda s: s.recv_into(bytearray(10), None),
    "recv_into(buf, 2**63)": lambda s: s.recv_into(bytearray(10), 2**63),
    "recvfrom_into(buf, None)": lambda s: s.recvfrom_into(bytearray(10), None),
    "recvfrom_into(buf, 2**63)": lambda s: s.recvfrom_into(bytearray(10), 2**63),
    "recvfrom_into(bytes)": lambda s: s.recvfrom_into(b"0123456789"),
    "recvfrom_into(read-only view, 17)": lambda s: s.recvfrom_into(memoryview(b"0123456789"), 17),
    "recvfrom_into(non-contiguous)": lambda s: s.recvfrom_into(memoryview(bytearray(20))[::2]),
    "recvmsg(None)": lambda s: s.recvmsg(None),
}


async def _outcomes() -> dict[str, object]:
    outcomes: dict[str, object] = {}
    for name, call in ARGUMENTS.items():
        a, b = stdlib_socket.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
        with a, trio.socket.from_stdlib_socket(b) as sock:
            a.send(b"one datagram")
            try:
                outcomes[name] = await call(sock)
            except Exception as exc:
                outcomes[name] = (type(exc), str(exc))
    return outcomes


@pytest.mark.parametrize("mode", ["select", "bundle"])
def test_receive_arguments_get_the_stdlib_results_and_errors(mode: str) -> None:
    """Sizes and buffers the stdlib takes or refuses in a particular way (a size over
    the kernel's largest receive, None, 2**63, read-only and non-contiguous buffers):
    the same result, or the same exception and message, as on stock Trio."""
    stock: dict[str, object] = {}
    uring: dict[str, object] = {}

    async def main(into: dict[str, object]) -> None:
        into.update(await _outcomes())

    run_stock(lambda: main(stock))
    run_in_mode(mode, lambda: main(uring))
    assert uring == stock
