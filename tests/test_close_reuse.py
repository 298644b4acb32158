"""Close and reuse: after a socket is closed, nothing reaches the kernel for its fd number.

Every op that can wait or retry, tried the way a busy server meets it: the op is
parked in the kernel (or between two of its SQEs), another task closes the socket,
and a new socket takes the fd number at once (``os.dup2`` onto it: the same thing a
new connection accepted in that tick would do). The old socket's call must end as
Trio ends it (ClosedResourceError), and nothing may reach or leave the new socket:
no byte sent to its peer, no byte taken from it.

Where an op goes from one SQE to the next (the rest of a send_all, a receive retried
after ENOBUFS, a readiness poll armed again), the close is done at the exact moment
between the two: `between_sqes` wraps the driver's `start` so that the close runs
right before the next SQE would be written. Where the order of two tasks in one
scheduler batch decides (Trio shuffles each batch), the test runs enough trials.
"""

from __future__ import annotations

import array
import errno
import os
import socket as stdlib_socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring._lifecycle import Driver
from trio_uring._ops import Op

from .conftest import fill_socket, run_python

# A misdirected send that parks on the new socket, or a close that is never
# noticed, shows up as a hang: fail it fast.
pytestmark = pytest.mark.timeout(15)

LOCALHOST = "127.0.0.1"
B_DATA = b"data that belongs to the socket that took the number"


class Reuse:
    """A new connection B that took a closed socket's fd number, and B's peer."""

    def __init__(self, number: int, b: stdlib_socket.socket, peer: stdlib_socket.socket) -> None:
        self.peer = peer
        self.peer.setblocking(False)
        self.peer.send(B_DATA)  # waiting for B: nobody else may take it
        os.dup2(b.fileno(), number)  # B's file now has the old socket's number
        b.close()
        self.sock = stdlib_socket.socket(fileno=number)
        self.sock.setblocking(False)

    def assert_untouched(self) -> None:
        """Nothing was sent to B's peer, and B's own data is still all there for B."""
        with pytest.raises(BlockingIOError):
            self.peer.recv(65536)
        assert self.sock.recv(65536) == B_DATA

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


def _tcp_pair() -> tuple[stdlib_socket.socket, stdlib_socket.socket]:
    with stdlib_socket.create_server((LOCALHOST, 0)) as server:
        client = stdlib_socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


def close_and_reuse(sock: trio.socket.SocketType, kind: int = stdlib_socket.SOCK_STREAM) -> Reuse:
    """Close ``sock`` (as another task would) and give its number to a new socket."""
    if kind == stdlib_socket.SOCK_STREAM:
        b, peer = _tcp_pair()
    else:
        b, peer = stdlib_socket.socketpair(stdlib_socket.AF_UNIX, kind)
    number = sock.fileno()
    sock.close()
    return Reuse(number, b, peer)


@contextmanager
def between_sqes(driver: Driver, when: Callable[[Op], bool], action: Callable[[], None]) -> Iterator[list[Op]]:
    """Run ``action`` once, right before the driver writes the SQE of an op for which
    ``when(op)`` is true (an op that waits, `Driver.start`, or one tried at once,
    `Driver.try_now`): the moment between two SQEs of one call."""
    real_start, real_try_now = driver.start, driver.try_now
    seen: list[Op] = []

    def start(op: Op, st: Any) -> None:
        if not seen and when(op):
            seen.append(op)
            action()
        real_start(op, st)

    def try_now(op: Op, st: Any) -> int:
        if not seen and when(op):
            seen.append(op)
            action()
        return real_try_now(op, st)

    driver.start = start  # type: ignore[method-assign]
    driver.try_now = try_now  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del driver.start, driver.try_now


def current_driver() -> Driver:
    stats = trio.lowlevel.current_statistics()
    assert stats.io_statistics.backend == "io_uring"
    from trio._core._run import GLOBAL_RUN_CONTEXT

    driver: Driver = GLOBAL_RUN_CONTEXT.runner.io_manager._driver
    return driver


