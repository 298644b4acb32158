#!/usr/bin/env python3
"""Serving a file over loopback: trio_uring.send_file vs reading it in Python and send_all.

    .venv/bin/python benchmarks/send_file.py                 # 1 MiB, 256 KiB, 64 KiB; 5 reps of 3 s
    .venv/bin/python benchmarks/send_file.py -r 1 -d 1       # a quick look (~20 s)

One server process per window, the same structure for every form: ``trio_uring.run``
+ ``trio.serve_tcp``, a handler that answers each one-byte request with the whole
file on its SocketStream. The forms differ only in how the file goes out:

* ``send_file``: ``await trio_uring.send_file(stream, fd, 0, size)`` (up to 64 KiB:
  an inline READ from the page cache and a SEND; larger: IORING_OP_SPLICE, file ->
  pipe -> socket);
* ``send_file_splice``: the same with every size by SPLICE (``SMALL_FILE = 0``);
* ``read_send_all``: ``os.pread(fd, size, 0)`` (the page cache, in the event loop's
  thread: the fastest way to get the bytes into Python) then ``await
  stream.send_all(data)``;
* ``sendfile_loop`` (reference, not a trio_uring API): ``os.sendfile`` on the
  non-blocking socket from the event loop's thread, waiting for POLLOUT when it is
  full: what asyncio's ``loop.sock_sendfile`` does.

The client (``send_file_client.c``, built with gcc) keeps N connections asking for
the file, one request at a time each, and checks each connection's first response
against the file. Server pinned to CPU 1, client to CPU 0. Windows are interleaved
(forms rotated each repetition); reported: medians of requests/s and of the server's
CPU µs per request (user + system of all its threads, io-wq workers included, from
/proc/PID/stat).

Writes benchmarks/results/send-file-<timestamp>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

FORMS = ("send_file", "send_file_splice", "read_send_all", "sendfile_loop")
SIZES = {"1MiB": 1 << 20, "256KiB": 256 << 10, "64KiB": 64 << 10}


# ---------------------------------------------------------------- the server


def serve(form: str, path: str, port: int) -> None:
    import trio

    import trio_uring

    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    if form == "send_file_splice":
        from trio_uring import _send_file

        _send_file.SMALL_FILE = 0  # type: ignore[misc]  (every size by SPLICE)

    async def answer(stream: trio.SocketStream) -> None:
        if form.startswith("send_file"):
            await trio_uring.send_file(stream, fd, 0, size)
        elif form == "read_send_all":
            await stream.send_all(os.pread(fd, size, 0))
        else:
            sock = stream.socket
            offset = 0
            while offset < size:
                try:
                    offset += os.sendfile(sock.fileno(), fd, offset, size - offset)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)

    async def handler(stream: trio.SocketStream) -> None:
        while True:
            request = await stream.receive_some(64)
            if not request:
                return
            for _ in range(len(request)):
                await answer(stream)

    async def main() -> None:
        await trio.serve_tcp(handler, port, host="127.0.0.1")

    trio_uring.run(main)


# ---------------------------------------------------------------- the runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def window(python: str, client: str, form: str, path: str, size: int, conns: int, seconds: float) -> dict[str, float]:
    port = free_port()
    server = harness.Server([python, os.path.abspath(__file__), "--serve", form, "--file", path, "--port", str(port)])
    try:
        server.wait_listening(port, listening)
        argv = [client, "127.0.0.1", str(port), str(size), str(conns)]
        rc, out, err, _ = harness.run_client([*argv, "0.3", path], timeout=30)  # warm-up, checks the bytes
        if rc:
            raise RuntimeError(f"{form}: warm-up client failed ({rc}): {err.strip()} {server.output()[-600:]}")
        cpu0 = harness.proc_cpu_s(server.pid)
        rc, out, err, _ = harness.run_client([*argv, str(seconds)], timeout=seconds + 30)
        cpu1 = harness.proc_cpu_s(server.pid)
        if rc or cpu0 is None or cpu1 is None:
            raise RuntimeError(f"{form}: client failed ({rc}): {err.strip()} {server.output()[-600:]}")
        fields = out.split()
        requests, elapsed = int(fields[1]), float(fields[3])
        return {"rps": requests / elapsed, "cpu_us": 1e6 * (cpu1 - cpu0) / max(requests, 1), "requests": requests}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", choices=FORMS, help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-d", "--seconds", type=float, default=3.0)
    ap.add_argument("-c", "--conns", type=int, default=4)
    ap.add_argument("-s", "--forms", default=",".join(FORMS))
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--no-write", action="store_true", help="print the report only")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.file, args.port)
        return

    forms = args.forms.split(",")
    sizes = args.sizes.split(",")
    python = harness.default_python()
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        client = os.path.join(tmp, "send_file_client")
        subprocess.run(["gcc", "-O2", "-o", client, os.path.join(HERE, "send_file_client.c"), "-lpthread"], check=True)
        paths = {}
        for name in sizes:
            paths[name] = os.path.join(tmp, name)
            with open(paths[name], "wb") as f:
                f.write(os.urandom(SIZES[name]))
        for rep in range(args.reps):
            order = forms[rep % len(forms):] + forms[: rep % len(forms)]
            for name in sizes:
                for form in order:
                    result = window(python, client, form, paths[name], SIZES[name], args.conns, args.seconds)
                    runs.append({"rep": rep, "size": name, "form": form, **result})
                    harness.log("send_file", f"rep {rep} {name} {form}: {result['rps']:,.0f} req/s, "
                                f"{result['cpu_us']:.1f} µs CPU/req")

    md = report(runs, forms, sizes, args)
    print(md)
    if not args.no_write:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = os.path.join(harness.RESULTS, f"send-file-{stamp}")
        with open(base + ".md", "w") as f:
            f.write(md)
        with open(base + ".json", "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)
        print(f"wrote {base}.md and .json", file=sys.stderr)


def report(runs: list[dict[str, object]], forms: list[str], sizes: list[str], args: argparse.Namespace) -> str:
    def med(size: str, form: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs if r["size"] == size and r["form"] == form)  # type: ignore[arg-type]

    lines = [
        "# Serving a file: trio_uring.send_file vs read + send_all",
        "",
        f"`benchmarks/send_file.py -r {args.reps} -d {args.seconds:g} -c {args.conns}` "
        f"({datetime.datetime.now().isoformat(timespec='seconds')}; Linux {os.uname().release}, "
        f"{os.cpu_count()} CPUs shared with other jobs: noisy)",
        "",
        "Medians over the repetitions; server on CPU 1, client on CPU 0; CPU = the server "
        "process's user + system time (io-wq threads included) per request.",
        "",
        "| file | form | requests/s | server CPU µs/request | req/s vs read_send_all | CPU vs read_send_all |",
        "|---|---|---|---|---|---|",
    ]
    for size in sizes:
        base_rps = med(size, "read_send_all", "rps") if "read_send_all" in forms else None
        base_cpu = med(size, "read_send_all", "cpu_us") if "read_send_all" in forms else None
        for form in forms:
            rps, cpu = med(size, form, "rps"), med(size, form, "cpu_us")
            r1 = f"{rps / base_rps:.2f}x" if base_rps else "-"
            r2 = f"{cpu / base_cpu:.2f}x" if base_cpu else "-"
            lines.append(f"| {size} | {form} | {rps:,.0f} | {cpu:.1f} | {r1} | {r2} |")
    lines += ["", "Every window (rep, file, form: req/s, CPU µs/req):", ""]
    for r in runs:
        lines.append(f"* {r['rep']} {r['size']} {r['form']}: {float(r['rps']):,.0f}, {float(r['cpu_us']):.1f}")  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
