#!/usr/bin/env python3
"""Bulk send_all over loopback in one process: MiB/s and CPU ms per MiB.

    .venv/bin/python benchmarks/bulk_send.py [--chunk 65536] [--mib 512]

One connection; a sender task send_all()s --chunk bytes at a time, a receiver task
receive_some()s until EOF. Most sends here must wait for room: the cost of waiting
for it with a poll and trying again (sends never park in the kernel) shows here.
"""

from __future__ import annotations

import argparse
import time

import trio

import trio_uring


async def main(chunk: int, total: int) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    a = await trio.open_tcp_stream("127.0.0.1", port)
    b = await listeners[0].accept()
    data = b"x" * chunk

    async def sender() -> None:
        for _ in range(total // chunk):
            await a.send_all(data)
        await a.send_eof()

    async def receiver() -> None:
        n = 0
        while got := await b.receive_some():
            n += len(got)
        assert n == total // chunk * chunk

    wall, cpu = time.monotonic(), time.process_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        nursery.start_soon(receiver)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    mib = total / 2**20
    ops = getattr(trio.lowlevel.current_statistics().io_statistics, "ops_submitted", {})
    print(f"chunk {chunk}: {mib / wall:.0f} MiB/s, CPU {cpu / mib * 1e3:.2f} ms/MiB; ops {ops}")
    for s in (a, b, *listeners):
        await s.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--mib", type=int, default=512)
    args = parser.parse_args()
    trio_uring.run(main, args.chunk, args.mib << 20)
