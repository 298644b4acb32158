#!/usr/bin/env python3
"""Sends to peers that shut down their side and do not read: io-wq threads and cancel time.

    .venv/bin/python benchmarks/half_closed_sends.py [-n 50]

N connections whose peer calls shutdown(SHUT_WR) and never reads; each of our ends
starts a 4 MiB send_all, and after 3 s the whole lot is cancelled. Prints the peak
number of the process's io-wq threads (iou-wrk-*) meanwhile, and how long the cancel
took to land. A SEND parked in the kernel ended in a blocking io-wq thread per
connection that ASYNC_CANCEL did not reach (the run hung); sends now wait for room
with a poll (docs/source/ops.rst, IORING_OP_SEND, Notes): 0 threads, cancel at once.
The run is given 30 s (fail_after): a hang is reported, not waited for.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import trio

import trio_uring


def io_wq_threads() -> int:
    task_dir = f"/proc/{os.getpid()}/task"
    count = 0
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/comm") as f:
                count += f.read().startswith("iou-wrk")
        except FileNotFoundError:
            pass
    return count


async def main(n: int) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(n)
    peers, streams = [], []
    for _ in range(n):
        peer = socket.create_connection(listener.getsockname())
        peer.shutdown(socket.SHUT_WR)
        peers.append(peer)
        sock, _ = await listener.accept()
        streams.append(trio.SocketStream(sock))
    peak = 0
    with trio.move_on_after(30) as limit:
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(stream.send_all, b"x" * (4 << 20))
            for _ in range(30):
                await trio.sleep(0.1)
                peak = max(peak, io_wq_threads())
            start = time.monotonic()
            nursery.cancel_scope.cancel()
    landed = "never (gave up after 30 s)" if limit.cancelled_caught else f"{(time.monotonic() - start) * 1e3:.1f} ms"
    print(f"{n} connections: peak io-wq threads {peak}, cancel landed in {landed}")
    for stream in streams:
        await stream.aclose()
    for peer in peers:
        peer.close()
    listener.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="connections (50)")
    trio_uring.run(main, parser.parse_args().n)
