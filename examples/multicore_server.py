"""Echo server on every core: one trio_uring worker process per core, sharing one port.

    python examples/multicore_server.py [--port PORT] [--workers N] [--restart]

Each worker is a forked process with its own ``trio_uring.run`` and its own io_uring
ring, listening on the same port with SO_REUSEPORT; the kernel spreads connections
across them. It prints ``listening on port N`` once every worker serves. Every
connection gets back what it sends, after a first line naming the worker's pid
(``worker 12345``), so you can see the spreading with a few ``nc 127.0.0.1 N``.
Ctrl+C or SIGTERM stops every worker cleanly (exit status 0);
``kill -9`` on one worker is logged, and with ``--restart`` it is replaced.
"""

import argparse
import logging
import os
import sys

import trio

from trio_uring.workers import default_workers, serve_tcp_workers


async def echo(stream: trio.abc.Stream) -> None:
    try:
        await stream.send_all(f"worker {os.getpid()}\n".encode())
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the client left while we were sending


def main() -> int:
    parser = argparse.ArgumentParser(description="Echo server on every core (trio_uring workers).")
    parser.add_argument("--port", type=int, default=12345, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=default_workers(), help="default: one per core")
    parser.add_argument("--restart", action="store_true", help="replace a worker that dies")
    args = parser.parse_args()
    # Worker deaths and restarts are logged as warnings and errors on stderr.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    def ready(port: int) -> None:
        print(f"listening on port {port}", flush=True)

    return serve_tcp_workers(echo, args.port, host="127.0.0.1", workers=args.workers, restart=args.restart,
                             on_ready=ready)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
