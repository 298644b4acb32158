"""The demo's echo server, one process per form: ``python -m trio_uring._cli.echo_server
FORM PORT_FILE`` (started by `trio_uring._cli.demo`, not a user command).

Serves on 127.0.0.1, writes the port to PORT_FILE once listening, and exits when its
stdin reaches EOF: the demo holds the other end, so the server cannot outlive it, even
if the demo is killed.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from typing import Any

import trio

import trio_uring

#: The same unchanged Trio echo server (trio.serve_tcp), on Trio's epoll and on
#: io_uring (where trio_uring.serve_tcp is the same thing).
FORMS = {
    "epoll": "trio.serve_tcp on Trio's epoll",
    "io_uring": "trio.serve_tcp on io_uring",
}


async def _serve(port_file: str, serve_tcp: Any) -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_tcp, handler, 0, host="127.0.0.1"))
        try:
            with open(port_file + ".tmp", "w") as f:
                f.write(str(listeners[0].socket.getsockname()[1]))
            os.replace(port_file + ".tmp", port_file)
        except FileNotFoundError:  # the demo was interrupted as it started us, and is gone
            nursery.cancel_scope.cancel()
            return
        async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
            while await stdin.receive_some():
                pass
        nursery.cancel_scope.cancel()


def main(form: str, port_file: str) -> None:
    if form == "epoll":
        trio_uring.uninstall()  # in case TRIO_URING=1 installed it at start-up
        trio.run(_serve, port_file, trio.serve_tcp)
    elif form == "io_uring":
        trio_uring.run(_serve, port_file, trio.serve_tcp)
    else:
        raise SystemExit(f"echo_server: unknown form {form!r} (one of {', '.join(FORMS)})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: python -m trio_uring._cli.echo_server {{{','.join(FORMS)}}} PORT_FILE")
    main(sys.argv[1], sys.argv[2])
