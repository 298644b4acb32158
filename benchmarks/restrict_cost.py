#!/usr/bin/env python3
"""What the restricted ring costs (trio_uring/_restrict.py): restricted vs unrestricted.

    benchmarks/restrict_cost.py              # all three measurements
    benchmarks/restrict_cost.py --no-echo    # only the in-process ones (~10 s)

1. Ring set-up: ``open_ring`` + ``close`` with UringIOManager's sizes and flags
   (SQ 512, CQ 8192, COOP_TASKRUN), restricted or not; blocks of 50, interleaved.
   Restricted costs two more io_uring_register calls (RESTRICTIONS, ENABLE_RINGS).
2. A whole run: ``trio_uring.run(trivial)`` (one checkpoint), with
   ``UringIOManager.restrict`` on or off; blocks of 30, interleaved, 900 each.
3. Echo throughput: the shared harness's run.py (``/work/shared/bench``, copied and
   built by compare.py) with its trio_echo.py server on trio_uring's streams, once
   with TRIO_URING_RESTRICT=1 and once with 0, interleaved repetitions; server on CPU
   1, loadgen on CPU 0; run.py's server CPU per request.

Writes benchmarks/results/restrict-<timestamp>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benchmarks/compare.py: the harness copy and loadgen build)

RESULTS = os.path.join(HERE, "results")


def ring_setup(blocks: int, per_block: int) -> dict[str, float]:
    from trio_uring import UringIOManager
    from trio_uring._restrict import open_ring

    times: dict[bool, list[float]] = {True: [], False: []}
    sq, cq = UringIOManager.sq_entries, UringIOManager.cq_entries
    for _ in range(blocks):
        for restrict in (True, False):
            t0 = time.perf_counter()
            for _ in range(per_block):
                ring, _state = open_ring(sq, cq, coop_taskrun=True, restrict=restrict)
                ring.close()
            times[restrict].append((time.perf_counter() - t0) / per_block)
    return {"restricted_us": 1e6 * statistics.median(times[True]),
            "unrestricted_us": 1e6 * statistics.median(times[False])}  # fmt: skip


def whole_runs(blocks: int, per_block: int) -> dict[str, float]:
    import trio

    import trio_uring

    async def trivial() -> None:
        await trio.lowlevel.checkpoint()

    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(blocks):
            for restrict in (True, False):
                trio_uring.UringIOManager.restrict = restrict
                t0 = time.perf_counter()
                for _ in range(per_block):
                    trio_uring.run(trivial)
                times[restrict].append((time.perf_counter() - t0) / per_block)
    finally:
        trio_uring.UringIOManager.restrict = True
    return {"restricted_us": 1e6 * statistics.median(times[True]),
            "unrestricted_us": 1e6 * statistics.median(times[False])}  # fmt: skip


def echo(args: argparse.Namespace) -> dict:
    compare.prepare_harness(args.bench_dir, [])
    server = "{python} servers/trio_echo.py --backend uring-streams --port {port}"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.json")
        argv = [sys.executable, os.path.join(compare.HARNESS, "run.py"),
                "-s", f"restricted=env TRIO_URING_RESTRICT=1 {server}",
                "-s", f"unrestricted=env TRIO_URING_RESTRICT=0 {server}",
                "-S", args.scenarios, "-r", str(args.reps), "-d", str(args.duration),
                "--python", args.python, "-o", out]  # fmt: skip
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
        with open(out) as f:
            data = json.load(f)
    result: dict = {"scenarios": {}}
    for sname in args.scenarios.split(","):
        row = {}
        for form in ("restricted", "unrestricted"):
            _, runs = compare.selected(data["runs"], sname, form)
            row[form] = {
                "rps": statistics.median(r["result"]["rps"] for r in runs),
                "us_per_req": statistics.median(1e6 * r["result"]["server_cpu"] / r["result"]["rps"] for r in runs),
                "reps": len(runs),
                "errors": sum(r["result"]["errors"]["total"] for r in runs),
            }
        result["scenarios"][sname] = row
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-echo", action="store_true")
    ap.add_argument("-S", "--scenarios", default="echo-c1-s64,echo-c64-s64")
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-d", "--duration", type=float, default=2.0)
    ap.add_argument("--python", default=os.path.join(compare.REPO, ".venv", "bin", "python"))
    ap.add_argument("--bench-dir", default=compare.SHARED_BENCH)
    args = ap.parse_args()
    command = "benchmarks/restrict_cost.py " + shlex.join(sys.argv[1:])
    report: dict = {"command": command, "when": datetime.datetime.now().isoformat(timespec="seconds")}
    report["ring_setup"] = ring_setup(blocks=20, per_block=50)
    report["run"] = whole_runs(blocks=30, per_block=30)
    if not args.no_echo:
        report["echo"] = echo(args)
    lines = ["# The restricted ring's cost", "", f"`{command}`", "", report["when"], "",
             "| measurement | restricted | unrestricted | difference |", "|---|---|---|---|"]  # fmt: skip
    for key, what in (("ring_setup", "ring set-up + close (µs)"), ("run", "trio_uring.run(trivial) (µs)")):
        r, u = report[key]["restricted_us"], report[key]["unrestricted_us"]
        lines.append(f"| {what} | {r:.1f} | {u:.1f} | {r - u:+.1f} |")
    for sname, row in report.get("echo", {}).get("scenarios", {}).items():
        r, u = row["restricted"], row["unrestricted"]
        lines.append(f"| {sname} req/s | {r['rps']:,.0f} | {u['rps']:,.0f} | {r['rps'] / u['rps'] - 1:+.1%} |")
        lines.append(f"| {sname} server CPU µs/req | {r['us_per_req']:.2f} | {u['us_per_req']:.2f} | "
                     f"{r['us_per_req'] / u['us_per_req'] - 1:+.1%} |")  # fmt: skip
    md = "\n".join(lines) + "\n"
    base = os.path.join(RESULTS, datetime.datetime.now().strftime("restrict-%Y%m%d-%H%M%S"))
    os.makedirs(RESULTS, exist_ok=True)
    with open(base + ".md", "w") as f:
        f.write(md)
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)
    print(md)
    print(f"Written: {os.path.relpath(base)}.md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
