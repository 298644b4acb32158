"""trio-websocket echo server in any form of benchmarks/forms.py.

    python benchmarks/servers/ws_echo.py --form trio-uring --port 9000

Every message is sent back as it came (bytes stay bytes). The listeners come from the
module of the form's serve_tcp (trio.open_tcp_listeners, or trio_uring's for the
streams form), handed to trio_websocket.WebSocketServer, which is what
trio_websocket.serve_websocket does with trio's.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from forms import FORMS, resolve


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--form", choices=FORMS, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    form = FORMS[a.form]
    open_tcp_listeners = resolve(form.serve_tcp.rpartition(".")[0] + ".open_tcp_listeners")

    async def serve() -> None:
        listeners = await open_tcp_listeners(a.port, host=a.host)
        print(f"ws_echo ({a.form}, {trio.lowlevel.current_statistics().io_statistics.backend}) listening on "
              f"{a.host}:{a.port}", file=sys.stderr, flush=True)
        await WebSocketServer(echo, listeners).run()

    resolve(form.run)(serve)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