async def tcp_pair() -> tuple[trio.socket.SocketType, stdlib_socket.socket]:
    """A trio socket (the victim) and its peer, a plain stdlib socket."""
    with stdlib_socket.create_server((LOCALHOST, 0)) as server:
        victim = trio.socket.socket()
        await victim.connect(server.getsockname())
        peer, _ = server.accept()
    peer.setblocking(False)
    return victim, peer


# ---------------------------------------------------------------- parked in the kernel


async def test_send_all_parked_then_closed_sends_nothing_to_the_new_socket() -> None:
    """A send_all parked in its waiting SEND; the SEND's CQE reports the bytes it had
    moved when the close cancelled it; the rest must not go out on the number."""
    victim, peer = await tcp_pair()
    stream = trio_uring.UringSocketStream(victim)
    fill_socket(peer)  # (the peer never reads: the send parks)
    reuse = None
    try:
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await stream.send_all(b"x" * (8 << 20))

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            reuse = close_and_reuse(victim)
        await trio.sleep(0.05)
        reuse.assert_untouched()
    finally:
        peer.close()
        if reuse is not None:
            reuse.close()


@pytest.mark.parametrize("method", ["recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg", "recvmsg_into"])
@pytest.mark.parametrize("kind", [stdlib_socket.SOCK_STREAM, stdlib_socket.SOCK_DGRAM])
async def test_receive_parked_then_closed_takes_nothing_from_the_new_socket(method: str, kind: int) -> None:
    a, a_peer = trio.socket.socketpair(stdlib_socket.AF_UNIX, kind)
    buf = bytearray(1000)
    calls: dict[str, Callable[[], Any]] = {
        "recv": lambda: a.recv(1000),
        "recv_into": lambda: a.recv_into(buf),
        "recvfrom": lambda: a.recvfrom(1000),
        "recvfrom_into": lambda: a.recvfrom_into(buf),
        "recvmsg": lambda: a.recvmsg(1000),
        "recvmsg_into": lambda: a.recvmsg_into([buf]),
    }
    reuse = None
    try:
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await calls[method]()

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            reuse = close_and_reuse(a, kind)
        await trio.sleep(0.05)
        reuse.assert_untouched()
    finally:
        a_peer.close()
        if reuse is not None:
            reuse.close()


@pytest.mark.parametrize("data", [b"late", bytearray(b"late")])  # send(bytes) has a path of its own
async def test_stream_send_parked_then_closed_sends_nothing(data: bytes | bytearray) -> None:
    victim, peer = await tcp_pair()
    try:
        while True:  # fill the connection: the next send has to wait for room
            victim._sock.send(b"f" * 65536)  # type: ignore[attr-defined]
    except BlockingIOError:
        pass
    reuse = None
    try:
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await victim.send(data)

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            reuse = close_and_reuse(victim)
        await trio.sleep(0.05)
        reuse.assert_untouched()
    finally:
        peer.close()
        if reuse is not None:
            reuse.close()


@pytest.mark.parametrize("method", ["send", "sendto", "sendmsg"])
async def test_datagram_send_parked_then_closed_sends_nothing(method: str) -> None:
    a, a_peer = trio.socket.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
    a_peer._sock.bind(b"\0trio-uring-close-reuse-%d" % os.getpid())  # type: ignore[attr-defined]  # (for sendto)
    a.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    # Fill the peer's receive queue so that the next datagram has to wait.
    try:
        while True:
            a._sock.send(b"f" * 512)  # type: ignore[attr-defined]
    except BlockingIOError:
        pass
    calls: dict[str, Callable[[], Any]] = {
        "send": lambda: a.send(b"late"),
        "sendto": lambda: a.sendto(b"late", a_peer.getsockname()),
        "sendmsg": lambda: a.sendmsg([b"late"]),
    }
    reuse = None
    try:
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await calls[method]()

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            reuse = close_and_reuse(a, stdlib_socket.SOCK_DGRAM)
        a_peer.close()  # frees the queue: a misdirected datagram would now go out
        await trio.sleep(0.05)
        reuse.assert_untouched()
    finally:
        a_peer.close()
        if reuse is not None:
            reuse.close()


