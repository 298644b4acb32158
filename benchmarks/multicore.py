#!/usr/bin/env python3
"""1 worker vs N workers on one port (trio_uring.workers), under the shared load generator.

    benchmarks/multicore.py                          # 1 vs 2 workers, 3 scenarios x 5 reps
    benchmarks/multicore.py -w 1,2 -S echo-c64-s64 -r 3 -d 2     # quicker

The server is this script itself (``--serve``): `trio_uring.workers.serve_tcp_workers`
with the harness's echo handler (receive_some / send_all until EOF) on trio_uring's
own streams, N forked workers sharing the port with SO_REUSEPORT. One worker is the
same program with N = 1, so the two differ only in the number of processes.

Per run: start the server, wait until every worker serves, run the harness's loadgen
(``/work/shared/bench/loadgen.c``, built by compare.py's prepare_harness in
benchmarks/.harness/), stop the server with SIGTERM (it must exit 0). The workers' CPU
time (user + system, /proc/PID/stat) is sampled every 20 ms during the run and read at
loadgen's measured window (its start = spawn + connect set-up + warm-up), summed over
the workers: server CPU per request. loadgen's own figure for the first worker
(``--server-pid``) is kept in the JSON as a check of that sampling.

Nothing is pinned: with as many workers as cores, loadgen competes with them for the
CPUs (per-CPU busy and loadgen's CPU are reported), which is what this 2-core machine
allows. Configurations are interleaved, their order rotated per repetition, and the
median is reported. As in the harness's run.py (whose helpers are used), each run
waits for a quiet machine first, and a run during which other processes (or CPU time
nobody in the run accounts for, or hypervisor steal) took more than --max-bg cores is
marked disturbed and retried (up to --retries times); the
median leaves disturbed runs out when at least two clean ones remain.
Results: benchmarks/results/multicore-<timestamp>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import select
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benchmarks/compare.py: the harness copy and loadgen build)

RESULTS = os.path.join(HERE, "results")
SCENARIOS = {
    "echo-c64-s64": {"mode": "echo", "c": 64, "s": 64},
    "echo-c512-s64": {"mode": "echo", "c": 512, "s": 64},
    "connect-c32": {"mode": "connect", "c": 32, "s": 64},
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the server (--serve)


def serve(port: int, workers: int) -> int:
    import trio

    from trio_uring.workers import serve_tcp_workers

    async def handle(stream: trio.abc.Stream) -> None:  # the harness's trio_echo.py handler
        try:
            while True:
                data = await stream.receive_some()
                if not data:
                    return
                await stream.send_all(data)
        except trio.BrokenResourceError:
            return

    def ready(port: int) -> None:
        print(f"listening on port {port}", flush=True)

    return serve_tcp_workers(handle, port, host="127.0.0.1", workers=workers, on_ready=ready)


# ---------------------------------------------------------------- measuring


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(p) for p in f.read().split())


class Sampler(threading.Thread):
    """(time, summed CPU seconds of ``pids``) every ``interval`` seconds."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def sample(self) -> None:
        total = sum(cpu_seconds(pid) or 0.0 for pid in self.pids)
        self.samples.append((time.monotonic(), total))

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def at(self, t: float) -> float:
        """CPU seconds at time ``t``, interpolated between the samples around it."""
        before = max((s for s in self.samples if s[0] <= t), default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= t), default=self.samples[-1])
        if after[0] == before[0]:
            return before[1]
        return before[1] + (after[1] - before[1]) * (t - before[0]) / (after[0] - before[0])


