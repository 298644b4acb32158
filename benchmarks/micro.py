#!/usr/bin/env python3
"""In-process ping-pong: CPU per round trip of Trio's SocketStream, stock vs io_uring.

    .venv/bin/python benchmarks/micro.py [-p PAIRS] [-n ROUNDS] [-r REPS] [--raw]

P connected pairs in one process (both ends are trio.SocketStreams, or with --raw
the trio sockets themselves: send/recv, what code that uses trio.socket pays); each pair
sends 64 bytes and echoes them back, N times. Reports the process's CPU time
(user + system) per round trip, the median of R interleaved repetitions per form:
a quick, fairly noise-proof view of the Python cost per operation while optimizing
(CPU time is counted per process, so other load on the machine moves it little).
The real comparison is benchmarks/compare.py (a separate server and load generator).
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio

import trio_uring


async def raw_pingpong(pairs: int, rounds: int) -> float:
    socks = [trio.socket.socketpair() for _ in range(pairs)]

    async def echo(s: trio.socket.SocketType) -> None:
        for _ in range(rounds):
            await s.send(await s.recv(65536))

    async def client(s: trio.socket.SocketType) -> None:
        for _ in range(rounds):
            await s.send(b"x" * 64)
            await s.recv(65536)

    start = time.process_time()
    async with trio.open_nursery() as nursery:
        for a, b in socks:
            nursery.start_soon(echo, b)
            nursery.start_soon(client, a)
    cpu = time.process_time() - start
    for a, b in socks:
        a.close()
        b.close()
    return cpu / (pairs * rounds) * 1e6


async def pingpong(pairs: int, rounds: int) -> float:
    streams = []
    for _ in range(pairs):
        a, b = trio.socket.socketpair()
        streams.append((trio.SocketStream(a), trio.SocketStream(b)))

    async def echo(s: trio.SocketStream) -> None:
        for _ in range(rounds):
            await s.send_all(await s.receive_some(65536))

    async def client(s: trio.SocketStream) -> None:
        for _ in range(rounds):
            await s.send_all(b"x" * 64)
            await s.receive_some(65536)

    start = time.process_time()
    async with trio.open_nursery() as nursery:
        for a, b in streams:
            nursery.start_soon(echo, b)
            nursery.start_soon(client, a)
    cpu = time.process_time() - start
    for a, b in streams:
        await a.aclose()
        await b.aclose()
    return cpu / (pairs * rounds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--pairs", type=int, default=64)
    parser.add_argument("-n", "--rounds", type=int, default=2000)
    parser.add_argument("-r", "--reps", type=int, default=5)
    parser.add_argument("--raw", action="store_true", help="trio sockets' send/recv instead of SocketStreams")
    args = parser.parse_args()
    bench = raw_pingpong if args.raw else pingpong
    forms = {"stock (epoll)": trio.run, "trio_uring": trio_uring.run}
    results: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(args.reps):
        for name, run in forms.items():
            results[name].append(run(bench, args.pairs, args.rounds))
    stock = statistics.median(results["stock (epoll)"])
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:14} {med:6.2f} us CPU per round trip ({args.pairs} pairs)  ratio {stock / med:.2f}")


if __name__ == "__main__":
    main()