async def test_accept_parked_then_closed_takes_no_connection_of_the_new_listener() -> None:
    listener = trio.socket.socket()
    await listener.bind((LOCALHOST, 0))
    listener.listen(16)
    number = listener.fileno()
    new_listener = None
    try:
        async with trio.open_nursery() as nursery:

            async def acceptor() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await listener.accept()

            nursery.start_soon(acceptor)
            await trio.testing.wait_all_tasks_blocked()
            fresh = stdlib_socket.create_server((LOCALHOST, 0))
            listener.close()
            os.dup2(fresh.fileno(), number)
            fresh.close()
            new_listener = stdlib_socket.socket(fileno=number)
        with stdlib_socket.create_connection(new_listener.getsockname()):
            await trio.sleep(0.05)
            new_listener.settimeout(1)
            conn, _ = new_listener.accept()  # the connection is the new listener's
            conn.close()
    finally:
        if new_listener is not None:
            new_listener.close()


async def test_connect_parked_then_closed_connects_nothing() -> None:
    # A listener whose backlog is full: a new connect waits (its SYN is dropped).
    with stdlib_socket.socket() as full:
        full.bind((LOCALHOST, 0))
        full.listen(0)
        queued = [stdlib_socket.create_connection(full.getsockname(), timeout=5)]  # the one slot
        victim = trio.socket.socket()
        reuse = None
        try:
            async with trio.open_nursery() as nursery:

                async def connector() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await victim.connect(full.getsockname())

                nursery.start_soon(connector)
                await trio.testing.wait_all_tasks_blocked()
                reuse = close_and_reuse(victim)
            await trio.sleep(0.05)
            reuse.assert_untouched()
        finally:
            for q in queued:
                q.close()
            if reuse is not None:
                reuse.close()


@pytest.mark.parametrize("direction", ["readable", "writable"])
async def test_readiness_wait_parked_then_closed(direction: str) -> None:
    victim, peer = await tcp_pair()
    if direction == "writable":
        fill_socket(victim._sock)  # type: ignore[attr-defined]
    reuse = None
    try:
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    if direction == "readable":
                        await trio.lowlevel.wait_readable(victim)
                    else:
                        await victim.wait_writable()

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            reuse = close_and_reuse(victim)
        reuse.assert_untouched()
    finally:
        peer.close()
        if reuse is not None:
            reuse.close()


# ---------------------------------------------------------------- between two SQEs of one call


async def test_rest_of_send_all_after_a_close_goes_nowhere() -> None:
    """The close lands between two SENDs of one send_all (after the first moved
    some bytes): the second must be refused, not sent to the new socket."""
    victim, peer = await tcp_pair()
    stream = trio_uring.UringSocketStream(victim)
    driver = current_driver()
    box: list[Reuse] = []
    try:
        with between_sqes(
            driver,
            lambda op: type(op).__name__ == "Send" and op.offset > 0,  # type: ignore[attr-defined]
            lambda: box.append(close_and_reuse(victim)),
        ) as seen:
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await stream.send_all(b"x" * (8 << 20))

                nursery.start_soon(sender)
                # Drain the peer until the close has happened.
                while not seen:
                    await trio.sleep(0.001)
                    try:
                        while peer.recv(1 << 20):
                            pass
                    except BlockingIOError:
                        pass
        assert seen
        await trio.sleep(0.05)
        box[0].assert_untouched()
    finally:
        peer.close()
        for r in box:
            r.close()