def one_run(python: str, loadgen: str, workers: int, scen: dict[str, int | str], args: argparse.Namespace,
            runpy: object) -> dict:  # fmt: skip
    server = subprocess.Popen(
        [python, os.path.abspath(__file__), "--serve", "--port", "0", "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    rec: dict = {"workers": workers, "scenario": scen["name"]}
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 30)
        match = re.fullmatch(r"listening on port (\d+)\n", server.stdout.readline() if ready else "")
        if not match:
            rec["error"] = "server did not start"
            return rec
        port = int(match.group(1))
        pids = children(server.pid)
        rec["worker_pids"] = pids
        sampler = Sampler(pids)
        sampler.sample()
        sampler.start()
        argv = [loadgen, "-m", str(scen["mode"]), "-p", str(port), "-c", str(scen["c"]), "-s", str(scen["s"]),
                "-d", str(args.duration), "-w", str(args.warmup), "--server-pid", str(pids[0]), "--json"]  # fmt: skip
        exclude = {os.getpid(), server.pid, *pids}
        before = runpy.other_cpu_ticks(exclude)  # type: ignore[attr-defined]
        spawned = time.monotonic()
        lg = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        exclude.add(lg.pid)
        stdout, stderr = lg.communicate(timeout=args.warmup + args.duration + 60)
        out = subprocess.CompletedProcess(argv, lg.returncode, stdout, stderr)
        elapsed = time.monotonic() - spawned
        bg = runpy.bg_cpu(before, runpy.other_cpu_ticks(exclude), elapsed)  # type: ignore[attr-defined]
        rec["bg_cpu"] = round(bg, 3)
        rec["disturbed"] = bg > args.max_bg
        sampler.done.set()
        sampler.join()
        line = next((ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")), None)
        if line is None:
            rec["error"] = f"loadgen gave no JSON: {out.stderr.strip()[-300:]}"
            return rec
        res = json.loads(line)
        rec["result"] = res
        start = spawned + res.get("setup_ms", 0.0) / 1000 + args.warmup
        cpu = sampler.at(start + args.duration) - sampler.at(start)
        rec["server_cpu_s"] = cpu
        rec["server_us_per_req"] = 1e6 * cpu / res["requests"] if res["requests"] else None
        # As run.py: CPU busy that neither loadgen nor the workers account for (short-lived
        # processes, which the snapshots above miss; kernel threads) disturbs the run too.
        unattributed = sum(res["cpu_busy"]) - res["loadgen_cpu"] - cpu / args.duration
        rec["unattributed_cpu"] = round(unattributed, 3)
        rec["steal"] = round(sum(res.get("cpu_steal", [])), 3)
        rec["disturbed"] = rec["disturbed"] or unattributed > args.max_bg or rec["steal"] > args.max_bg
        if res["errors"]["total"]:
            rec["error"] = f"loadgen counted errors: {res['errors']}"
        return rec
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        rec["server_exit_status"] = server.returncode
        if server.returncode != 0 and "error" not in rec:
            err = server.stderr.read()[-300:] if server.stderr else ""
            rec["error"] = f"server exited with {server.returncode}: {err}"


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def used(runs: list[dict], sname: str, n: int) -> list[dict]:
    """The runs a median is over: with a result, the clean ones if at least two are clean."""
    ok = [r for r in runs if r["scenario"] == sname and r["workers"] == n and "result" in r and r.get("final")]
    clean = [r for r in ok if not r.get("disturbed")]
    return clean if len(clean) >= 2 else ok


def report(runs: list[dict], configs: list[int], scenarios: list[str], meta: dict) -> str:
    out = ["# trio_uring.workers: 1 vs N worker processes on one port", "", f"`{meta['command']}`", ""]
    out.append(
        f"{meta['when']}; {meta['reps']} repetitions of {meta['duration']} s (after {meta['warmup']} s warm-up) "
        f"per scenario and configuration, interleaved, nothing pinned. Linux {meta['kernel']}, "
        f"{meta['cpus']} CPUs ({meta['cpu_model']}), Python {meta['python']}."
    )
    out += ["", "| scenario | workers | rate | vs 1 worker | server CPU µs/req (sum over workers) | "
            "server CPU (cores) | loadgen CPU (cores) | CPU busy (all cores) | errors |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for sname in scenarios:
        base = None
        for n in configs:
            rs = used(runs, sname, n)
            disturbed = sum(1 for r in rs if r.get("disturbed"))
            unit = "conn/s" if SCENARIOS[sname]["mode"] == "connect" else "req/s"
            rate = med([r["result"]["rps"] for r in rs])
            if n == configs[0]:
                base = rate
            us = med([r["server_us_per_req"] for r in rs])
            cores = med([r["server_cpu_s"] / meta["duration"] for r in rs])
            lg = med([r["result"]["loadgen_cpu"] for r in rs])
            busy = med([sum(r["result"]["cpu_busy"]) for r in rs])
            errors = sum(r["result"]["errors"]["total"] for r in rs) + sum(
                1 for r in runs if r["scenario"] == sname and r["workers"] == n and "error" in r
            )
            spread = (max(r["result"]["rps"] for r in rs) - min(r["result"]["rps"] for r in rs)) / rate if rs else 0
            ratio = f"{rate / base:.2f}" if rate and base else "-"
            out.append(
                f"| {sname} | {n} | {rate:,.0f} {unit} ({100 * spread:.0f}%){' ~' * bool(disturbed)} | {ratio} | "
                f"{us:.1f} | {cores:.2f} | {lg:.2f} | {busy:.2f} of {meta['cpus']} | {errors} |"
            )
    out += [
        "",
        "rate: median, (spread) = (max - min) / median. server CPU: the workers' user + system time over "
        "loadgen's measured window, summed. loadgen CPU and CPU busy: loadgen's own figures for the window. "
        f"`~`: some of the runs used were disturbed (other processes, unattributed CPU or steal took more "
        f"than {meta['max_bg']} cores) "
        f"even after {meta['retries']} retries.",
    ]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("-w", "--workers", default="1,2", help="worker counts to compare (1,2)")
    ap.add_argument("-S", "--scenarios", default=",".join(SCENARIOS), help=f"({','.join(SCENARIOS)})")
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-d", "--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--python", default=os.path.join(compare.REPO, ".venv", "bin", "python"))
    ap.add_argument("--bench-dir", default=compare.SHARED_BENCH)
    ap.add_argument("--max-bg", type=float, default=0.1, help="cores other processes may use in a clean run")
    ap.add_argument("--retries", type=int, default=3, help="retries of a disturbed run")
    ap.add_argument("--quiet-wait", type=float, default=60, help="at most this long, wait for a quiet machine")
    args = ap.parse_args()
    if args.serve:
        return serve(args.port, int(args.workers))
    configs = [int(n) for n in args.workers.split(",")]
    scenarios = args.scenarios.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"multicore: unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    compare.prepare_harness(args.bench_dir, [])
    loadgen = os.path.join(compare.HARNESS, "loadgen")
    runpy = compare.load_runpy()
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith("TRIO_URING")]
    command = " ".join([*env, "benchmarks/multicore.py", shlex.join(sys.argv[1:])]).strip()
    runs = []
    for rep in range(args.reps):
        for sname in scenarios:
            order = configs[rep % len(configs):] + configs[: rep % len(configs)]
            for n in order:
                for attempt in range(args.retries + 1):
                    runpy.wait_quiet(args.max_bg, 1.0, args.quiet_wait)
                    rec = one_run(args.python, loadgen, n, {"name": sname, **SCENARIOS[sname]}, args, runpy)
                    rec["rep"], rec["attempt"] = rep, attempt
                    runs.append(rec)
                    res = rec.get("result", {})
                    print(f"multicore: rep {rep + 1}/{args.reps} {sname} workers={n}: "
                          f"{res.get('rps', 0):,.0f}/s, {rec.get('server_us_per_req') or 0:.1f} µs/req, "
                          f"bg {rec.get('bg_cpu', 0):.2f} cores, unattributed {rec.get('unattributed_cpu', 0):.2f}"
                          + (" (disturbed)" if rec.get("disturbed") else "")
                          + (f" ERROR {rec['error']}" if "error" in rec else ""),
                          file=sys.stderr, flush=True)  # fmt: skip
                    if not rec.get("disturbed"):
                        break
                rec["final"] = True
    now = datetime.datetime.now()
    with open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    meta = {
        "command": command, "when": now.isoformat(timespec="seconds"), "reps": args.reps,
        "duration": args.duration, "warmup": args.warmup, "kernel": platform.release(),
        "cpus": len(os.sched_getaffinity(0)), "cpu_model": model, "python": platform.python_version(),
        "max_bg": args.max_bg, "retries": args.retries,
    }  # fmt: skip
    md = report(runs, configs, scenarios, meta)
    base = os.path.join(RESULTS, now.strftime("multicore-%Y%m%d-%H%M%S"))
    os.makedirs(RESULTS, exist_ok=True)
    with open(base + ".md", "w") as f:
        f.write(md)
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=1)
    print(md)
    print(f"Written: {os.path.relpath(base)}.md, .json")
    return 1 if any("error" in r for r in runs if r.get("final")) else 0


if __name__ == "__main__":
    sys.exit(main())
