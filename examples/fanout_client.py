"""Fan-out client: many concurrent connections from one Trio task tree, on io_uring.

    python examples/fanout_client.py [-c CONNECTIONS] [-n ROUND_TRIPS]
    python examples/fanout_client.py --port PORT     # against examples/echo_server.py

Every connection sends ROUND_TRIPS messages and checks each echo. Without --port it
starts its own echo server in the same run, so it works on its own.
"""

import argparse
import time
from functools import partial

import trio

import trio_uring


async def echo(stream: trio.SocketStream) -> None:
    async for data in stream:
        await stream.send_all(data)


async def one_client(port: int, i: int, round_trips: int) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        for n in range(round_trips):
            message = f"client {i} message {n}\n".encode()
            await stream.send_all(message)
            echoed = b""
            while len(echoed) < len(message):
                data = await stream.receive_some()
                if not data:
                    raise RuntimeError(f"client {i}: the server closed the connection")
                echoed += data
            assert echoed == message, (echoed, message)


async def main(port: int | None, connections: int, round_trips: int) -> None:
    async with trio.open_nursery() as nursery:
        if port is None:  # no server given: run our own
            listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
        start = time.perf_counter()
        async with trio.open_nursery() as clients:
            for i in range(connections):
                clients.start_soon(one_client, port, i, round_trips)
        elapsed = time.perf_counter() - start
        backend = trio.lowlevel.current_statistics().io_statistics.backend
        print(f"{connections} connections x {round_trips} round trips = {connections * round_trips} "
              f"echoes checked in {elapsed:.2f} s on {backend}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Many concurrent echo clients on io_uring.")
    parser.add_argument("--port", type=int, default=None, help="an echo server's port (default: start one)")
    parser.add_argument("-c", "--connections", type=int, default=200)
    parser.add_argument("-n", "--round-trips", type=int, default=20)
    args = parser.parse_args()
    trio_uring.run(main, args.port, args.connections, args.round_trips)
