"""Trio echo server in any form of benchmarks/forms.py.

    python benchmarks/servers/echo.py --form trio-uring --port 9000 [--stats FILE]

The handler is the shared harness's (/work/shared/bench/servers/trio_echo.py): receive_some,
send_all, until EOF. Only how it is served changes with the form: which run function
(trio.run, trio_uring.run) and which serve_tcp (trio's, trio_uring's).

--stats FILE: on each SIGUSR1 (loadgen --window-signal sends one at the start and one at
the end of its measured window) append one JSON line to FILE with the run's
io_statistics (ops submitted per opcode on trio_uring) and this process's CPU times, so
the counting pass can say what the server did per request inside the window only.
The signal task exists only with --stats, so timed runs have no extra task.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from forms import FORMS, resolve
from stats import snapshot


async def handle(stream: trio.SocketStream) -> None:
    # serve_tcp closes the stream when the handler returns.
    try:
        while True:
            data = await stream.receive_some()
            if not data:
                return
            await stream.send_all(data)
    except trio.BrokenResourceError:
        # Peer reset the connection; an exception here would stop the whole server.
        return


async def dump_on_signal(path: str) -> None:
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            with open(path, "a") as f:
                f.write(snapshot() + "\n")


def raise_nofile_limit(want: int = 65536) -> None:
    """Every form alike: room for idle_memory.py's 10,000 connections. Root may raise the
    hard limit too; others get the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--form", choices=FORMS, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--stats", metavar="FILE")
    a = p.parse_args()
    form = FORMS[a.form]
    run, serve_tcp = resolve(form.run), resolve(form.serve_tcp)
    raise_nofile_limit()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            if a.stats:
                nursery.start_soon(dump_on_signal, a.stats)
            print(f"echo ({a.form}) listening on {a.host}:{a.port}", file=sys.stderr, flush=True)
            await serve_tcp(handle, a.port, host=a.host)

    run(serve)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
