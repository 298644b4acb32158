"""Receives used the way an adversarial user would: the bytes a receive bundle kept
(`FdState.kept`) against sockets closed behind Trio's back, fd numbers reused,
detached fds and concurrent receivers, on the real kernel.

Linux 6.18 goes past a bundle's ``len`` when the bundle filled it exactly (a count
that is a whole number of buffers, such as receive_some() with 16 KiB buffers): it
then appends what is queued. For a surplus at any count, the tests here ask the
kernel for more than the caller did (`overreaching_bundles`): the caller's count
stays the op's ``nbytes``.
"""

from __future__ import annotations

import errno
import gc
import os
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
            assert await b.receive_some(1) == b"t"  # (this socket may take them)
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


# ---------------------------------------------------------------- kept bytes and other receivers


def test_a_receive_between_a_bundle_and_its_task_gets_the_kept_bytes_first() -> None:
    """A bundle's CQE is handled (its bytes are taken from the socket) and its task is
    rescheduled; another task's recv runs first. The bytes the bundle kept came
    before anything still in the socket, so that recv must get them: read in the
    order the receives took them, the stream is whole (as on stock Trio, where each
    recv takes the next bytes when it runs)."""
    data = bytes(range(256)) * 48

    async def one_round() -> bool:
        """Whether the recv ran between the bundle's CQE and its task."""
        driver = current_driver()
        a, b = await stream_pair()
        async with a, b:
            first: list[bytes] = []
            second: list[bytes] = []

            async def parked() -> None:
                first.append(await b.receive_some(10))

            async def other() -> None:
                # Checkpoints until the bundle's CQE is handled (its slot is free);
                # if its task has not run yet: more data, and a recv right then.
                st = driver.fds[b.socket.fileno()]
                while st.slots[0] is not None:
                    await trio.lowlevel.checkpoint()
                if not first:
                    a.socket._sock.send(data[6000:])  # type: ignore[attr-defined]
                    second.append(await b.socket.recv(100_000))

            with overreaching_bundles():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(parked)
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(other)
                    await a.send_all(data[:6000])
            if not second:
                await a.send_all(data[6000:])
            await a.send_eof()
            rest = bytearray()
            while chunk := await b.receive_some():
                rest += chunk
            assert first[0] + b"".join(second) + rest == data
            return bool(second)

    async def main() -> None:
        raced = 0
        for _ in range(40):
            raced += await one_round()
            if raced >= 3:
                return
        raise AssertionError(f"the recv ran before the bundle's task in {raced} of 40 rounds")

    run_in_mode("bundle", main, size=4096)


# ---------------------------------------------------------------- every method, in order


