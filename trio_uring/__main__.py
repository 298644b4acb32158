"""``python -m trio_uring``: is io_uring usable here, and how does it compare with epoll?

    python -m trio_uring            check this machine, then the echo comparison
    python -m trio_uring check      only the check
    python -m trio_uring demo [-c CONNS] [-d SECONDS]
                                    only the comparison: the same Trio echo server
                                    (trio.serve_tcp + SocketStream) on Trio's epoll
                                    and on io_uring, driven by the same client
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from functools import partial

import trio

import trio_uring
from trio_uring._ring import REQUIRED_FEATURES, Opcode, Ring, _read_text, _seccomp_mode

# The opcodes trio_uring submits, and what for.
USED_OPCODES = {
    Opcode.POLL_ADD: "wait_readable / wait_writable",
    Opcode.ASYNC_CANCEL: "cancellation",
    Opcode.READ: "force_wakeup (eventfd)",
}


def check() -> bool:
    print(f"kernel:              Linux {platform.release()} ({platform.machine()})")
    disabled = _read_text("/proc/sys/kernel/io_uring_disabled")
    print(f"io_uring_disabled:   {disabled if disabled is not None else 'n/a (sysctl absent)'}")
    seccomp = {"0": "none", "1": "strict", "2": "filter"}.get(_seccomp_mode() or "", "unknown")
    print(f"seccomp:             {seccomp}")
    try:
        ring = Ring(8, 16)
    except trio_uring.UringUnavailableError as exc:
        print("io_uring:            UNAVAILABLE")
        print(f"  {exc}")
        return False
    try:
        print(f"io_uring:            available (ring fd {ring.fd}, setup flags {ring.setup_flags:#x})")
        feats = [name for name, (bit, _) in REQUIRED_FEATURES.items() if ring.features & bit]
        print(f"required features:   {', '.join(feats)} (all present)")
        supported = ring.probe()
        for op, use in USED_OPCODES.items():
            mark = "yes" if op in supported else "NO"
            print(f"  IORING_OP_{op.name:<14} {mark:<4} {use}")
    finally:
        ring.close()
    return True


async def _serve(port_file: str) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        with open(port_file, "w") as f:
            f.write(str(listeners[0].socket.getsockname()[1]))


def echo_server_main(backend: str, port_file: str) -> None:
    run = trio_uring.run if backend == "io_uring" else trio.run
    try:
        run(_serve, port_file)
    except KeyboardInterrupt:
        pass


async def _client(port: int, conns: int, seconds: float, size: int) -> tuple[int, int]:
    done = 0
    errors = 0
    payload = bytes(range(256)) * (size // 256 + 1)

    async def one(i: int) -> None:
        nonlocal done, errors
        msg = payload[i % 256 : i % 256 + size]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            while True:
                await stream.send_all(msg)
                got = b""
                while len(got) < size:
                    chunk = await stream.receive_some(size - len(got))
                    if not chunk:
                        raise trio.BrokenResourceError("server closed")
                    got += chunk
                if got != msg:
                    errors += 1
                done += 1

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for i in range(conns):
                nursery.start_soon(one, i)
    return done, errors


def demo(conns: int, seconds: float, size: int = 64) -> None:
    print(f"\nEcho over loopback: trio.serve_tcp + SocketStream server, {conns} connections, "
          f"{size}-byte messages, {seconds:g} s each (client: Trio on epoll, separate process).")
    print("A Python client shares this machine with the server, so read this as a demo;")
    print("benchmarks/ has the measured comparison with a C load generator.\n")
    rows = []
    for backend in ("epoll", "io_uring"):
        port_file = f"/tmp/trio_uring_demo_{os.getpid()}_{backend}"
        server = subprocess.Popen(
            [sys.executable, "-m", "trio_uring", "_echo-server", backend, port_file],
        )
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(port_file) or not open(port_file).read():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"the {backend} echo server did not start")
                time.sleep(0.02)
            port = int(open(port_file).read())
            done, errors = trio.run(_client, port, conns, seconds, size)
        finally:
            server.terminate()
            server.wait()
            if os.path.exists(port_file):
                os.unlink(port_file)
        rows.append((backend, done / seconds, errors))
    base = rows[0][1]
    print(f"{'server backend':<16} {'round trips/s':>14} {'vs epoll':>9} {'errors':>7}")
    for backend, rate, errors in rows:
        print(f"{backend:<16} {rate:>14,.0f} {rate / base:>8.2f}x {errors:>7}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trio_uring", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("check", help="is io_uring usable here, and why not")
    demo_p = sub.add_parser("demo", help="echo on io_uring vs Trio's epoll")
    for p in (parser, demo_p):
        p.add_argument("-c", "--connections", type=int, default=16)
        p.add_argument("-d", "--duration", type=float, default=2.0)
    server_p = sub.add_parser("_echo-server")
    server_p.add_argument("backend")
    server_p.add_argument("port_file")
    args = parser.parse_args(argv)

    if args.command == "_echo-server":
        echo_server_main(args.backend, args.port_file)
        return 0
    if args.command in (None, "check"):
        ok = check()
        if args.command == "check" or not ok:
            return 0 if ok else 1
    demo(args.connections, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
