"""Fan-in server (benchmarks/fanin.py): CONNS connections, each read to EOF with
``await stream.receive_some()`` in a loop, as a Trio server would.

    python fanin_server.py --variant bundle -c 64 --stats out.json   # prints: listening PORT

Variants: ``trio-epoll`` (stock Trio), and on trio_uring.run one per receive mode
(``select``, ``bundle``), optionally with another buffer ring
(``--buffers N --buffer-size B``). From the moment every connection is accepted
to the last EOF it measures: bytes, receive_some calls, the process's CPU time
(getrusage), and on trio_uring the RECV SQEs written (immediate ones included) and
the mode the run ended up with; they go to --stats as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import trio


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", required=True)
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("-c", "--conns", type=int, default=64)
    ap.add_argument("--buffers", type=int, default=0)
    ap.add_argument("--buffer-size", type=int, default=0)
    ap.add_argument("--stats", required=True)
    args = ap.parse_args()

    uring = args.variant != "trio-epoll"
    driver_of = None
    if uring:
        import trio_uring
        from trio_uring._iomanager import current_driver

        mode = args.variant.split("-")[0]
        trio_uring.UringIOManager.recv_mode = mode
        if args.buffers:
            trio_uring.UringIOManager.recv_buffers = args.buffers
        if args.buffer_size:
            trio_uring.UringIOManager.recv_buffer_size = args.buffer_size
        driver_of = current_driver

    async def serve() -> None:
        listeners = await trio.open_tcp_listeners(args.port, host="127.0.0.1")
        listener = listeners[0]
        print("listening", listener.socket.getsockname()[1], flush=True)
        streams = [await listener.accept() for _ in range(args.conns)]
        totals = {"bytes": 0, "receives": 0}
        driver = driver_of() if driver_of else None
        recv0 = driver.ring.ops_submitted().get("RECV", 0) if driver else 0
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()

        async def drain(stream: trio.SocketStream) -> None:
            n = calls = 0
            while data := await stream.receive_some():
                n += len(data)
                calls += 1
            totals["bytes"] += n
            totals["receives"] += calls + 1  # the one that found EOF
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for s in streams:
                nursery.start_soon(drain, s)
        t1 = time.perf_counter()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        out = dict(totals, seconds=t1 - t0,
                   cpu_s=(ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
                   user_s=ru1.ru_utime - ru0.ru_utime, sys_s=ru1.ru_stime - ru0.ru_stime)
        if driver is not None:
            out["recv_sqes"] = driver.ring.ops_submitted().get("RECV", 0) - recv0
            out["mode"] = driver.recv_mode
            bufs = driver.buffers()
            out["buffer_bytes"] = bufs.entries * bufs.size
        with open(args.stats, "w") as f:
            json.dump(out, f)

    if uring:
        import trio_uring

        trio_uring.run(serve)
    else:
        trio.run(serve)


if __name__ == "__main__":
    sys.exit(main())
