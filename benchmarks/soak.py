#!/usr/bin/env python3
"""Soak test: hours-long-style mixed load against a trio.serve_tcp echo server on io_uring.

    .venv/bin/python benchmarks/soak.py                 # 10 minutes (the default)
    .venv/bin/python benchmarks/soak.py --minutes 1     # a quick check
    .venv/bin/python benchmarks/soak.py --trio-streams 0  # Trio's own SocketStream code

The server is ``trio.serve_tcp`` with an echo handler under ``trio_uring.run``, in a
child process (this script again, with ``--serve``). Its streams are Trio's
SocketStream, which takes trio_uring's short path (the default, ``--trio-streams 1``)
or, with ``--trio-streams 0`` (``TRIO_URING_TRIO_STREAMS=0`` in the server's
environment), runs Trio's own code over trio_uring's sockets. The clients run here, on stock
Trio (epoll), so a fault in the backend cannot hide in its own clients. They mix:

* echo clients: connect, a random number of requests of random sizes (1 B - 64 KiB),
  each echo checked byte for byte, then a clean close;
* impatient clients: a request cancelled part-way (a cancel scope around it, or a
  close in the middle of sending or receiving; half of the closes reset the
  connection with SO_LINGER 0);
* reconnect storms: every --storm-every seconds, --storm-size connections opened at
  once, half of which send a request and close without reading the reply.

Every --report-every seconds (10) it prints the requests served, the intentional
disconnects, the errors, and the server's RSS (VmRSS from /proc/PID/status) and fd
count (/proc/PID/fd). After the warm-up (--warmup, default 20% of the run, 10-60 s)
it takes the RSS baseline; at the end it stops the clients, waits for the server's
fds to return to their count before the load started, and prints a summary.

Exit status 1 if the server's RSS grew by more than --max-rss-growth (5%) after the
warm-up, if its fds did not return to the baseline once the clients were gone, if an
echo came back wrong, or if the server died or reported an error it did not expect.
Everything is bounded: the run stops itself after --minutes, and the server exits on
its own a little later if this process is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial

import trio

LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


# ---------------------------------------------------------------- the server (child process)


def serve(deadline: float) -> None:
    """trio.serve_tcp echo under trio_uring.run, until stdin closes or ``deadline`` seconds pass."""
    import trio_uring

    counts: dict[str, int] = {"connections": 0, "broken": 0}
    unexpected: dict[str, int] = {}

    async def handler(stream: trio.SocketStream) -> None:
        counts["connections"] += 1
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            counts["broken"] += 1  # the client reset or vanished mid-request: expected here
        except Exception as exc:  # anything else is a finding, but must not stop the server
            name = f"{type(exc).__name__}: {exc}"[:200]
            unexpected[name] = unexpected.get(name, 0) + 1

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1", backlog=4096))
            port = listeners[0].socket.getsockname()[1]
            backend = trio.lowlevel.current_statistics().io_statistics.backend
            from trio_uring import _stream

            fast = trio.SocketStream.send_all is _stream._send_all  # TRIO_URING_TRIO_STREAMS
            print(json.dumps({"port": port, "backend": backend, "fast_trio_streams": fast}), flush=True)
            os.set_blocking(0, False)
            with trio.move_on_after(deadline):
                while True:
                    await trio.lowlevel.wait_readable(0)
                    if not os.read(0, 4096):  # the parent closed our stdin: stop
                        break
            nursery.cancel_scope.cancel()
        print(json.dumps({"server": counts, "unexpected": unexpected}), flush=True)

    trio_uring.run(main)


# ---------------------------------------------------------------- watching the server


def server_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def server_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------- the clients (this process)


@dataclass
class Stats:
    requests: int = 0  # echoes that came back complete and correct
    bytes: int = 0
    connections: int = 0
    disconnects: int = 0  # intentional: cancelled or abandoned requests
    storms: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # unexpected connection errors
    corrupt: int = 0  # an echo that came back different: always a failure

    def error(self, exc: BaseException) -> None:
        name = f"{type(exc).__name__}: {exc}"[:160]
        self.errors[name] = self.errors.get(name, 0) + 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


async def echo(stream: trio.SocketStream, payload: bytes, stats: Stats) -> None:
    async def send() -> None:
        await stream.send_all(payload)

    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)  # big requests: read while sending
        while len(got) < len(payload):
            data = await stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("the server closed mid-echo")
            got += data
    if got != payload:
        stats.corrupt += 1
        raise AssertionError(f"echo of {len(payload)} bytes came back different")
    stats.requests += 1
    stats.bytes += len(payload)


def reset_on_close(stream: trio.SocketStream) -> None:
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)


async def connect(port: int, stats: Stats) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    stats.connections += 1
    return stream


async def client(port: int, rng: random.Random, stats: Stats, stop: trio.Event) -> None:
    """Connections one after another until ``stop``: mostly echoes, some abandoned."""
    while not stop.is_set():
        try:
            stream = await connect(port, stats)
        except OSError as exc:
            stats.error(exc)
            await trio.sleep(0.1)
            continue
        try:
            for _ in range(rng.randrange(1, 50)):
                if stop.is_set():
                    break
                size = rng.choice([1, 17, 512, 4096, 16384, 65536])
                payload = rng.randbytes(size)
                kind = rng.random()
                if kind < 0.02:  # cancelled part-way: the stream is unusable after that
                    with trio.move_on_after(rng.uniform(0, 0.002)):
                        await echo(stream, payload, stats)
                        continue
                    stats.disconnects += 1
                    if rng.random() < 0.5:
                        reset_on_close(stream)
                    break
                if kind < 0.04:  # sends half a request and leaves
                    await stream.send_all(payload[: size // 2 + 1])
                    stats.disconnects += 1
                    if rng.random() < 0.5:
                        reset_on_close(stream)
                    break
                await echo(stream, payload, stats)
        except (trio.BrokenResourceError, OSError) as exc:
            stats.error(exc)
        except AssertionError:
            pass  # counted in stats.corrupt
        finally:
            await trio.aclose_forcefully(stream)


async def storm(port: int, rng: random.Random, stats: Stats, size: int) -> None:
    """``size`` connections at once; half leave without reading their reply."""
    stats.storms += 1

    async def one(i: int) -> None:
        try:
            stream = await connect(port, stats)
        except OSError as exc:
            stats.error(exc)
            return
        try:
            if i % 2:
                await echo(stream, rng.randbytes(rng.randrange(1, 2048)), stats)
            else:
                await stream.send_all(b"storm")
                stats.disconnects += 1
                if i % 4 == 0:
                    reset_on_close(stream)
        except (trio.BrokenResourceError, OSError) as exc:
            stats.error(exc)
        except AssertionError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        for i in range(size):
            nursery.start_soon(one, i)


@dataclass
class Sample:
    t: float
    requests: int
    rss_kb: int
    fds: int


async def load(args: argparse.Namespace, port: int, server: subprocess.Popen[str]) -> dict[str, object]:
    assert trio.lowlevel.current_statistics().io_statistics.backend == "epoll"
    stats = Stats()
    stop = trio.Event()
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(60.0, max(10.0, duration * 0.2))
    rng = random.Random(args.seed)
    samples: list[Sample] = []
    fds_idle = server_fds(server.pid)  # before any client: listener, ring, eventfd, ...
    rss_idle = server_rss_kb(server.pid)
    start = time.monotonic()
    print(
        f"soak: {args.minutes:g} min, {args.clients} clients, storms of {args.storm_size} every "
        f"{args.storm_every:g}s, warm-up {warmup:g}s; server pid {server.pid} on port {port} "
        f"(RSS {rss_idle / 1024:.1f} MB, {fds_idle} fds idle)",
        flush=True,
    )

    def sample() -> Sample:
        s = Sample(time.monotonic() - start, stats.requests, server_rss_kb(server.pid), server_fds(server.pid))
        samples.append(s)
        return s

    async def reporter() -> None:
        last = Sample(0.0, 0, rss_idle, fds_idle)
        while not stop.is_set():
            with trio.move_on_after(args.report_every):
                await stop.wait()
            if server.poll() is not None:
                raise RuntimeError(f"the server died (exit status {server.returncode})")
            s = sample()
            rate = (s.requests - last.requests) / max(s.t - last.t, 1e-9)
            print(
                f"[{s.t:6.0f}s] requests {s.requests:9d} ({rate:7.0f}/s)  connections {stats.connections:7d}  "
                f"disconnects {stats.disconnects:6d}  errors {stats.error_count:4d}  corrupt {stats.corrupt}  "
                f"server RSS {s.rss_kb / 1024:6.1f} MB  fds {s.fds:5d}",
                flush=True,
            )
            last = s

    async def storms() -> None:
        while True:
            await trio.sleep(args.storm_every)
            await storm(port, random.Random(rng.random()), stats, args.storm_size)

    rss_after_warmup: list[int] = []

    async def after_warmup() -> None:
        await trio.sleep(warmup)
        for _ in range(3):  # a median of three, a second apart: one sample is noisy
            rss_after_warmup.append(server_rss_kb(server.pid))
            await trio.sleep(1)

    rss_end: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reporter)
        async with trio.open_nursery() as clients:
            clients.start_soon(after_warmup)
            clients.start_soon(storms)
            for i in range(args.clients):
                clients.start_soon(client, port, random.Random(f"{args.seed}-{i}"), stats, stop)
            await trio.sleep(duration - 3)
            for _ in range(3):  # the end, measured under the same load as the start
                rss_end.append(server_rss_kb(server.pid))
                await trio.sleep(1)
            stop.set()
            clients.cancel_scope.cancel()
        # Every client connection is closed now; the server's handlers see EOF or a
        # reset and close theirs. Its fds must come back to what they were idle.
        deadline = time.monotonic() + args.settle
        while server_fds(server.pid) != fds_idle and time.monotonic() < deadline:
            await trio.sleep(0.1)
        fds_end = server_fds(server.pid)
        stop.set()
    elapsed = time.monotonic() - start
    peak = max([s.fds for s in samples] or [fds_end])
    rss_start = statistics.median(rss_after_warmup) if rss_after_warmup else rss_idle
    rss_stop = statistics.median(rss_end) if rss_end else server_rss_kb(server.pid)
    return {
        "duration_s": round(elapsed, 1),
        "warmup_s": warmup,
        "requests": stats.requests,
        "requests_per_s": round(stats.requests / elapsed),
        "megabytes_echoed": round(stats.bytes / 1e6, 1),
        "connections": stats.connections,
        "disconnects": stats.disconnects,
        "storms": stats.storms,
        "errors": stats.errors,
        "corrupt": stats.corrupt,
        "rss_kb_idle": rss_idle,
        "rss_kb_start": round(rss_start),
        "rss_kb_end": round(rss_stop),
        "rss_growth_pct": round(100 * (rss_stop - rss_start) / rss_start, 2),
        "fds_idle": fds_idle,
        "fds_peak": peak,
        "fds_end": fds_end,
        "samples": [(round(s.t), s.requests, s.rss_kb, s.fds) for s in samples],
    }


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent echo clients (default 64)")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds before the RSS baseline (default: 20%% of the run, 10-60)"
    )
    parser.add_argument("--report-every", type=float, default=10.0, help="seconds between progress lines (default 10)")
    parser.add_argument("--storm-every", type=float, default=15.0, help="seconds between reconnect storms (default 15)")
    parser.add_argument("--storm-size", type=int, default=200, help="connections per storm (default 200)")
    parser.add_argument(
        "--max-rss-growth", type=float, default=5.0, help="allowed RSS growth after warm-up, %% (default 5)"
    )
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds the server's fds get to return to baseline (default 10)"
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("TRIO_URING_SEED", "20261122")))
    parser.add_argument(
        "--trio-streams",
        type=int,
        choices=(0, 1),
        default=1,
        help="1: Trio's SocketStream takes trio_uring's short path (default); 0: Trio's own code",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    parser.add_argument("--serve", type=float, metavar="DEADLINE", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve is not None:
        serve(args.serve)
        return 0
    if not 0 < args.minutes <= 24 * 60:
        parser.error("--minutes must be in (0, 1440]")
    if args.minutes * 60 < 15:
        parser.error("--minutes must be at least 0.25 (warm-up plus measurements)")

    env = {k: v for k, v in os.environ.items() if k != "TRIO_URING"}  # clients stay on epoll
    env["TRIO_URING_TRIO_STREAMS"] = str(args.trio_streams)
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", str(args.minutes * 60 + 120)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    summary: dict[str, object] = {}
    failures: list[str] = []
    try:
        assert server.stdout is not None and server.stdin is not None
        hello = json.loads(server.stdout.readline() or "{}")
        if hello.get("backend") != "io_uring":
            raise RuntimeError(f"the server did not start on io_uring: {hello}")
        if hello.get("fast_trio_streams") != bool(args.trio_streams):
            raise RuntimeError(f"the server's streams are not the ones asked for: {hello}")
        print(f"server streams: {'trio_uring short path' if args.trio_streams else 'Trio own code'}", flush=True)
        try:
            summary = trio.run(load, args, hello["port"], server)
        except Exception as exc:  # the server died, or the load itself broke
            print(f"FAILED: the soak stopped early: {type(exc).__name__}: {exc}", flush=True)
            return 1
        try:
            out, _ = server.communicate(timeout=30)  # closes its stdin: the server stops
            final = json.loads(out.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            final = {"server": None, "unexpected": {"the server did not stop cleanly": 1}}
        summary["server"] = final["server"]
        summary["server_unexpected"] = final["unexpected"]
        summary["server_exit_status"] = server.returncode
        summary["fast_trio_streams"] = hello["fast_trio_streams"]
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGKILL)
            server.wait()

    growth = float(summary["rss_growth_pct"])  # type: ignore[arg-type]
    if growth > args.max_rss_growth:
        failures.append(f"server RSS grew {growth:.1f}% after the warm-up (limit {args.max_rss_growth:g}%)")
    if summary["fds_end"] != summary["fds_idle"]:
        failures.append(f"server fds did not return to baseline: {summary['fds_end']} != {summary['fds_idle']}")
    if summary["corrupt"]:
        failures.append(f"{summary['corrupt']} echoes came back different")
    if summary["server_unexpected"]:
        failures.append(f"the server reported unexpected errors: {summary['server_unexpected']}")
    if summary["server_exit_status"] != 0:
        failures.append(f"the server exited with status {summary['server_exit_status']}")

    print()
    print("summary")
    print(f"  duration      {summary['duration_s']} s (warm-up {summary['warmup_s']:g} s)")
    print(
        f"  requests      {summary['requests']} ({summary['requests_per_s']}/s, "
        f"{summary['megabytes_echoed']} MB echoed)"
    )
    print(
        f"  connections   {summary['connections']} ({summary['storms']} storms), "
        f"{summary['disconnects']} abandoned on purpose"
    )
    print(f"  errors        {sum(summary['errors'].values())} {summary['errors'] or ''}")  # type: ignore[attr-defined]
    print(f"  corrupt       {summary['corrupt']}")
    print(
        f"  server RSS    {summary['rss_kb_start'] / 1024:.1f} MB after warm-up "  # type: ignore[operator]
        f"-> {summary['rss_kb_end'] / 1024:.1f} MB at the end "  # type: ignore[operator]
        f"({summary['rss_growth_pct']:+.2f}%; "
        f"idle before the load: {summary['rss_kb_idle'] / 1024:.1f} MB)"  # type: ignore[operator]
    )
    print(
        f"  server fds    {summary['fds_idle']} idle, {summary['fds_peak']} peak, "
        f"{summary['fds_end']} after the clients left"
    )
    print(f"  server        {summary['server']}, unexpected errors: {summary['server_unexpected'] or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**summary, "failures": failures, "args": vars(args)}, f, indent=1)
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
