#!/usr/bin/env python3
"""Real frameworks on trio_uring vs stock Trio: Hypercorn under wrk, trio-websocket under wsload.

    benchmarks/frameworks.py                        # both, 5 interleaved reps of 5 s
    benchmarks/frameworks.py -b websocket-echo -r 1 -d 1      # quick look at one

Benchmarks (-b):

    hypercorn-hello  Hypercorn's Trio worker serving a hello-world ASGI app
                     (benchmarks/servers/hypercorn_hello.py) in one process, under
                     `wrk -t1 -c64 --latency` (apt-get install wrk). Requests/s.
    websocket-echo   a trio-websocket echo server (benchmarks/servers/ws_echo.py) under
                     benchmarks/wsload.c: 64 connections, one 64-byte binary message at a
                     time each, every echo checked. Messages/s.

Forms: those of benchmarks/forms.py that fit the benchmark (Hypercorn makes its own
listeners, so it has no streams form). Server on CPU 1, client on CPU 0; repetitions
interleaved with the order of forms rotated each time; runs disturbed by other load or
steal retried (as compare.py does). Reported per benchmark and form: the median rate,
its ratio to stock Trio of the same run (and the range of per-repetition ratios), server
CPU µs per request (per message), p50/p99 latency, and the goals of benchmarks/goals.py.
Writes results/<timestamp>-frameworks.md, .json and a chart (.svg, .png).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import goals as goals_mod
import harness as H
from forms import DEFAULT_FORMS, FORMS, REFERENCE, parse_forms

PROG = "frameworks"


@dataclass(frozen=True)
class Bench:
    server: str  # benchmarks/servers/<server>
    client: str  # "wrk" or "wsload"
    unit: str
    forms: tuple[str, ...]  # which forms of forms.py it can take
    description: str


BENCHES = {
    "hypercorn-hello": Bench("hypercorn_hello.py", "wrk", "req/s", ("trio-epoll", "trio-uring"),
                             "Hypercorn (Trio worker), hello-world ASGI app, wrk -t1 -c64"),
    "websocket-echo": Bench("ws_echo.py", "wsload", "msg/s", ("trio-epoll", "trio-uring", "trio-uring-trio-path"),
                            "trio-websocket echo, 64 connections, 64-byte binary messages (wsload)"),
}


# ---------------------------------------------------------------- wrk

WRK_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(out: str) -> dict[str, Any]:
    """wrk's report: requests/s, requests, latency percentiles (--latency), errors."""
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m or not n:
        raise RuntimeError("cannot read wrk's output: " + out.strip()[-300:])
    lat = {}
    for q, val, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat["p" + q] = float(val) * WRK_UNITS[unit]
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = errors + (int(non2xx.group(1)) if non2xx else 0)
    return {"rps": float(m.group(1)), "requests": int(n.group(1)), "lat_us": lat or None,
            "errors": {"total": total, "socket": errors, "non_2xx": int(non2xx.group(1)) if non2xx else 0}}


