#!/usr/bin/env python3
"""Direct descriptors vs fds: does IOSQE_FIXED_FILE make the streams' path cheaper?

    .venv/bin/python benchmarks/direct.py [-p PAIRS] [-n ROUNDS] [-r REPS] [--size BYTES]

Two measurements, each form interleaved with the other in every repetition (the
median of R is reported), on TCP loopback connections made the same way for both:

* ``pingpong``: benchmarks/micro.py's in-process ping-pong (P pairs, N round trips
  of SIZE bytes each, one echo task per pair) with trio_uring's fast Trio
  ``SocketStream`` (fds) vs `trio_uring.direct.DirectSocketStream` (fixed files).
  CPU (user + system) per round trip.
* ``ring``: the ring path alone, no Trio in the loop: one MSG_DONTWAIT SEND and the
  RECV that takes it at the other end, each completed within one io_uring_enter
  (the C calls ``tu_send_now`` / ``tu_recv_now`` vs their ``_fixed`` forms), both
  forms in one run, in alternating batches. CPU per SEND + RECV (the thread's CPU
  time, precise; the user/system split the kernel samples at ticks is shown as a
  mean over all batches): the file lookup fixed files save is kernel time.

The ratio is of paired measurements: each repetition's (ping-pong) or batch's (ring)
direct form against the fd form next to it.

Writes benchmarks/results/direct-YYYYMMDD-HHMMSS.{json,md}. CPU time is counted for
this process only, so other load moves it less than wall time, but a shared machine
still adds noise (cache and frequency): compare forms within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import trio_uring
from trio_uring import direct
from trio_uring._iomanager import current_driver
from trio_uring._ring_cffi import ffi

LOCALHOST = "127.0.0.1"


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)  # microsecond resolution (os.times: clock ticks)
    return r.ru_utime, r.ru_stime


async def fd_pairs(n: int) -> list[tuple[trio.SocketStream, trio.SocketStream]]:
    (listener,) = await trio.open_tcp_listeners(0, host=LOCALHOST)
    port = listener.socket.getsockname()[1]
    pairs = []
    for _ in range(n):
        client = await trio.open_tcp_stream(LOCALHOST, port)
        server = await listener.accept()
        pairs.append((client, server))
    await listener.aclose()
    return pairs


async def direct_pairs(n: int) -> list[tuple[direct.DirectSocketStream, direct.DirectSocketStream]]:
    (listener,) = await direct.open_direct_tcp_listeners(0, host=LOCALHOST)
    port = listener.socket.getsockname()[1]
    pairs = []
    for _ in range(n):
        async with trio.open_nursery() as nursery:
            got: list[direct.DirectSocketStream] = []

            async def accept(got: list[direct.DirectSocketStream] = got) -> None:
                got.append(await listener.accept())

            nursery.start_soon(accept)
            client = await direct.open_direct_tcp_stream(LOCALHOST, port)
        pairs.append((client, got[0]))
    await listener.aclose()
    return pairs


async def pingpong(make: Callable[[int], Awaitable[list[Any]]], pairs: int, rounds: int, size: int) -> dict[str, float]:
    streams = await make(pairs)
    message = b"x" * size

    async def echo(s: Any) -> None:
        for _ in range(rounds):
            got = 0
            while got < size:
                data = await s.receive_some(65536)
                got += len(data)
                await s.send_all(data)

    async def client(s: Any) -> None:
        for _ in range(rounds):
            await s.send_all(message)
            got = 0
            while got < size:
                got += len(await s.receive_some(65536))

    user0, sys0 = cpu()
    async with trio.open_nursery() as nursery:
        for a, b in streams:
            nursery.start_soon(echo, b)
            nursery.start_soon(client, a)
    user1, sys1 = cpu()
    for a, b in streams:
        await a.aclose()
        await b.aclose()
    n = pairs * rounds
    return {"user": (user1 - user0) / n * 1e6, "system": (sys1 - sys0) / n * 1e6}


async def ring_paired(batches: int, iterations: int, size: int) -> dict[str, list[dict[str, float]]]:
    """Both forms in one run, in alternating batches of ``iterations`` (paired: the
    machine's drift hits both alike)."""
    driver = current_driver()
    assert driver is not None
    buf = ffi.new("char[]", size)
    rbuf = ffi.new("char[]", size)
    ((fa, fb),) = await fd_pairs(1)
    ((da, db),) = await direct_pairs(1)
    table = direct.current_table()
    assert table is not None
    # The C calls themselves on both sides (Driver.send_now adds a check in Python).
    calls = {
        "fd": (driver.ring.send_now, driver.ring.recv_now, fa.socket.fileno(), fb.socket.fileno()),
        "direct": (table.send_now, table.recv_now, da.socket.slot, db.socket.slot),
    }

    def batch(form: str) -> dict[str, float]:
        send, recv, a, b = calls[form]
        user0, sys0 = cpu()
        t0 = time.thread_time_ns()  # precise; the user/system split is sampled by the kernel
        for _ in range(iterations):
            if send(a, buf, size, 0) != size:
                raise RuntimeError("short send on loopback")
            got = 0
            while got < size:  # loopback delivers at once; a short count is rare
                got += recv(b, rbuf + got, size - got, 0)
        t1 = time.thread_time_ns()
        user1, sys1 = cpu()
        return {
            "total": (t1 - t0) / iterations / 1e3,
            "user": (user1 - user0) / iterations * 1e6,
            "system": (sys1 - sys0) / iterations * 1e6,
        }

    out: dict[str, list[dict[str, float]]] = {"fd": [], "direct": []}
    for i in range(batches):
        for form in ("fd", "direct") if i % 2 == 0 else ("direct", "fd"):
            out[form].append(batch(form))
    for stream in (fa, fb, da, db):
        await stream.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--pairs", type=int, default=64)
    parser.add_argument("-n", "--rounds", type=int, default=2000)
    parser.add_argument("-r", "--reps", type=int, default=7)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--ring-iterations", type=int, default=20_000, help="SEND + RECV pairs per batch")
    parser.add_argument("--ring-batches", type=int, default=10, help="batches per form and repetition")
    parser.add_argument("--no-write", action="store_true", help="print only; write no result files")
    args = parser.parse_args()

    forms = {"fd": fd_pairs, "direct": direct_pairs}
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        "pingpong": {f: [] for f in forms},
        "ring": {f: [] for f in forms},
    }
    for rep in range(args.reps):
        order = list(forms) if rep % 2 == 0 else list(reversed(forms))  # alternate who goes first
        for form in order:
            results["pingpong"][form].append(
                trio_uring.run(pingpong, forms[form], args.pairs, args.rounds, args.size)
            )
        paired = trio_uring.run(ring_paired, args.ring_batches, args.ring_iterations, args.size)
        for form in forms:
            results["ring"][form].extend(paired[form])

    summary: dict[str, dict[str, dict[str, float]]] = {}
    lines = []
    for bench, unit in (("pingpong", "per round trip"), ("ring", "per SEND + RECV")):
        summary[bench] = {}
        for form, reps in results[bench].items():
            # The user/system split is sampled (ticks): its sums over all repetitions
            # are what it is good for. The total is precise.
            user = statistics.fmean(r["user"] for r in reps)
            system = statistics.fmean(r["system"] for r in reps)
            total = statistics.median(r.get("total", r["user"] + r["system"]) for r in reps)
            summary[bench][form] = {"user_us_mean": user, "system_us_mean": system, "total_us_median": total}
        pairs = zip(results[bench]["fd"], results[bench]["direct"])  # noqa: B905  (same length)
        ratios = [d.get("total", d["user"] + d["system"]) / f.get("total", f["user"] + f["system"]) for f, d in pairs]
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        summary[bench]["direct/fd"] = {"median": statistics.median(ratios), "q1": q[0], "q3": q[2], "n": len(ratios)}
        lines.append(f"{bench} (CPU {unit}, {args.size} B):")
        for form in forms:
            s = summary[bench][form]
            lines.append(
                f"  {form:7} {s['total_us_median']:7.2f} us (median; mean split: user {s['user_us_mean']:6.2f}, "
                f"system {s['system_us_mean']:6.2f})"
            )
        r = summary[bench]["direct/fd"]
        lines.append(
            f"  direct/fd, paired: median {r['median']:.3f} (quartiles {r['q1']:.3f}-{r['q3']:.3f}, n={r['n']})"
        )
    text = "\n".join(lines)
    print(text)
    if args.no_write:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    outdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(outdir, exist_ok=True)
    meta = {
        "command": "benchmarks/direct.py " + " ".join(sys.argv[1:]),
        "date_utc": stamp,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "trio": trio.__version__,
        "cpus": os.cpu_count(),
        "args": vars(args),
        "note": "paired, interleaved repetitions / batches; CPU per unit (ping-pong: the process; ring: the thread)",
    }
    with open(os.path.join(outdir, f"direct-{stamp}.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "raw": results}, f, indent=1)
    with open(os.path.join(outdir, f"direct-{stamp}.md"), "w") as f:
        f.write(f"# Direct descriptors vs fds ({stamp} UTC)\n\n")
        f.write(f"`{meta['command']}` on Linux {meta['kernel']}, Python {meta['python']}, Trio {meta['trio']}, "
                f"{meta['cpus']} CPUs (shared with other work: noisy).\n\n```\n{text}\n```\n")  # fmt: skip
    print(f"wrote benchmarks/results/direct-{stamp}.{{json,md}}")


if __name__ == "__main__":
    main()
