"""Cancellation storm: a large number of socket ops, cancelled at random points, lose nothing.

Many concurrent connections (64 clients, each reconnecting again and again; some
with small socket buffers so that sends block) go through two listeners on one
run: a busy one and a quiet one, whose accepts mostly block. Every op (accept,
connect, recv, send, wait_readable, wait_writable) runs in its own cancel scope,
which is left alone, cancelled before the call, or cancelled by a canceller task
1-4 scheduler batches after the call started: before its SQE is submitted, while
it is in flight, or after its CQE arrived but before the task ran. The clients
send random bytes, the server echoes them, and at the end:

* every connection a client made was accepted exactly once and served: the
  server echoed exactly the bytes the client's completed sends reported, and the
  client received them once and in order;
* every other accepted connection is the remains of a connect that was cancelled
  after the kernel finished the handshake: it carries no data;
* no fd leaked (/proc/self/fd), and ``ops_in_flight`` is back to its baseline.

The total number of ops is TRIO_URING_STORM_OPS (default 100000), the seed
TRIO_URING_SEED (each task derives its own random.Random from it).
"""

from __future__ import annotations

import collections
import gc
import os
import random
import socket as stdlib_socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from .conftest import io_stats

SEED = int(os.environ.get("TRIO_URING_SEED", "20261122"))
TOTAL_OPS = int(os.environ.get("TRIO_URING_STORM_OPS", "100000"))
CONNECTIONS = 64  # client connections alive at once (plus their server handlers)

KINDS = ("accept", "connect", "recv", "send", "wait_readable", "wait_writable")


def open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


class Storm:
    """Shared state: the op counter, the outcomes, and the pending delayed cancels."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        # [batches left, scope]: the canceller cancels the scope when it reaches 0.
        self.delayed: list[list[Any]] = []
        self.done = False

    @property
    def exhausted(self) -> bool:
        return self.count >= self.total

    async def race(self, rng: random.Random, kind: str, call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Run ``call()`` against a random cancel; return (completed, result)."""
        self.count += 1
        scope = trio.CancelScope()
        r = rng.random()
        when = "before the call"
        if r < 0.1:
            scope.cancel()
        elif r < 0.45:
            when = "in flight"
            self.delayed.append([rng.randrange(1, 5), scope])
        completed = False
        result: Any = None
        with scope:
            result = await call()
            completed = True
        if completed:
            self.outcomes[kind, "completed after the cancel" if scope.cancel_called else "completed"] += 1
        else:
            self.outcomes[kind, f"cancelled {when}"] += 1
        return completed, result

    async def canceller(self) -> None:
        """Once per scheduler batch: count down the delayed cancels, fire those at 0."""
        while not self.done:
            await trio.sleep(0)
            if self.delayed:
                keep = []
                for item in self.delayed:
                    item[0] -= 1
                    if item[0] <= 0:
                        item[1].cancel()
                    else:
                        keep.append(item)
                self.delayed = keep


