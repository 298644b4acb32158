"""Cancellation at random moments loses nothing: every op either completed or was
cancelled, never both or neither (liburing's cancel-race.c, in Trio's terms).

Each call races a canceller that fires before the call, or after a random number
(0-3) of scheduler yields: before the op is submitted, while it is in flight, or
after its CQE arrived but before the task ran. The run is seeded (TRIO_URING_SEED); the tests
print how often each outcome happened and require every outcome to occur, so a
run that never hit the race fails instead of passing vacuously.
"""

from __future__ import annotations

import collections
import errno
import gc
import os
import random
import socket as stdlib_socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
import trio.testing

from .conftest import io_stats

SEED = int(os.environ.get("TRIO_URING_SEED", "20261122"))


def open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


class Race:
    """Run calls against a random canceller and count the outcomes."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.outcomes: collections.Counter[str] = collections.Counter()

    async def __call__(self, call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        scope = trio.CancelScope()
        yields = self.rng.randrange(-1, 4)
        if yields < 0:
            scope.cancel()
        result: Any = None
        completed = False

        async def cancel_later() -> None:
            for _ in range(yields):
                await trio.sleep(0)
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_later)
            with scope:
                result = await call()
                completed = True
                late = scope.cancel_called
        if completed:
            self.outcomes["completed after the cancel" if late else "completed"] += 1
        else:
            self.outcomes["cancelled"] += 1
        return completed, result


async def connected_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    lsock = trio.socket.socket()
    with lsock:
        await lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        client = trio.socket.socket()
        await client.connect(lsock.getsockname())
        server, _ = await lsock.accept()
    return client, server


async def test_random_cancellation_of_send_and_recv_loses_no_byte() -> None:
    fds = open_fds()
    base = io_stats()
    client, server = await connected_pair()
    client.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 32768)
    server.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 32768)
    send_race = Race(random.Random(SEED))
    recv_race = Race(random.Random(SEED + 1))
    sent = bytearray()
    received = bytearray()
    iterations = 3000

    async def sender() -> None:
        rng = random.Random(SEED + 2)
        for _ in range(iterations):
            chunk = rng.randbytes(rng.choice([1, 700, 20_000, 200_000]))
            completed, n = await send_race(partial(client.send, chunk))
            if completed:
                assert 0 <= n <= len(chunk)
                sent.extend(chunk[:n])
        client.shutdown(stdlib_socket.SHUT_WR)

    async def receiver() -> None:
        rng = random.Random(SEED + 3)
        buf = bytearray(70_000)
        while True:
            size = rng.choice([1, 1000, 70_000])
            if rng.random() < 0.5:
                completed, data = await recv_race(partial(server.recv, size))
            else:
                completed, n = await recv_race(partial(server.recv_into, buf, size))
                data = bytes(buf[:n]) if completed else b""
            if completed:
                if not data:
                    return
                received.extend(data)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            nursery.start_soon(receiver)

    print(f"\nseed {SEED}: send {dict(send_race.outcomes)}, recv {dict(recv_race.outcomes)}, {len(sent)} bytes")
    assert received == sent, "bytes lost, duplicated or reordered"
    for race in (send_race, recv_race):
        assert set(race.outcomes) == {"completed", "cancelled", "completed after the cancel"}
    client.close()
    server.close()
    await trio.sleep(0)
    stats = io_stats()
    assert stats.ops_submitted["ASYNC_CANCEL"] > base.ops_submitted.get("ASYNC_CANCEL", 0)
    assert stats.ops_in_flight == base.ops_in_flight
    assert open_fds() == fds


async def test_random_cancellation_of_connect_and_accept_loses_no_connection() -> None:
    fds = open_fds()
    base = io_stats()
    lsock = trio.socket.socket()
    await lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    address = lsock.getsockname()
    connect_race = Race(random.Random(SEED + 4))
    accept_race = Race(random.Random(SEED + 5))
    clients: dict[Any, trio.socket.SocketType] = {}
    accepted: dict[Any, trio.socket.SocketType] = {}
    iterations = 1500
    done_connecting = trio.Event()

    async def connector() -> None:
        for _ in range(iterations):
            sock = trio.socket.socket()
            completed, _ = await connect_race(partial(sock.connect, address))
            if completed:
                clients[sock.getsockname()] = sock
            else:
                assert sock.fileno() == -1  # a cancelled connect closes the socket
        done_connecting.set()

    async def acceptor() -> None:
        while not (done_connecting.is_set() and set(clients) <= set(accepted)):
            completed, result = await accept_race(lsock.accept)
            if completed:
                sock, peer = result
                assert peer not in accepted
                accepted[peer] = sock

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector)
            nursery.start_soon(acceptor)

    print(f"\nseed {SEED}: connect {dict(connect_race.outcomes)}, accept {dict(accept_race.outcomes)}")
    # Every connection a client made was accepted exactly once, with its address.
    assert set(clients) <= set(accepted)
    # Anything else accepted belongs to a connect that was cancelled after the
    # kernel finished the handshake: its client socket is closed, so it is dead.
    for peer in set(accepted) - set(clients):
        sock = accepted[peer]
        try:
            with trio.fail_after(2):
                assert await sock.recv(1) == b""
        except OSError as exc:
            assert exc.errno == errno.ECONNRESET
    for race in (connect_race, accept_race):
        assert race.outcomes["completed"] > 0 and race.outcomes["cancelled"] > 0
    assert accept_race.outcomes["completed after the cancel"] > 0
    for sock in [*clients.values(), *accepted.values(), lsock]:
        sock.close()
    await trio.sleep(0)
    assert io_stats().ops_in_flight == base.ops_in_flight
    assert open_fds() == fds
