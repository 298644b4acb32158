#!/usr/bin/env python3
"""Fan-in: 64 connections stream messages to one Trio server that reads with receive_some
(issue 15 point 4: the receive modes, measured).

    benchmarks/fanin.py                      # 64 B and 16 KiB messages, every variant, 3 reps
    benchmarks/fanin.py -r 1 --scale 0.2     # quick look
    benchmarks/fanin.py --scenarios 64k-paced,4k-paced

Client: benchmarks/fanin_writer.c (C, one write(2) per message, as fast as the server
reads), pinned to CPU 0; server: benchmarks/servers/fanin_server.py, pinned to CPU 1,
one variant per run, runs interleaved (variant order rotates each repetition):

    trio-epoll            stock Trio (the reference)
    select                trio_uring, a waiting receive takes one provided buffer (1024 x 16 KiB)
    bundle                trio_uring, IORING_RECVSEND_BUNDLE: several buffers (1024 x 16 KiB)
    select-1m             select with a 1 MiB ring (64 x 16 KiB)

Scenarios: 64B, 16k (64 connections flat out), 64k-1conn (one connection flat
out), 64k-paced (8 connections, one 64 KiB message each every 2 ms), 4k-paced (64
connections, one 4 KiB message each every 2 ms).

Per scenario and variant (medians): MB/s and its ratio to trio-epoll, server CPU µs
per MB and per receive_some, bytes per receive_some, RECV SQEs per receive_some (the
immediate attempt counts: 1 = never waited, 2 = always waited; each RECV posts one
CQE). Writes results/<timestamp>-fanin.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import harness as H

PROG = "fanin"
SERVER = os.path.join(H.HERE, "servers", "fanin_server.py")
VARIANTS: dict[str, list[str]] = {
    "trio-epoll": [],
    "select": [],
    "bundle": [],
    "select-1m": ["--buffers", "64", "--buffer-size", "16384"],
}
# name: (message size, connections (0: --conns), writer's pause in µs (0: flat out),
# megabytes per run at --scale 1: enough for a server CPU time well above the
# kernel's accounting tick).
# Flat out, a receive almost always finds data queued (the immediate attempt serves
# it); paced, the server keeps up and every receive waits in the kernel: the waiting
# op, where the modes differ, does the work.
SCENARIOS = {"64B": (64, 0, 0, 32), "16k": (16384, 0, 0, 400), "64k-1conn": (65536, 1, 0, 400),
             "64k-paced": (65536, 8, 2000, 200), "4k-paced": (4096, 0, 2000, 100)}


def one_run(args: Any, variant: str, size: int, conns: int, pause_us: int, mb: float) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="fanin-")
    stats = os.path.join(tmp, "stats.json")
    msgs = max(1, int(mb * 1_000_000) // (conns * size))
    argv = [args.python, SERVER, "--variant", variant, "-c", str(conns), "--stats", stats,
            *VARIANTS[variant]]
    server = H.Server(argv, H.SERVER_CPU, cwd=os.path.join(H.HERE, "servers"))
    try:
        t_end = time.monotonic() + 15
        while "listening" not in server.output():
            if server.proc.poll() is not None or time.monotonic() > t_end:
                raise RuntimeError(f"{variant}: server did not start: {server.output()[-600:]}")
            time.sleep(0.02)
        port = int(server.output().split("listening", 1)[1].split()[0])
        rc, out, err, _ = H.run_client([H.tool("fanin_writer"), "-p", str(port), "-c", str(conns), "-m",
                                        str(msgs), "-s", str(size), "--pause-us", str(pause_us)], timeout=300)
        if rc:
            raise RuntimeError(f"{variant}: writer failed ({rc}): {err[-400:]}")
        sent = json.loads(out)["bytes"]
        t_end = time.monotonic() + 30
        while not os.path.exists(stats) and time.monotonic() < t_end:
            time.sleep(0.02)
        time.sleep(0.05)
        with open(stats) as f:
            rec: dict[str, Any] = json.load(f)
    finally:
        server.stop()
    if rec["bytes"] != sent:
        raise RuntimeError(f"{variant}: server got {rec['bytes']} bytes of {sent}")
    rec.update(variant=variant, size=size, mb_s=rec["bytes"] / rec["seconds"] / 1e6,
               cpu_us_per_mb=rec["cpu_s"] * 1e6 / (rec["bytes"] / 1e6),
               cpu_us_per_receive=rec["cpu_s"] * 1e6 / rec["receives"],
               bytes_per_receive=rec["bytes"] / rec["receives"])
    if "recv_sqes" in rec:
        rec["sqes_per_receive"] = rec["recv_sqes"] / rec["receives"]
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("-c", "--conns", type=int, default=64)
    ap.add_argument("--scale", type=float, default=1.0, help="times each scenario's megabytes per run")
    ap.add_argument("-v", "--variants", default=",".join(VARIANTS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--python", default=H.default_python())
    ap.add_argument("--note", default="", help="a line for the report (e.g. machine load)")
    args = ap.parse_args()
    variants = args.variants.split(",")
    scenarios = args.scenarios.split(",")
    H._build(os.path.join(H.HERE, "fanin_writer.c"), H.tool("fanin_writer"))
    runs: list[dict[str, Any]] = []
    with H.stopping_on_sigterm():
        for rep in range(args.reps):
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for scen in scenarios:
                for v in order:
                    size, conns, pause_us, mb = SCENARIOS[scen]
                    rec = one_run(args, v, size, conns or args.conns, pause_us, mb * args.scale)
                    rec.update(scenario=scen, rep=rep)
                    runs.append(rec)
                    H.log(PROG, f"{scen} {v} rep {rep}: {rec['mb_s']:.0f} MB/s, {rec['cpu_us_per_mb']:.0f} us CPU/MB,"
                                f" {rec['bytes_per_receive']:.0f} B/receive, mode {rec.get('mode', '-')}")
    md = report(args, runs, variants, scenarios)
    base = H.outputs(H.RESULTS, "fanin")
    for path in H.write_report(base, md, {"args": vars(args), "runs": runs}):
        print(os.path.relpath(path, H.REPO))
    print(md)


def report(args: Any, runs: list[dict[str, Any]], variants: list[str], scenarios: list[str]) -> str:
    cmd = "benchmarks/fanin.py " + " ".join(sys.argv[1:])
    lines = [f"# Fan-in: connections streaming to receive_some loops ({args.conns} unless the scenario says)", "",
             f"Command: `{cmd}` ({args.reps} interleaved repetitions; medians). "
             f"Megabytes per run: the scenario's x {args.scale:g}; "
             f"writer pinned to CPU {H.CLIENT_CPU}, server to CPU {H.SERVER_CPU}.",
             f"Kernel {os.uname().release}. {args.note}".rstrip(), ""]
    for scen in scenarios:
        lines += [f"## {scen} messages", "",
                  "| variant | mode used | buffer ring | MB/s | vs epoll | CPU µs/MB | CPU µs/receive | B/receive "
                  "| RECV SQEs/receive |", "|---|---|---|---|---|---|---|---|---|"]
        ref = H.median([r["mb_s"] for r in runs if r["scenario"] == scen and r["variant"] == "trio-epoll"])
        for v in variants:
            rs = [r for r in runs if r["scenario"] == scen and r["variant"] == v]
            if not rs:
                continue

            def med(key: str, rs: list[dict[str, Any]] = rs) -> float | None:
                return H.median([r.get(key) for r in rs])

            mb_s = med("mb_s")
            ratio = f"{mb_s / ref:.2f}x" if ref and mb_s else "-"
            ring = f"{rs[0]['buffer_bytes'] // 1024} KiB" if "buffer_bytes" in rs[0] else "-"
            sqes = med("sqes_per_receive")
            lines.append(f"| {v} | {rs[0].get('mode', '-')} | {ring} | {H.fnum(mb_s, 0)} | {ratio} "
                         f"| {H.fnum(med('cpu_us_per_mb'), 0)} | {H.fnum(med('cpu_us_per_receive'), 1)} "
                         f"| {H.fnum(med('bytes_per_receive'), 0)} | {H.fnum(sqes, 2) if sqes else '-'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
