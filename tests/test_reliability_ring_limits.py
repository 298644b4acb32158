"""A deliberately tiny ring: CQ overflow and a full SQ lose nothing and never hang.

`UringIOManager.sq_entries` / ``cq_entries`` are class attributes; the tests here run
Trio with a subclass whose SQ has 4 entries and whose CQ has 8, and make thousands
of SQEs and CQEs happen in one scheduler tick: the SQ is flushed each time it fills,
and completions that do not fit in the CQ wait in the kernel (IORING_FEAT_NODROP)
until a reap makes room. A multishot ACCEPT ends whenever its CQE does not fit, and
has to be re-armed.
"""

from __future__ import annotations

import collections
import gc
import os
import socket as stdlib_socket
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from trio._core._run import GLOBAL_RUN_CONTEXT

import trio_uring

from .test_reliability_storm import SEED, run_storm

T = TypeVar("T")

COUNT = 2000


class TinyRingIOManager(trio_uring.UringIOManager):
    sq_entries = 4
    cq_entries = 8


@pytest.fixture
def tiny_ring() -> Iterator[Callable[..., Any]]:
    """``run(async_fn, *args)``: trio.run on a UringIOManager with a 4/8-entry ring."""
    import trio._core._run as trio_run

    saved = trio_run.TheIOManager

    def run(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        trio_run.TheIOManager = TinyRingIOManager
        try:
            return trio.run(async_fn, *args)
        finally:
            trio_run.TheIOManager = saved

    yield run
    assert trio_run.TheIOManager is saved


def open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def ring_sizes() -> tuple[int, int]:
    manager = GLOBAL_RUN_CONTEXT.runner.io_manager
    assert isinstance(manager, TinyRingIOManager)
    return manager._ring.sq_entries, manager._ring.cq_entries


def stats() -> trio_uring.UringStatistics:
    s = trio.lowlevel.current_statistics().io_statistics
    assert isinstance(s, trio_uring.UringStatistics)
    return s


def socketpairs(n: int) -> list[tuple[stdlib_socket.socket, stdlib_socket.socket]]:
    pairs = [stdlib_socket.socketpair() for _ in range(n)]
    for a, b in pairs:
        a.setblocking(False)
        b.setblocking(False)
    return pairs


def test_thousands_of_readiness_completions_at_once(tiny_ring: Callable[..., Any]) -> None:
    fds = open_fds()
    pairs = socketpairs(COUNT)

    async def main() -> int:
        assert ring_sizes() == (4, 8)
        woken = 0
        await trio.testing.wait_all_tasks_blocked()  # Trio's own waits are in flight
        base = stats()

        async def waiter(sock: stdlib_socket.socket) -> None:
            nonlocal woken
            await trio.lowlevel.wait_readable(sock)
            assert sock.recv(10) == b"!"
            woken += 1

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _, b in pairs:
                    nursery.start_soon(waiter, b)
                await trio.testing.wait_all_tasks_blocked()
                assert stats().tasks_waiting_read >= COUNT
                # All of them become readable before the run loop reaps once.
                for a, _ in pairs:
                    a.send(b"!")
        assert stats().ops_in_flight == base.ops_in_flight
        return woken

    try:
        assert tiny_ring(main) == COUNT
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    assert open_fds() == fds


def test_completions_in_the_overflow_list_are_not_idle(tiny_ring: Callable[..., Any]) -> None:
    # 64 receives complete in one kernel pass; 8 fit in the CQ, the rest wait in
    # the kernel's overflow list (IORING_SQ_CQ_OVERFLOW). The run loop must not
    # call itself idle (wait_all_tasks_blocked, the autojump clock) while they do.
    pairs = socketpairs(64)

    async def main() -> int:
        got = 0

        async def receiver(sock: stdlib_socket.socket) -> None:
            nonlocal got
            assert await trio.socket.from_stdlib_socket(sock).recv(10) == b"!"
            got += 1

        async with trio.open_nursery() as nursery:
            for _, b in pairs:
                nursery.start_soon(receiver, b)
            await trio.testing.wait_all_tasks_blocked()
            for a, _ in pairs:
                a.send(b"!")
            await trio.testing.wait_all_tasks_blocked()
            delivered = got
            nursery.cancel_scope.cancel()
        return delivered

    try:
        assert tiny_ring(main) == 64
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_thousands_of_data_completions_at_once(tiny_ring: Callable[..., Any]) -> None:
    # 2000 RECV ops written in one tick (a 4-entry SQ), then completed at once (an
    # 8-entry CQ): each gets exactly its own message.
    fds = open_fds()

    async def main() -> dict[int, bytes]:
        assert ring_sizes() == (4, 8)
        pairs = [trio.socket.socketpair() for _ in range(COUNT)]
        got: dict[int, bytes] = {}
        await trio.testing.wait_all_tasks_blocked()  # Trio's own waits are in flight
        base = stats()

        async def receiver(i: int, sock: trio.socket.SocketType) -> None:
            got[i] = await sock.recv(100)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i, (_, b) in enumerate(pairs):
                    nursery.start_soon(receiver, i, b)
                await trio.testing.wait_all_tasks_blocked()
                submitted = stats().ops_submitted["RECV"] - base.ops_submitted.get("RECV", 0)
                assert submitted >= COUNT
                assert stats().ops_in_flight == base.ops_in_flight + COUNT  # one RECV waiting each
                for i, (a, _) in enumerate(pairs):
                    a._sock.send(b"message %d" % i)  # synchronous: no reap in between
        assert stats().ops_in_flight == base.ops_in_flight
        for a, b in pairs:
            a.close()
            b.close()
        return got

    got = tiny_ring(main)
    assert got == {i: b"message %d" % i for i in range(COUNT)}
    assert open_fds() == fds


def test_thousands_of_cancels_in_one_tick(tiny_ring: Callable[..., Any]) -> None:
    # Cancelling 2000 blocked RECVs writes 2000 ASYNC_CANCEL SQEs from abort
    # callbacks in one tick, through a 4-entry SQ; their 2000 -ECANCELED CQEs then
    # overflow the 8-entry CQ. Every task gets Cancelled; nothing stays in flight.
    fds = open_fds()

    async def main() -> int:
        pairs = [trio.socket.socketpair() for _ in range(COUNT)]
        await trio.testing.wait_all_tasks_blocked()  # Trio's own waits are in flight
        base = stats()
        cancelled = 0

        async def receiver(sock: trio.socket.SocketType) -> None:
            nonlocal cancelled
            try:
                await sock.recv(100)
            except trio.Cancelled:
                cancelled += 1
                raise

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _, b in pairs:
                    nursery.start_soon(receiver, b)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
        after = stats()
        assert after.ops_in_flight == base.ops_in_flight
        assert after.ops_submitted["ASYNC_CANCEL"] - base.ops_submitted.get("ASYNC_CANCEL", 0) == COUNT
        # The sockets still work.
        for a, b in pairs[:10]:
            await a.send(b"still fine")
            assert await b.recv(100) == b"still fine"
        for a, b in pairs:
            a.close()
            b.close()
        return cancelled

    assert tiny_ring(main) == COUNT
    assert open_fds() == fds


def test_multishot_accept_through_an_overflowing_cq(tiny_ring: Callable[..., Any]) -> None:
    # 1000 connections wait in the backlog; the multishot ACCEPT takes them in one
    # burst, far more CQEs than the CQ holds, so it keeps ending (a final CQE, with
    # an fd, that did not fit) and being re-armed. Every connection is accepted
    # exactly once, with its own peer address.
    n = 1000
    fds = open_fds()

    async def main() -> tuple[set[Any], set[Any], int]:
        lsock = trio.socket.socket()
        await lsock.bind(("127.0.0.1", 0))
        lsock.listen(n)
        assert isinstance(lsock, trio_uring.socket.SocketType)
        lsock.accept_queue_limit = 10 * n  # no backpressure: the whole burst at once
        clients = []
        for _ in range(n):
            c = stdlib_socket.socket()
            c.setblocking(False)
            try:
                c.connect(lsock.getsockname())
            except BlockingIOError:
                pass
            clients.append(c)
        await trio.sleep(0.1)  # handshakes done: all in the backlog
        base = stats()
        peers = []
        with trio.fail_after(20):
            for _ in range(n):
                sock, peer = await lsock.accept()
                peers.append(peer)
                sock.close()
        armed = stats().ops_submitted["ACCEPT"] - base.ops_submitted.get("ACCEPT", 0)
        expected = {c.getsockname() for c in clients}
        lsock.close()
        for c in clients:
            c.close()
        assert len(peers) == len(set(peers))
        return set(peers), expected, armed

    peers, expected, armed = tiny_ring(main)
    assert peers == expected
    assert armed > 1  # the overflow really ended the multishot, which was re-armed
    assert open_fds() == fds


def test_more_sqes_than_the_sq_holds_in_one_tick(tiny_ring: Callable[..., Any]) -> None:
    # 2000 tasks each start a socket op in the same tick: one CONNECT each, then
    # one SEND, then one RECV: 2000 SQEs per tick through a 4-entry SQ.
    fds = open_fds()

    async def main() -> collections.Counter[str]:
        lsock = trio.socket.socket()
        await lsock.bind(("127.0.0.1", 0))
        lsock.listen(COUNT)
        results: collections.Counter[str] = collections.Counter()
        go = trio.Event()

        async def serve(nursery: trio.Nursery) -> None:
            while True:
                conn, _ = await lsock.accept()
                nursery.start_soon(echo_once, conn)

        async def echo_once(conn: trio.socket.SocketType) -> None:
            with conn:
                data = await conn.recv(100)
                await conn.send(data)

        async def client(i: int) -> None:
            sock = trio.socket.socket()
            with sock:
                await go.wait()  # everybody starts in the same tick
                await sock.connect(lsock.getsockname())
                await sock.send(b"hello %d" % i)
                assert await sock.recv(100) == b"hello %d" % i
                results["ok"] += 1

        base = stats()
        with trio.fail_after(30):
            async with trio.open_nursery() as server:
                server.start_soon(serve, server)
                async with trio.open_nursery() as nursery:
                    for i in range(COUNT):
                        nursery.start_soon(client, i)
                    await trio.testing.wait_all_tasks_blocked()
                    go.set()
                server.cancel_scope.cancel()
        after = stats()
        for op in ("CONNECT", "SEND", "RECV"):
            results[op] = after.ops_submitted[op] - base.ops_submitted.get(op, 0)
        lsock.close()
        return results

    results = tiny_ring(main)
    assert results["ok"] == COUNT
    assert results["CONNECT"] >= COUNT
    assert results["SEND"] >= COUNT
    assert results["RECV"] >= COUNT
    assert open_fds() == fds


def test_cancellation_storm_on_a_tiny_ring(tiny_ring: Callable[..., Any]) -> None:
    # The cancellation storm (test_reliability_storm), smaller, through a ring
    # that is always full.
    fds = open_fds()
    result = tiny_ring(partial(run_storm, SEED, 20000, 32))
    assert result["server_data_conns"] == result["client_conns"]
    assert result["accepted"] == sum(result["client_conns"].values()) + result["leftovers"]
    assert open_fds() == fds


class TinyBufferRingIOManager(trio_uring.UringIOManager):
    recv_buffers = 2
    recv_buffer_size = 64


def test_provided_buffers_running_out_loses_nothing(stock_trio: None) -> None:
    # 64 receives wait; data arrives for all of them at once, and the buffer ring has
    # 2 buffers: most complete with ENOBUFS and are submitted again (data stays in
    # the socket meanwhile), until every one has its own bytes.
    import trio._core._run as trio_run

    async def main() -> tuple[int, int]:
        # Senders are stdlib sockets so that all 64 sends happen without a yield.
        raw = [stdlib_socket.socketpair() for _ in range(64)]
        pairs = [(a, trio.socket.from_stdlib_socket(b)) for a, b in raw]
        got: dict[int, bytes] = {}
        recvs_before = trio.lowlevel.current_statistics().io_statistics.ops_submitted.get("RECV", 0)

        async def receive(i: int, sock: trio.socket.SocketType) -> None:
            data = b""
            while len(data) < 200:
                data += await sock.recv(1000)
            got[i] = data

        async with trio.open_nursery() as nursery:
            for i, (_, b) in enumerate(pairs):
                nursery.start_soon(receive, i, b)
            await trio.testing.wait_all_tasks_blocked()
            for i, (a, _) in enumerate(pairs):
                a.send(bytes([i]) * 200)
        recvs = trio.lowlevel.current_statistics().io_statistics.ops_submitted["RECV"] - recvs_before
        for a, b in pairs:
            a.close()
            b.close()
        assert got == {i: bytes([i]) * 200 for i in range(64)}
        return recvs, len(got)

    saved = trio_run.TheIOManager
    trio_run.TheIOManager = TinyBufferRingIOManager
    try:
        recvs, receivers = trio.run(main)
    finally:
        trio_run.TheIOManager = saved
    # Each receive: one attempt at once (EAGAIN), then waiting RECVs; with 2 buffers
    # for 64 receivers, many waiting RECVs ended in ENOBUFS and were submitted again.
    assert recvs > 3 * receivers