def run_wrk(args: Any, runpy: Any, server: H.Server, port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/"
    if args.warmup > 0:  # wrk takes whole seconds
        H.run_client(["wrk", "-t1", "-c64", f"-d{max(1, round(args.warmup))}s", url], 60)
    win = H.CpuWindow(runpy, server.pid)
    win.start()
    rc, out, err, client_s = H.run_client(["wrk", "-t1", "-c64", f"-d{max(1, round(args.duration))}s",
                                           "--latency", url], args.duration + 60)
    res = win.stop(exclude=set())
    if rc:
        raise RuntimeError(f"wrk failed ({rc}): {err.strip()[-300:]}")
    res.update(parse_wrk(out))
    res["client_cpu"] = client_s / res["wall_s"]
    res["human"] = " ".join(out.split())[-200:]
    return res


# ---------------------------------------------------------------- wsload

def run_wsload(args: Any, server: H.Server, port: int) -> dict[str, Any]:
    argv = [H.tool("wsload"), "-p", str(port), "-c", "64", "-s", "64", "-d", str(args.duration), "-w",
            str(args.warmup), "--server-pid", str(server.pid), "--json"]
    rc, out, err, _ = H.run_client(argv, args.warmup + args.duration + 60)
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wsload gave no JSON (rc {rc}): {err.strip()[-300:]}")
    res: dict[str, Any] = json.loads(line)
    res["human"] = out.splitlines()[0]
    return res


# ---------------------------------------------------------------- one run

def check_backend(form: str, port: int, bench: str) -> None:
    """The server runs on the backend its form says (Hypercorn answers GET /backend)."""
    if bench != "hypercorn-hello":
        return  # ws_echo.py prints its backend; its form decides it in the same way
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/backend", timeout=10) as r:
        backend = r.read().decode()
    want = "io_uring" if FORMS[form].uses_uring else "epoll"
    if backend != want:
        raise RuntimeError(f"{form} runs on {backend}, not {want}")


def run_once(args: Any, runpy: Any, bench_name: str, form: str, port: int) -> dict[str, Any]:
    bench = BENCHES[bench_name]
    argv = [args.python, os.path.join(H.HERE, "servers", bench.server), "--form", form, "--port", str(port)]
    server = H.Server(argv, H.SERVER_CPU, FORMS[form].env)
    try:
        server.wait_listening(port, runpy.listening)
        check_backend(form, port, bench_name)
        res = run_wrk(args, runpy, server, port) if bench.client == "wrk" else run_wsload(args, server, port)
        rec: dict[str, Any] = {"result": res}
        if server.proc.poll() is not None:
            rec["error"] = f"server exited during the run with {server.proc.returncode}"
        elif res["errors"]["total"]:
            rec["error"] = "client counted errors: " + ", ".join(
                f"{k}={v}" for k, v in res["errors"].items() if v and k != "total")
        return rec
    finally:
        server.stop()


def cpu_us(res: dict[str, Any]) -> float | None:
    return res["server_cpu"] / res["rps"] * 1e6 if res.get("server_cpu") is not None and res.get("rps") else None


METRICS = {"rate": lambda r: r.get("rps"), "cpu": cpu_us,
           "p50": lambda r: (r.get("lat_us") or {}).get("p50"), "p99": lambda r: (r.get("lat_us") or {}).get("p99")}


# ---------------------------------------------------------------- report

def render(report: dict[str, Any]) -> str:
    out = ["# Real frameworks: trio_uring vs stock Trio", "", f"`{report['command']}`", "",
           f"{report['started']}; {report['reps']} repetitions of {report['duration']} s (after {report['warmup']} s "
           "warm-up) per benchmark and form, interleaved; server on CPU 1, client on CPU 0; trio_uring "
           f"{report['probe'].get('trio_uring', '-')}"
           f"{' (commit ' + report['probe']['commit'] + ')' if report['probe'].get('commit') else ''}.", ""]
    out += [f"* **Note:** {n}" for n in report["notes"]]
    out += ["", "| benchmark | form | rate | ratio | goal | met | server CPU µs | CPU ratio | p50 / p99 µs | reps |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["table"]:
        unit = BENCHES[row["scenario"]].unit
        for f, e in row["forms"].items():
            g = goals_mod.goal("frameworks", row["scenario"], f, "ratio")
            r = e.get("rate_ratio")
            out.append(
                f"| {row['scenario']} | {f} | {H.fnum(e['rate'])} {unit} ({H.fpct(e['rate_spread'])}){H.flags(e)} | "
                f"{H.fratio(r, e.get('rate_paired')) if f != REFERENCE else '1'} | {g.text() if g else '-'} | "
                f"{goals_mod.verdict(g.met(r)) if g else '-'} | {H.fnum(e['cpu'])} ({H.fpct(e['cpu_spread'])}) | "
                f"{H.fratio(e.get('cpu_ratio'), e.get('cpu_paired')) if f != REFERENCE else '1'} | "
                f"{H.fnum(e['p50'])} / {H.fnum(e['p99'])} | {e['median_of']}/{e['reps']}"
                f"{' (' + str(e['disturbed']) + ' dist.)' if e['disturbed'] else ''} |")
    out += ["", "rate: median over the repetitions used, (spread) = (max - min) / median; ratio = form / stock "
            "Trio of the same run, in parentheses the range of per-repetition ratios. Server CPU: µs per request "
            "(per message), from /proc/PID/stat over the client's window; CPU ratio = stock's / the form's (above "
            "1: cheaper). Latency from wrk --latency (Hypercorn) or wsload's histogram. `!` = a repetition failed "
            "or the client counted errors, `~` = repetitions still disturbed after retries.", ""]
    for b in report["benchmarks"]:
        out.append(f"* `{b}`: {BENCHES[b].description}")
    problems = [f"* {row['scenario']} / {f}: {m}" for row in report["table"] for f, e in row["forms"].items()
                for m in e["failed"]]
    if problems:
        out += ["", "## Problems", "", *problems]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-b", "--benchmarks", default=",".join(BENCHES), help=f"comma list ({', '.join(BENCHES)})")
    ap.add_argument("-s", "--forms", default=",".join(DEFAULT_FORMS), help="forms (each benchmark takes those it can)")
    ap.add_argument("-r", "--reps", type=int, default=5, help="repetitions, interleaved (5)")
    ap.add_argument("-d", "--duration", type=float, default=5.0, help="measured seconds per run (5; wrk: whole s)")
    ap.add_argument("-w", "--warmup", type=float, default=1.0, help="warm-up seconds per run (1)")
    ap.add_argument("--python", default=H.default_python(), help="server interpreter (.venv/bin/python)")
    ap.add_argument("--port-base", type=int, default=26000)
    ap.add_argument("--out-dir", default=H.RESULTS)
    ap.add_argument("--no-chart", action="store_true")
    H.add_noise_args(ap)
    args = ap.parse_args()
    command = shlex.join([os.path.relpath(sys.argv[0], H.REPO), *sys.argv[1:]])
    benches = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    for b in benches:
        if b not in BENCHES:
            sys.exit(f"frameworks: unknown benchmark {b!r}; known: {', '.join(BENCHES)}")
    probe = H.probe_python(args.python)
    forms, notes = H.usable_forms(probe, parse_forms(args.forms), lambda f: FORMS[f].uses_uring)
    if "hypercorn-hello" in benches and shutil.which("wrk") is None:
        H.apt_install("wrk")
        if shutil.which("wrk") is None:
            sys.exit("frameworks: wrk is missing and apt-get could not install it")
    missing = [m for m in ("hypercorn", "trio_websocket") if
               H.run_client([args.python, "-c", f"import {m}"], 60, cpu=None)[0]]
    if missing:
        sys.exit(f"frameworks: {args.python} cannot import {', '.join(missing)}: pip install -e '.[bench]'")
    H.prepare(tools=("wsload",))
    runpy = H.load_runpy()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    table, runs = [], []
    with H.stopping_on_sigterm():
        for b in benches:
            bforms = [f for f in forms if f in BENCHES[b].forms]
            notes += [f"{b}: no {f} form ({BENCHES[b].description})." for f in forms if f not in bforms]

            def once(scen: str, form: str, port: int) -> dict[str, Any]:
                return run_once(args, runpy, scen, form, port)

            def describe(rec: dict[str, Any]) -> str:
                r = rec["result"]
                lat = r.get("lat_us") or {}
                return (f"{r['rps']:,.0f} {BENCHES[rec['scenario']].unit} p99 {lat.get('p99', 0):,.0f}us server "
                        f"{100 * (r.get('server_cpu') or 0):.0f}% client {100 * (r.get('client_cpu') or 0):.0f}%")

            b_runs = H.interleave(PROG, runpy, bforms, [b], args.reps, once, args, describe)
            runs += b_runs
            table += H.summarize(b_runs, [b], bforms, REFERENCE, METRICS, {"rate": "higher", "cpu": "lower"})
    checked = []
    for g in goals_mod.goals_for("frameworks"):
        row = next((r for r in table if r["scenario"] == g.scenario), None)
        e = row["forms"].get(g.form) if row else None
        if e is not None:
            checked.append({**g._asdict(), "value": e.get("rate_ratio"), "met": g.met(e.get("rate_ratio")),
                            "goal": g.text()})
    forms_all = [f for f in forms if f != REFERENCE]
    report: dict[str, Any] = {
        "benchmark": "frameworks", "command": command, "started": started, "probe": probe, "notes": notes,
        "benchmarks": benches, "forms": forms, "reps": args.reps, "duration": args.duration, "warmup": args.warmup,
        "table": table, "runs": runs, "goals": checked,
        "summary_lines": [
            f"{row['scenario']} (`benchmarks/frameworks.py`): " + ", ".join(
                f"{f} {goals_mod.with_goal(e['rate_ratio'], 'frameworks', row['scenario'], f, 'ratio')}"
                for f, e in row["forms"].items() if e.get("rate_ratio"))
            + f" x stock Trio ({H.fnum(row['forms'][REFERENCE]['rate'])} {BENCHES[row['scenario']].unit})"
            for row in table if row["forms"].get(REFERENCE, {}).get("rate")],
        "chart_data": {
            "title": "Real frameworks: rate / stock Trio (same run); black tick = goal",
            "ylabel": "rate / stock Trio", "groups": [r["scenario"] for r in table],
            "series": {f: [r["forms"].get(f, {}).get("rate_ratio") for r in table] for f in forms_all},
            "ranges": {f: [(min(p), max(p)) if (p := r["forms"].get(f, {}).get("rate_paired")) else None
                           for r in table] for f in forms_all},
            "goals": {f: [g.threshold if (g := goals_mod.goal("frameworks", r["scenario"], f, "ratio")) else None
                          for r in table] for f in forms_all}},
    }
    base = H.outputs(args.out_dir, "frameworks")
    written = []
    if not args.no_chart:
        try:
            import report as report_mod

            report["chart"] = os.path.basename(report_mod.draw_saved(report["chart_data"], base))
            written += [base + ".svg", base + ".png"]
        except ImportError as e:
            H.log(PROG, f"no chart: {e} (pip install -e '.[bench]')")
    md = render(report)
    written = H.write_report(base, md, report) + written
    print(md)
    print(f"Written: {', '.join(os.path.relpath(p) for p in written)}")
    return 1 if any(e["failed"] for row in table for e in row["forms"].values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
