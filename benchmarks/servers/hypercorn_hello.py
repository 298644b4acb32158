"""Hypercorn (its Trio worker) serving a hello-world ASGI app, in any form of benchmarks/forms.py.

    python benchmarks/servers/hypercorn_hello.py --form trio-uring --port 9000

hypercorn.trio.serve(app, config) run by the form's run function (trio.run, or
trio_uring.run for the drop-in): Hypercorn's documented way to serve from Python, in
this one process (what `hypercorn -k trio -w 0` does; with workers >= 1 Hypercorn
starts fresh interpreters, which would not run on trio_uring unless each one installs
it). Hypercorn makes its own listeners, so there is no streams form of it.
GET /backend answers with the I/O backend in use, so the driver can check the form.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from forms import FORMS, resolve

HELLO = b"Hello, world!"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = HELLO
    if scope["path"] == "/backend":
        body = trio.lowlevel.current_statistics().io_statistics.backend.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--form", choices=FORMS, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    config = Config()
    config.bind = [f"{a.host}:{a.port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.backlog = 4096
    resolve(FORMS[a.form].run)(partial(serve, app, config))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
