"""Echo server: Trio's own ``trio.serve_tcp``, on io_uring because of ``trio_uring.run``.

    python examples/echo_server.py [--port PORT]     # PORT 0: pick a free one

It prints ``listening on port N``; every connection gets back what it sends
(try ``nc 127.0.0.1 N``). Ctrl+C stops it.
"""

import argparse
import signal
from functools import partial

import trio

import trio_uring


async def echo(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the client left while we were sending


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, port, host="127.0.0.1"))
        print(f"listening on port {listeners[0].socket.getsockname()[1]}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:  # Ctrl+C (or kill): stop serving, exit cleanly
                break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Echo server on io_uring.")
    parser.add_argument("--port", type=int, default=12345, help="0 picks a free port")
    trio_uring.run(main, parser.parse_args().port)