async def run_storm(seed: int, total: int, connections: int = CONNECTIONS) -> dict[str, Any]:
    storm = Storm(total)
    # Two listeners: a busy one, whose accepts mostly find a connection queued,
    # and a quiet one (a tenth of the connections), whose accepts mostly block.
    listeners = []
    for _ in range(2):
        lsock = trio.socket.socket()
        await lsock.bind(("127.0.0.1", 0))
        lsock.listen(4096)
        listeners.append(lsock)
    busy, quiet = (lsock.getsockname() for lsock in listeners)
    # (peer address, bytes) of every connection, as the clients and the server saw them.
    client_conns: collections.Counter[tuple[Any, int]] = collections.Counter()
    server_conns: collections.Counter[tuple[Any, int]] = collections.Counter()
    accepted = 0
    cancelled_connects = 0

    async def handler(conn: trio.socket.SocketType, peer: Any, rng: random.Random) -> None:
        """Echo everything until EOF, through racing recvs and sends."""
        echoed = 0
        try:
            pending = bytearray()
            while True:
                if rng.random() < 0.2:
                    await storm.race(rng, "wait_readable", lambda: trio.lowlevel.wait_readable(conn))
                size = rng.choice([1, 100, 4096, 65536])
                try:
                    ok, data = await storm.race(rng, "recv", partial(conn.recv, size))
                except ConnectionResetError:
                    assert echoed == 0, "a live client reset its connection"
                    break
                if not ok:
                    continue
                if not data:
                    conn.shutdown(stdlib_socket.SHUT_WR)
                    break
                pending += data
                while pending:
                    if rng.random() < 0.2:
                        await storm.race(rng, "wait_writable", lambda: trio.lowlevel.wait_writable(conn))
                    ok, n = await storm.race(rng, "send", partial(conn.send, pending))
                    if ok:
                        del pending[:n]
                        echoed += n
        finally:
            conn.close()
            server_conns[peer, echoed] += 1

    async def acceptor(lsock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        nonlocal accepted
        name = lsock.getsockname()[1]
        rng = random.Random(f"{seed}-acceptor-{name}")
        n = 0
        while True:
            ok, result = await storm.race(rng, "accept", lsock.accept)
            if ok:
                conn, peer = result
                accepted += 1
                n += 1
                nursery.start_soon(handler, conn, peer, random.Random(f"{seed}-handler-{name}-{n}"))

    async def client(index: int) -> None:
        nonlocal cancelled_connects
        rng = random.Random(f"{seed}-client-{index}")
        rounds = 0
        while not storm.exhausted:
            rounds += 1
            while True:
                sock = trio.socket.socket()
                if rng.random() < 0.3:  # small buffers: sends block, and are cancelled blocked
                    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
                    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
                address = quiet if rng.random() < 0.1 else busy
                ok, _ = await storm.race(rng, "connect", partial(sock.connect, address))
                if ok:
                    break
                assert sock.fileno() == -1  # a cancelled connect closes its socket
                cancelled_connects += 1
            sent = bytearray()
            received = bytearray()

            async def writer(rng: random.Random, sock: trio.socket.SocketType, sent: bytearray) -> None:
                for _ in range(rng.randrange(1, 8)):
                    view = memoryview(rng.randbytes(rng.choice([1, 10, 700, 5000, 40000])))
                    while view:
                        if rng.random() < 0.2:
                            await storm.race(rng, "wait_writable", lambda: trio.lowlevel.wait_writable(sock))
                        ok, n = await storm.race(rng, "send", partial(sock.send, view))
                        if ok:
                            assert 0 < n <= len(view)
                            sent.extend(view[:n])
                            view = view[n:]
                sock.shutdown(stdlib_socket.SHUT_WR)

            async def reader(rng: random.Random, sock: trio.socket.SocketType, received: bytearray) -> None:
                while True:
                    if rng.random() < 0.2:
                        await storm.race(rng, "wait_readable", lambda: trio.lowlevel.wait_readable(sock))
                    size = rng.choice([1, 50, 1000, 65536])
                    ok, data = await storm.race(rng, "recv", partial(sock.recv, size))
                    if ok:
                        if not data:
                            return
                        received.extend(data)

            async with trio.open_nursery() as n:
                n.start_soon(writer, random.Random(f"{seed}-writer-{index}-{rounds}"), sock, sent)
                n.start_soon(reader, random.Random(f"{seed}-reader-{index}-{rounds}"), sock, received)
            assert received == sent, "echoed bytes lost, duplicated or reordered"
            client_conns[sock.getsockname(), len(sent)] += 1
            sock.close()

    started = time.monotonic()
    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(storm.canceller)
            async with trio.open_nursery() as handlers, trio.open_nursery() as acceptors:
                for lsock in listeners:
                    acceptors.start_soon(acceptor, lsock, handlers)
                async with trio.open_nursery() as clients:
                    for i in range(connections):
                        clients.start_soon(client, i)
                # Every client round ended (its echo came back), so every live
                # connection was accepted; what may still be queued are leftovers
                # of cancelled connects. Stop accepting; the handlers finish by
                # themselves.
                acceptors.cancel_scope.cancel()
            storm.done = True
    finally:
        for lsock in listeners:
            lsock.close()
    elapsed = time.monotonic() - started

    data_conns = +collections.Counter({k: v for k, v in server_conns.items() if k[1] > 0})
    leftovers = sum(v for k, v in server_conns.items() if k[1] == 0)
    return {
        "storm": storm,
        "elapsed": elapsed,
        "accepted": accepted,
        "cancelled_connects": cancelled_connects,
        "client_conns": client_conns,
        "server_data_conns": data_conns,
        "leftovers": leftovers,
    }


async def test_cancellation_storm_loses_nothing_and_leaks_nothing() -> None:
    fds = open_fds()
    base = io_stats()
    with trio.fail_after(240):
        result = await run_storm(SEED, TOTAL_OPS)
    storm: Storm = result["storm"]
    by_kind = {kind: {o: n for (k, o), n in storm.outcomes.items() if k == kind} for kind in KINDS}
    print(
        f"\nseed {SEED}: {storm.count} ops in {result['elapsed']:.1f}s, {result['accepted']} connections "
        f"accepted ({result['leftovers']} leftovers of {result['cancelled_connects']} cancelled connects)"
    )
    for kind, outcomes in by_kind.items():
        print(f"  {kind:14} {outcomes}")

    assert storm.count >= TOTAL_OPS
    # Every client connection was accepted once and echoed in full (the client
    # checked the echo byte for byte); every other accepted connection is empty.
    assert result["server_data_conns"] == result["client_conns"]
    assert result["accepted"] == sum(result["client_conns"].values()) + result["leftovers"]
    assert result["leftovers"] <= result["cancelled_connects"]
    # The storm really raced: every kind of op was completed, cancelled before it
    # started, and completed although a cancel came while it was in flight; all
    # but connect (loopback connects complete at once) were also cancelled in flight.
    for kind, outcomes in by_kind.items():
        for outcome in ("completed", "cancelled before the call", "completed after the cancel"):
            assert outcomes.get(outcome, 0) > 0, (kind, outcomes)
        if kind != "connect":
            assert outcomes.get("cancelled in flight", 0) > 0, (kind, outcomes)

    # Orphaned polls end when the kernel posts their cancelled CQE: give it a moment.
    for _ in range(100):
        if io_stats().ops_in_flight == base.ops_in_flight:
            break
        await trio.sleep(0.01)
    stats = io_stats()
    assert stats.ops_in_flight == base.ops_in_flight
    assert stats.tasks_waiting_read == base.tasks_waiting_read
    assert stats.tasks_waiting_write == base.tasks_waiting_write
    assert stats.ops_submitted["ASYNC_CANCEL"] > base.ops_submitted.get("ASYNC_CANCEL", 0)
    assert open_fds() == fds


def test_the_storm_is_a_valid_test_on_stock_trio(stock_trio: None) -> None:
    # The same storm on Trio's epoll backend (a smaller one): the oracle holds there.
    fds = open_fds()
    result = trio.run(run_storm, SEED, 5000, 16)
    assert result["server_data_conns"] == result["client_conns"]
    assert open_fds() == fds