@pytest.mark.parametrize("method", ["send", "sendmsg", "sendmsg(SCM_RIGHTS)"])
async def test_close_between_a_datagram_sends_poll_and_its_retry(method: str) -> None:
    """A datagram send waited for room (its POLL_ADD); room came, and in that tick,
    before the send was tried again, another task closed the socket and a new socket
    took the number. The retry must be refused: no datagram, and no passed fd, may
    reach the new socket's peer."""
    a, a_peer = trio.socket.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
    a.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    try:
        while True:  # the next datagram has to wait
            a._sock.send(b"f" * 512)  # type: ignore[attr-defined]
    except BlockingIOError:
        pass
    r, w = os.pipe()
    rights = [(stdlib_socket.SOL_SOCKET, stdlib_socket.SCM_RIGHTS, array.array("i", [r]).tobytes())]
    calls: dict[str, Callable[[], Any]] = {
        "send": lambda: a.send(b"late"),
        "sendmsg": lambda: a.sendmsg([b"late"]),
        "sendmsg(SCM_RIGHTS)": lambda: a.sendmsg([b"late"], rights),
    }
    box: list[Reuse] = []
    try:
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await calls[method]()

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            # The sender waits in its poll: the next attempt is the retry.
            with between_sqes(
                current_driver(), lambda op: True, lambda: box.append(close_and_reuse(a, stdlib_socket.SOCK_DGRAM))
            ) as seen:
                try:
                    while True:  # room: the poll completes
                        a_peer._sock.recv(65536)  # type: ignore[attr-defined]
                except BlockingIOError:
                    pass
                with trio.fail_after(5):
                    while not seen:
                        await trio.sleep(0.001)
        a_peer.close()  # a misdirected datagram would now go out
        await trio.sleep(0.05)
        box[0].assert_untouched()
    finally:
        a.close()
        a_peer.close()
        os.close(r)
        os.close(w)
        for reuse in box:
            reuse.close()


class _OneBuffer(trio_uring.UringIOManager):
    recv_buffers = 1
    recv_mode = "select"  # the scenario counts RecvSelect retries


async def _enobufs_retry_scenario() -> None:
    # Two stream receives wait with one provided buffer between them; data reaches
    # both in one kernel pass: one gets the buffer, the other -ENOBUFS and retries.
    # The close lands right before the retry's SQE.
    driver = current_driver()
    pairs = [await tcp_pair() for _ in range(2)]
    streams = [trio_uring.UringSocketStream(sock) for sock, _ in pairs]
    box: list[Reuse] = []
    outcomes: list[object] = []

    def close_the_retrier() -> None:
        retrier = next(st for st in streams if st.socket.fileno() == retried[0].fd)
        box.append(close_and_reuse(retrier.socket))

    retried: list[Op] = []
    started: set[int] = set()

    def is_retry(op: Op) -> bool:
        if type(op).__name__ != "RecvSelect":
            return False
        if id(op) in started:
            retried.append(op)
            return True
        started.add(id(op))
        return False

    with between_sqes(driver, is_retry, close_the_retrier):
        async with trio.open_nursery() as nursery:

            async def receive(stream: trio_uring.UringSocketStream) -> None:
                try:
                    outcomes.append(await stream.receive_some(1000))
                except trio.ClosedResourceError as exc:
                    outcomes.append(exc)

            for stream in streams:
                nursery.start_soon(receive, stream)
            await trio.testing.wait_all_tasks_blocked()
            for _, peer in pairs:
                peer.send(b"hello")
    try:
        assert retried, "no receive was retried after ENOBUFS"
        assert sum(isinstance(o, trio.ClosedResourceError) for o in outcomes) == 1
        assert b"hello" in outcomes
        await trio.sleep(0.05)
        box[0].assert_untouched()
    finally:
        for sock, peer in pairs:
            sock.close()
            peer.close()
        for r in box:
            r.close()


def test_receive_retried_after_enobufs_refuses_a_closed_fd(monkeypatch: pytest.MonkeyPatch) -> None:
    # select whatever the environment says (TRIO_URING_RECV_MODE overrides recv_mode).
    monkeypatch.delenv("TRIO_URING_RECV_MODE", raising=False)
    trio_uring.uninstall()
    try:
        with _io_manager(_OneBuffer):
            trio.run(_enobufs_retry_scenario)
    finally:
        trio_uring.install()


