"""HTTP/1.1 server: h11 for the protocol, a Trio nursery for the connections, io_uring below.

    pip install h11
    python examples/http_server.py [--port PORT]     # PORT 0: pick a free one

It prints ``listening on port N``; ``curl http://127.0.0.1:N/hello`` answers with the
request line and the backend. Keep-alive works; Ctrl+C stops it.
"""

import argparse
import signal

import h11
import trio

import trio_uring


async def respond(stream: trio.SocketStream, conn: h11.Connection, request: h11.Request) -> None:
    backend = trio.lowlevel.current_statistics().io_statistics.backend
    body = f"{request.method.decode()} {request.target.decode()} served by Trio on {backend}\n".encode()
    headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(body)))]
    for event in (h11.Response(status_code=200, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
        await stream.send_all(conn.send(event))


async def serve_connection(stream: trio.SocketStream) -> None:
    conn = h11.Connection(our_role=h11.SERVER)
    async with stream:
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some())
                elif isinstance(event, h11.Request):
                    await respond(stream, conn, event)
                elif isinstance(event, h11.ConnectionClosed) or conn.our_state is h11.MUST_CLOSE:
                    return
                elif conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()  # keep-alive: ready for the next request
        except (h11.RemoteProtocolError, trio.BrokenResourceError):
            return  # a malformed request, or the client left: drop the connection


async def main(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    print(f"listening on port {listeners[0].socket.getsockname()[1]}", flush=True)
    async with trio.open_nursery() as nursery:

        async def accept_loop(listener: trio.SocketListener) -> None:
            async with listener:
                while True:
                    nursery.start_soon(serve_connection, await listener.accept())

        for listener in listeners:
            nursery.start_soon(accept_loop, listener)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:  # Ctrl+C (or kill): stop serving, exit cleanly
                break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="HTTP/1.1 server (h11) on io_uring.")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    trio_uring.run(main, parser.parse_args().port)