async def _receive_by(method: str, sock: Any, rng: random.Random) -> bytes:
    """One receive of a random size by ``method``; the bytes it consumed."""
    size = rng.choice((1, 7, 256, 1000, 4096, 20_000))
    if method == "recv":
        return bytes(await sock.recv(size))
    if method == "recv_into":
        buf = bytearray(size + 5)
        n = await sock.recv_into(buf, size)
        assert n <= size and buf[size:] == bytes(5)  # nothing past nbytes
        return bytes(buf[:n])
    if method == "recvfrom":
        data, address = await sock.recvfrom(size)
        assert address is None
        return bytes(data)
    if method == "recvfrom_into":
        view = memoryview(bytearray(size))
        n, _ = await sock.recvfrom_into(view)
        return bytes(view[:n])
    if method == "recvmsg":
        data, ancdata, msg_flags, _ = await sock.recvmsg(size, 64)
        assert ancdata == [] and msg_flags == 0
        return bytes(data)
    if method == "recvmsg_into":
        bufs = [bytearray(size // 2), bytearray(size - size // 2)]
        n, ancdata, msg_flags, _ = await sock.recvmsg_into(bufs, 64)
        assert ancdata == [] and msg_flags == 0
        return bytes(b"".join(bufs)[:n])
    # a peek, then a receive of what it saw
    peeked = await sock.recv(size, stdlib_socket.MSG_PEEK)
    got = await sock.recv(len(peeked))
    assert got == peeked
    return bytes(got)


METHODS = ("receive_some", "recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg", "recvmsg_into", "peek")


@pytest.mark.parametrize("seed", range(6))
def test_every_receive_method_reads_the_stream_in_order_with_surplus_kept(seed: int) -> None:
    """Property: receives by random methods and sizes, some parked while the peer
    writes random amounts (bundles that go past their count, so bytes are kept),
    some finding data: the bytes read are the bytes written, in order, and no
    receive returns more than it was asked for."""
    rng = random.Random(seed)

    async def main() -> None:
        a, b = await stream_pair()
        sent = bytearray()
        got = bytearray()
        async with a, b:
            for _ in range(80):
                method = rng.choice(METHODS)
                chunk = rng.randbytes(rng.choice((1, 100, 3000, 9000)))

                async def one(method: str = method) -> None:
                    if method == "receive_some":
                        ask = rng.choice((1, 10, 4096, 65536))
                        data = await b.receive_some(ask)
                        assert len(data) <= ask
                    else:
                        data = await _receive_by(method, b.socket, rng)
                    got.extend(data)

                if len(got) < len(sent) and rng.random() < 0.4:
                    await one()  # bytes kept or queued are there already
                    continue
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(one)
                    await trio.testing.wait_all_tasks_blocked()
                    await a.send_all(chunk)
                    sent.extend(chunk)
            await a.send_eof()
            while data := await b.receive_some():
                got.extend(data)
        assert got == sent

    with overreaching_bundles():
        run_in_mode("bundle", main, size=1024)


# ---------------------------------------------------------------- the self-check, out of fds


def _open_fds() -> set[int]:
    used = set()
    for fd in range(4096):
        try:
            os.fstat(fd)
        except OSError:
            continue
        used.add(fd)
    return used


def test_a_self_check_that_gets_its_ring_but_no_sockets_leaves_nothing_open() -> None:
    """RLIMIT_NOFILE leaves room for one more fd: the self-check's private ring opens,
    its TCP pair cannot (EMFILE). The check fails (select), and closes its ring:
    a process out of fds must not lose one more to a check."""
    import resource

    before = _open_fds()
    free = [fd for fd in range(4096) if fd not in before]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (free[1], hard))  # just free[0] left
    try:
        with pytest.raises(OSError) as info:
            _recvmodes._receive_known_stream("bundle")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert info.value.errno == errno.EMFILE
    assert _open_fds() == before


# ---------------------------------------------------------------- MSG_TRUNC on a stream


@pytest.mark.parametrize("mode", ["select", "bundle"])
@pytest.mark.parametrize("when", ["at once", "waiting"])
def test_msg_trunc_on_a_stream_never_returns_another_connections_bytes(mode: str, when: str) -> None:
    """recv(n, MSG_TRUNC) on TCP: the kernel discards n bytes and writes nothing into
    the buffer. What comes back must not be a buffer another connection's bytes went
    through (the scratch buffer, a provided buffer): stock Trio returns a fresh
    buffer; we return zeros."""
    secret = b"SECRET of another connection " * 8

    async def main() -> None:
        (a, a_peer), (b, b_peer) = _tcp_pair(), _tcp_pair()
        with a, a_peer, b, b_peer:
            other = trio.socket.from_stdlib_socket(a)
            sock = trio.socket.from_stdlib_socket(b)
            # The other connection's bytes go through the same buffers: the scratch
            # buffer (received at once) and the only provided buffer (waiting).
            a_peer.send(secret)
            await trio.sleep(0.01)
            assert await other.recv(len(secret)) == secret
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other.recv, len(secret))
                await trio.testing.wait_all_tasks_blocked()
                a_peer.send(secret)
            if when == "at once":
                b_peer.send(b"." * 100)
                await trio.sleep(0.01)
                got = await sock.recv(100, stdlib_socket.MSG_TRUNC)
            else:
                async with trio.open_nursery() as nursery:

                    async def later() -> None:
                        await trio.testing.wait_all_tasks_blocked()
                        b_peer.send(b"." * 100)

                    nursery.start_soon(later)
                    got = await sock.recv(100, stdlib_socket.MSG_TRUNC)
            assert got == bytes(100)

    run_in_mode(mode, main, buffers=1, size=len(secret))


# ---------------------------------------------------------------- kept bytes and the end of a run


@pytest.mark.parametrize("then", ["the same socket", "a new socket on the number"])
def test_kept_bytes_outlive_their_run_with_their_socket(then: str) -> None:
    """A socket outlives the run in which a bundle kept bytes for it (a stdlib socket
    wrapped in two runs): the next run's first receive on it gets them, in order
    (they were lost with the run's FdStates); a new socket that took the number
    between the runs never does."""
    a, b = _tcp_pair()
    data = random.Random(7).randbytes(20_000)
    got = bytearray()

    async def first() -> None:
        sock = trio.socket.from_stdlib_socket(b)
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                got.extend(await sock.recv(100))

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            a.sendall(data)
        assert current_driver().fds[b.fileno()].kept  # a surplus is kept when the run ends

    with a:
        with overreaching_bundles():
            run_in_mode("bundle", first)
        if then == "the same socket":
            a.shutdown(stdlib_socket.SHUT_WR)

            async def second() -> None:
                sock = trio.socket.from_stdlib_socket(b)
                while chunk := await sock.recv(65536):
                    got.extend(chunk)

            run_in_mode("bundle", second)
            b.close()
            assert got == data
        else:
            fresh, peer = _tcp_pair()
            number = b.fileno()
            b.close()
            reuse = Reuse(number, fresh, peer)

            async def second() -> None:
                new = trio.socket.from_stdlib_socket(reuse.sock)
                assert await new.recv(100) == B_DATA

            try:
                run_in_mode("bundle", second)
            finally:
                reuse.close()