@contextmanager
def _io_manager(cls: type) -> Iterator[None]:
    import trio._core._run as run_module

    saved = run_module.TheIOManager
    run_module.TheIOManager = cls  # type: ignore[misc]
    try:
        yield
    finally:
        run_module.TheIOManager = saved  # type: ignore[misc]


async def test_readiness_poll_armed_again_after_a_close_is_refused() -> None:
    """A POLLOUT wait woken by EPOLLRDHUP alone (the peer shut down; our send buffer
    is full) arms its poll again; a close in between must end it with
    ClosedResourceError, not arm a poll on the new socket (which is writable)."""
    victim, peer = await tcp_pair()
    fill_socket(victim._sock)  # type: ignore[attr-defined]
    peer.shutdown(stdlib_socket.SHUT_WR)
    driver = current_driver()
    box: list[Reuse] = []
    try:
        with between_sqes(
            driver,
            lambda op: type(op).__name__ == "PollOut" and getattr(op, "multishot", False),
            lambda: box.append(close_and_reuse(victim)),
        ) as seen, pytest.raises(trio.ClosedResourceError):
            await victim.wait_writable()
        assert seen
        box[0].assert_untouched()
    finally:
        peer.close()
        for r in box:
            r.close()


# ---------------------------------------------------------------- SQEs written, not yet submitted


@pytest.mark.parametrize("trial", range(24))
async def test_close_in_the_tick_a_receive_was_written(trial: int) -> None:
    """A receive's SQE is written in a tick and submitted with the run loop's next
    io_uring_enter; a close in that same tick must get it (and its cancel) to the
    kernel before the number can be reused, or it would read the new socket's data.
    Which of the two tasks runs first in the tick is Trio's (random) choice: both
    orders are accepted, a stolen byte never is."""
    victim, peer = await tcp_pair()
    box: list[Reuse] = []
    try:
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                try:
                    await victim.recv(1000)
                except trio.ClosedResourceError:
                    pass
                except OSError as exc:  # the close came first: recv on a closed socket
                    assert exc.errno == errno.EBADF

            async def closer() -> None:
                box.append(close_and_reuse(victim))

            nursery.start_soon(receiver)
            nursery.start_soon(closer)
        await trio.sleep(0.02)
        box[0].assert_untouched()
    finally:
        peer.close()
        for r in box:
            r.close()


async def test_accepted_connections_reaped_after_the_listener_closed_are_closed() -> None:
    """Connections the multishot ACCEPT took just before the listener closed (their
    CQEs reaped after the close) are closed, not leaked."""
    import time

    listener = trio.socket.socket()
    await listener.bind((LOCALHOST, 0))
    listener.listen(64)
    # Arm the multishot ACCEPT with a first connection.
    with stdlib_socket.create_connection(listener.getsockname()):
        conn, _ = await listener.accept()
        conn.close()
    before = len(os.listdir("/proc/self/fd"))
    clients = [stdlib_socket.create_connection(listener.getsockname()) for _ in range(8)]
    time.sleep(0.05)  # no io_uring_enter meanwhile: the accepts complete at the next one
    listener.close()
    await trio.sleep(0.05)
    for c in clients:
        c.close()
    assert len(os.listdir("/proc/self/fd")) == before - 1  # minus the listener


def test_a_listener_dropped_without_close_frees_its_port() -> None:
    """The multishot ACCEPT holds the listening socket's file; when the listener is
    garbage collected without close() (as stdlib sockets may be), the port must be
    released as it would be on stock Trio."""
    done = run_python(
        """
        import gc, socket, warnings, trio, trio_uring
        warnings.simplefilter("ignore", ResourceWarning)

        async def main():
            listener = trio.socket.socket()
            await listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            port = listener.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port)):
                conn, _ = await listener.accept()  # arms the multishot ACCEPT
                conn.close()
            del listener, conn
            gc.collect()
            await trio.sleep(0.05)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                print("refused")
            else:
                print("still listening")

        trio_uring.run(main)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused"
