"""Chat server: a nursery per client and memory channels between them, on io_uring.

    python examples/chat_server.py [--port PORT]     # PORT 0: pick a free one

It prints ``listening on port N``. Connect with ``nc 127.0.0.1 N``: the first line you
type is your name, every later line goes to everyone else as ``name: line``.
Ctrl+C stops it.
"""

import argparse
import signal
from collections.abc import AsyncIterator
from functools import partial

import trio

import trio_uring

MAX_LINE = 4096
QUEUE = 64  # lines a slow client may fall behind before it is dropped


class Room:
    def __init__(self) -> None:
        self.members: dict[str, trio.MemorySendChannel[bytes]] = {}

    def broadcast(self, line: str, *, sender: str | None = None) -> None:
        for name, outbox in list(self.members.items()):
            if name != sender:
                try:
                    outbox.send_nowait(line.encode() + b"\n")
                except trio.WouldBlock:  # not reading: drop them rather than block everyone
                    outbox.close()
                    del self.members[name]


async def lines(stream: trio.SocketStream) -> AsyncIterator[str]:  # decoded lines
    buffer = b""
    async for data in stream:
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode(errors="replace").rstrip("\r")
        if len(buffer) > MAX_LINE:
            return


async def writer(stream: trio.SocketStream, inbox: trio.MemoryReceiveChannel[bytes]) -> None:
    try:
        async for line in inbox:
            await stream.send_all(line)
    except trio.BrokenResourceError:
        pass  # the client left; the reader sees it too


async def client(room: Room, stream: trio.SocketStream) -> None:
    outbox, inbox = trio.open_memory_channel[bytes](QUEUE)
    name = None
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(writer, stream, inbox)
        try:
            async for line in lines(stream):
                if name is None:
                    name = line.strip() or "anonymous"
                    while name in room.members:
                        name += "_"
                    room.broadcast(f"* {name} joined")
                    room.members[name] = outbox
                    outbox.send_nowait(f"* welcome {name}, {len(room.members)} here\n".encode())
                elif name in room.members:
                    room.broadcast(f"{name}: {line}", sender=name)
                else:
                    break  # dropped for being too slow
        except trio.BrokenResourceError:
            pass  # the connection broke
        finally:
            if name is not None and room.members.get(name) is outbox:
                del room.members[name]
                room.broadcast(f"* {name} left")
        nursery.cancel_scope.cancel()


async def main(port: int) -> None:
    room = Room()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, partial(client, room), port, host="127.0.0.1"))
        print(f"listening on port {listeners[0].socket.getsockname()[1]}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:  # Ctrl+C (or kill): stop serving, exit cleanly
                break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Chat server on io_uring.")
    parser.add_argument("--port", type=int, default=12346, help="0 picks a free port")
    trio_uring.run(main, parser.parse_args().port)
