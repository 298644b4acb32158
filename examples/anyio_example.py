"""anyio on io_uring: ``trio_uring.install()``, then ``anyio.run(..., backend="trio")``.

    pip install anyio
    python examples/anyio_example.py

anyio code does not know about trio_uring; after ``install()`` every Trio run in the
process, anyio's included, uses the io_uring backend. This starts an anyio TCP
server, talks to it, and prints the answer and the backend.
"""

import anyio
import trio

import trio_uring


async def shout(client: anyio.abc.SocketStream) -> None:
    async with client:
        await client.send((await client.receive()).upper())


async def main() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, shout)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(b"hello from anyio")
            print((await client.receive()).decode())
        tg.cancel_scope.cancel()
    print("backend:", trio.lowlevel.current_statistics().io_statistics.backend)


if __name__ == "__main__":
    trio_uring.install()  # raises UringUnavailableError (with the fix) if io_uring is unavailable
    anyio.run(main, backend="trio")
