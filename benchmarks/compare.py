#!/usr/bin/env python3
"""Stock Trio on epoll vs trio_uring: the same echo handler in each form, one command.

    benchmarks/compare.py                  # 6 scenarios x 3 forms x 5 reps, then the counting pass
    benchmarks/compare.py -r 1 -d 1 -S echo-c64-s64,connect-c32     # quick look

The forms are benchmarks/forms.py's (by default: trio-epoll = stock Trio, the reference;
trio-uring = the drop-in, Trio's streams on trio_uring's short path; trio-uring-trio-path
= the backend under Trio's own stream code), served by
benchmarks/servers/echo.py. The goals are benchmarks/goals.py's.

What it does:

 1. Copies the shared harness (/work/shared/bench) into benchmarks/.harness/ and builds
    our loadgen there (benchmarks/loadgen.c: the shared one plus window hooks).
 2. Runs the harness's run.py: every scenario, every form, interleaved (the order of the
    forms rotates on each repetition), disturbed runs retried.
 3. The counting pass: each scenario and form once more, with `perf stat` counting the
    server's system calls and the server snapshotting its io_statistics, both only
    inside loadgen's measured window (loadgen switches them at the window's edges).
 4. Prints and writes (results/<timestamp>.md, .json, .run.json, and a chart .svg/.png):
    per scenario and form the median rate and its ratio to trio-epoll of the same run,
    server CPU per request, p50/p99 latency, system calls and ring ops per request, and
    each goal of goals.py, met or not met.

Benchmarks are scripts, not tests: nothing here is collected by pytest.
See benchmarks/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from typing import Any

import goals as goals_mod
import harness as H
from forms import DEFAULT_FORMS, FORMS, REFERENCE, parse_forms
from stats import delta, read_snapshots

PROG = "compare"
ECHO_SERVER = os.path.join(H.HERE, "servers", "echo.py")
# The six scenarios of the performance issue's goal table (run.py's names).
DEFAULT_SCENARIOS = ["echo-c1-s64", "echo-c64-s64", "echo-c512-s64", "connect-c32", "stream-c8-s64k",
                     "echo-c64-s16k"]


def log(msg: str) -> None:
    H.log(PROG, msg)


# ---------------------------------------------------------------- units

def primary(res: dict[str, Any]) -> float | None:
    """The scenario's headline rate: MB/s for stream, requests (or connections) per second otherwise."""
    return res["mbps"] if res["mode"] == "stream" else res["rps"]


def unit_of(mode: str) -> str:
    return {"stream": "MB/s", "connect": "conn/s"}.get(mode, "req/s")


def per_unit(mode: str) -> str:
    return {"stream": "MB", "connect": "conn"}.get(mode, "req")


def units_done(res: dict[str, Any]) -> float:
    """Requests (connections; MB for stream) completed in loadgen's window."""
    return res["mbps"] * res["duration_s"] if res["mode"] == "stream" else res["requests"]


def cpu_per_unit(res: dict[str, Any]) -> float | None:
    """Server CPU µs per request (per connection; per MB): cores used / units per second * 1e6."""
    rate = primary(res)
    return res["server_cpu"] / rate * 1e6 if res.get("server_cpu") is not None and rate else None


def latency(q: str) -> Any:
    return lambda res: (res.get("lat_us") or {}).get(q)


METRICS = {"rate": primary, "cpu": cpu_per_unit, "p50": latency("p50"), "p99": latency("p99")}
RATIOS = {"rate": "higher", "cpu": "lower"}


# ---------------------------------------------------------------- the suite (run.py)

def server_command(form: str, python: str, stats: str | None = None) -> list[str]:
    argv = [python, ECHO_SERVER, "--form", form, "--port", "{port}"]
    if stats:
        argv += ["--stats", stats]
    env = FORMS[form].env
    return ["env", *(f"{k}={v}" for k, v in env.items()), *argv] if env else argv


def run_suite(args: Any, forms: list[str], also: list[str], scenarios: list[str], run_json: str,
              run_md: str) -> int:
    argv = [sys.executable, os.path.join(H.HARNESS, "run.py")]
    for f in forms:  # NAME=COMMAND: run.py starts it with {port} filled in, and stops it by its PID
        argv += ["-s", f + "=" + shlex.join(server_command(f, args.python))]
    if also:
        argv += ["-s", ",".join(also)]
    for s in scenarios:  # one -S each: a MODE:c=N,s=N spec has commas of its own
        argv += ["-S", s]
    argv += ["-r", str(args.reps), "-d", str(args.duration), "-w", str(args.warmup), "--python", args.python,
             "--retries", str(args.retries), "--max-bg", str(args.max_bg), "--max-steal", str(args.max_steal),
             "--quiet-wait", str(args.quiet_wait), "--port-base", str(args.port_base), "-o", run_json,
             "--md", run_md]
    if args.no_pin:
        argv.append("--no-pin")
    log("running " + shlex.join(argv))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)  # progress on our stderr; Markdown in run_md
    try:
        rc = proc.wait()
    except BaseException:
        # Ctrl-C or SIGTERM: let run.py stop its server (it does on SIGTERM), then go.
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    if not os.path.exists(run_json):
        sys.exit(f"compare: run.py wrote no results (exit status {rc})")
    return rc


def analyze(data: dict[str, Any], servers: list[str]) -> list[dict[str, Any]]:
    """Per scenario and server: medians, spreads, and ratios to trio-epoll (H.summarize)."""
    for r in data["runs"]:
        r.setdefault("variant", r["server"])
    scenarios = list(data["meta"]["scenarios"])
    table = H.summarize(data["runs"], scenarios, servers, REFERENCE, METRICS, RATIOS)
    for row in table:
        mode = data["meta"]["scenarios"][row["scenario"]]["mode"]
        row.update(mode=mode, unit=unit_of(mode), cpu_unit="µs/" + per_unit(mode))
    return table


# ---------------------------------------------------------------- counting pass

def count_once(runpy: Any, args: Any, form: str, scen: dict[str, Any], port: int) -> dict[str, Any]:
    """One run of a scenario against a form with perf counting the server's system
    calls and the server snapshotting its statistics, both inside loadgen's window only."""
    os.makedirs(os.path.join(H.HARNESS, "tmp"), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="count-", dir=os.path.join(H.HARNESS, "tmp"))
    stats_path = os.path.join(tmp, "stats.jsonl")
    argv = [a.replace("{port}", str(port)) for a in server_command(form, args.python, stats_path)]
    server = H.Server(argv, None if args.no_pin else H.SERVER_CPU)
    perf = None
    try:
        server.wait_listening(port, runpy.listening)
        perf = H.Perf(server.pid, None if args.no_pin else H.CLIENT_CPU)
        lg = [H.tool("loadgen"), "-m", scen["mode"], "-p", str(port), "-c", str(scen["c"]), "-s", str(scen["s"]),
              "-P", str(scen["p"]), "-d", str(args.duration), "-w", str(args.warmup), "--server-pid",
              str(server.pid), "--perf-ctl", perf.fifo, "--window-signal", str(int(signal.SIGUSR1)), "--json"]
        rc, out, err, _ = H.run_client(H.pinned(lg, None if args.no_pin else H.CLIENT_CPU), args.warmup
                                       + args.duration + 60, cpu=None)
        calls = perf.stop()
        perf = None
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
        if line is None:
            return {"error": f"loadgen gave no JSON (rc {rc}): {err.strip()[-300:]}"}
        res = json.loads(line)
        snaps = read_snapshots(stats_path)
        units = units_done(res)
        entry: dict[str, Any] = {"units": units, "unit": per_unit(scen["mode"]), "rate": primary(res),
                                 "loadgen_errors": res["errors"]["total"], "syscalls": calls}
        if units:
            entry["syscalls_per_unit"] = calls["total"] / units
            entry["by_syscall"] = {k: v / units for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                                   if k != "total"}
        if len(snaps) >= 2 and units:
            d = delta(snaps[0], snaps[-1])
            entry["ring_ops_per_unit"] = {k: v / units for k, v in
                                          sorted(d.get("io", {}).get("ops_submitted", {}).items(),
                                                 key=lambda kv: -kv[1])}
            entry["server_cpu_us_per_unit"] = d["cpu_s"] * 1e6 / units
        elif units:
            entry["note"] = f"the server wrote {len(snaps)} statistics snapshots, not 2"
        return entry
    finally:
        if perf is not None:
            perf.close()
        server.stop()
        for name in os.listdir(tmp):
            os.remove(os.path.join(tmp, name))
        os.rmdir(tmp)


def counting_pass(runpy: Any, args: Any, forms: list[str], scenarios: dict[str, dict[str, Any]]) -> tuple[
        dict[str, dict[str, Any]], str | None]:
    why = H.perf_usable()
    if why:
        return {}, f"System calls not counted: {why}."
    picker = runpy.PortPicker(args.port_base + 1000)
    out: dict[str, dict[str, Any]] = {}
    for name, scen in scenarios.items():
        for form in forms:
            log(f"counting: {name} {form}")
            try:
                out.setdefault(name, {})[form] = count_once(runpy, args, form, scen, picker.next())
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                out.setdefault(name, {})[form] = {"error": str(e)}
            e = out[name][form]
            if "syscalls_per_unit" in e:
                log(f"counting: {name} {form}: {e['syscalls_per_unit']:.3f} syscalls/{e['unit']}")
            elif "error" in e:
                log(f"counting: {name} {form}: {e['error']}")
    return out, None


# ---------------------------------------------------------------- goals

def check_goals(table: list[dict[str, Any]], counts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = {r["scenario"]: r for r in table}
    out = []
    for g in goals_mod.goals_for("echo"):
        if g.metric == "ratio":
            e = rows.get(g.scenario, {}).get("forms", {}).get(g.form)
            value = e.get("rate_ratio") if e else None
        elif g.metric == "syscalls_per_request":
            e = counts.get(g.scenario, {}).get(g.form)
            value = e.get("syscalls_per_unit") if e else None
        else:
            continue
        if e is not None:  # else: that scenario or form was not part of this run
            out.append({**g._asdict(), "value": value, "met": g.met(value), "goal": g.text()})
    return out


# ---------------------------------------------------------------- report

def fnum(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "MB/s" and x < 100:
        return f"{x:,.1f}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def ratio_table(table: list[dict[str, Any]], forms: list[str], metric: str, unit_key: str) -> list[str]:
    """One row per scenario: trio-epoll's value, then per form its value, its ratio to
    trio-epoll (range of per-repetition ratios) and, for the rate, the goal and verdict."""
    hdr = ["scenario", REFERENCE]
    for f in forms:
        hdr += [f, "ratio"] + (["goal", "met"] if metric == "rate" else [])
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for row in table:
        unit = row[unit_key]

        def cell(e: dict[str, Any], unit: str = unit) -> str:
            text = f"{fnum(e[metric], unit)} ({H.fpct(e[metric + '_spread'])})"
            return text + H.flags(e) if metric == "rate" else text

        ref = row["forms"].get(REFERENCE)
        cells = [f"{row['scenario']} ({unit})", cell(ref) if ref else "-"]
        for f in forms:
            e = row["forms"][f]
            cells += [cell(e), H.fratio(e.get(metric + "_ratio"), e.get(metric + "_paired"))]
            if metric == "rate":
                g = goals_mod.goal("echo", row["scenario"], f, "ratio")
                cells += [g.text() if g else "-", goals_mod.verdict(g.met(e.get("rate_ratio"))) if g else "-"]
        out.append("| " + " | ".join(cells) + " |")
    return [*out, ""]


def latency_table(table: list[dict[str, Any]], forms: list[str]) -> list[str]:
    rows = [r for r in table if r["mode"] != "stream"]
    if not rows:
        return []
    out = ["## Latency (loadgen, µs: p50 / p99)", "",
           "| scenario | " + " | ".join([REFERENCE, *forms]) + " |", "|" + "---|" * (len(forms) + 2)]
    for row in rows:
        cells = [row["scenario"]]
        for f in [REFERENCE, *forms]:
            e = row["forms"].get(f)
            cells.append(f"{fnum(e['p50'])} / {fnum(e['p99'])}" if e else "-")
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Per request (per connection in connect: connect, send, echo, close), from loadgen's "
            "log-linear histogram (±1.6%), median over the repetitions used. Stream has no latency. At one "
            "connection latency is 1 / rate; under load (64, 512 connections) p99 shows queueing and stalls.", ""]
    return out


def counts_table(counts: dict[str, dict[str, Any]], forms: list[str], note: str | None, args: Any) -> list[str]:
    out = ["## System calls and ring ops per request (counting pass)", ""]
    if note:
        return [*out, note, ""]
    if not counts:
        return [*out, "Not measured (--no-count).", ""]
    out += ["| scenario | form | syscalls | top 3 syscalls | ring ops (SQEs) | server CPU µs |",
            "|---|---|---|---|---|---|"]
    for scen, per_form in counts.items():
        for f in [REFERENCE, *forms]:
            e = per_form.get(f)
            if e is None:
                continue
            if "error" in e:
                out.append(f"| {scen} | {f} | failed: {e['error']} | | | |")
                continue
            if "syscalls_per_unit" not in e:
                out.append(f"| {scen} | {f} | - (nothing done in the window) | | | |")
                continue
            top = ", ".join(f"{k} {v:.3f}" for k, v in list(e["by_syscall"].items())[:3])
            ops = e.get("ring_ops_per_unit")
            ring = ", ".join(f"{k} {v:.3f}" for k, v in list(ops.items())[:3]) if ops else "-"
            flag = " !" if e.get("loadgen_errors") else ""
            out.append(f"| {scen} | {f} | {e['syscalls_per_unit']:.3f}/{e['unit']}{flag} | {top} | {ring} | "
                       f"{fnum(e.get('server_cpu_us_per_unit'))} |")
    out += ["", f"One run per scenario and form ({args.duration:g} s window after {args.warmup:g} s warm-up), "
            "after the timed runs; its rates are not reported. System calls: `perf stat` on the server's PID "
            "(raw_syscalls:sys_enter for the total, a syscalls:sys_enter_NAME tracepoint for each of the usual "
            "ones; `other` = the rest), enabled and disabled by loadgen at its window's edges: no ptrace, the "
            "server runs at nearly full speed. Ring ops: the difference of "
            "`trio.lowlevel.current_statistics().io_statistics.ops_submitted` between two snapshots the server "
            "takes on loadgen's signals at the same edges (top 3 opcodes); a single-shot op is one SQE and one "
            "completion. Per request (per connection in connect, per MB in stream). Server CPU here is the "
            "server's own getrusage over the same window, a cross-check of the CPU table.", ""]
    return out


def goals_section(checked: list[dict[str, Any]]) -> list[str]:
    if not checked:
        return []
    out = ["## Goals (benchmarks/goals.py)", "", "| scenario | form | metric | goal | measured | verdict |",
           "|---|---|---|---|---|---|"]
    for g in checked:
        v = "-" if g["value"] is None else f"{g['value']:.2f}" if g["metric"] == "ratio" else f"{g['value']:.3f}"
        out.append(f"| {g['scenario']} | {g['form']} | {g['metric']} | {g['goal']} | {v} | "
                   f"{goals_mod.verdict(g['met'])} |")
    n = sum(1 for g in checked if g["met"] is not None)
    out += ["", f"Met: {sum(1 for g in checked if g['met'])} of {n}. Ratios are medians of the interleaved "
            "repetitions; a verdict whose per-repetition range (throughput table) straddles the goal is soft.", ""]
    return out


def render(report: dict[str, Any], runpy_md: str | None) -> str:
    table, forms, meta, probe = report["table"], report["forms"], report["meta"], report["probe"]
    others = [s for s in report["servers"] if s != REFERENCE]
    m = meta.get("machine", {})
    out = ["# trio_uring vs stock Trio: echo benchmark", "", f"`{report['command']}`", ""]
    run = (f"{meta['reps']} repetitions of {meta['duration_s']} s (after {meta['warmup_s']} s warm-up) per "
           f"scenario and form, interleaved; server on CPU {meta.get('server_cpu')}, loadgen on CPU "
           f"{meta.get('client_cpu')}; run.py took {meta.get('elapsed_s', '?')} s. " if table else "")
    out += [f"{meta.get('started', '?')}; {run}Linux {m.get('kernel', '?')}, {m.get('nproc', '?')} CPUs "
            f"({m.get('cpu_model', '?')}), Python {m.get('python', probe.get('python'))}, trio "
            f"{m.get('trio', probe.get('trio'))}, trio_uring {m.get('trio_uring', probe.get('trio_uring', '-'))}"
            f"{' (commit ' + probe['commit'] + ')' if probe.get('commit') else ''}.", ""]
    for s in report["servers"]:
        out.append(f"* `{s}`: {FORMS[s].description if s in FORMS else meta['servers'].get(s, '')}")
    for n in report["notes"]:
        out.append(f"* **Note:** {n}")
    out.append("")
    if table:
        out += ["## Throughput: ratio to trio-epoll in the same run", ""]
        out += ratio_table(table, others, "rate", "unit")
        out += ["Cells: median over the repetitions used, (spread) = (max - min) / median. ratio = form median / "
                "trio-epoll median; in parentheses the range of the per-repetition ratios (each against "
                "trio-epoll of the same repetition). `!` = a repetition failed or loadgen counted errors (see "
                "Problems), `~` = some repetitions were still disturbed by other load or steal after retries.", ""]
        out += ["## Server CPU per request (from /proc)", ""]
        out += ratio_table(table, others, "cpu", "cpu_unit")
        out += ["Server CPU time (user + system, /proc/PID/stat over loadgen's window) / work done: µs per "
                "request, per connection (connect) or per MB echoed (stream). ratio = trio-epoll's cost / the "
                "form's cost, so above 1 means cheaper. Steal and other load move it much less than they move "
                "req/s. In echo-c1-s64 the server is not saturated, so this includes sleeping and waking up for "
                "each request.", ""]
        out += latency_table(table, others)
    out += counts_table(report["counts"], [f for f in forms if f != REFERENCE], report.get("counts_note"),
                        argparse.Namespace(duration=report["count_window"][0], warmup=report["count_window"][1]))
    out += goals_section(report["goals"])
    problems = [f"* {row['scenario']} / {s}: {msg}" for row in table for s, e in row["forms"].items()
                for msg in e["failed"]]
    problems += [f"* counting pass / {scen} / {f}: loadgen counted errors" for scen, pf in report["counts"].items()
                 for f, e in pf.items() if e.get("loadgen_errors")]
    if problems:
        out += ["## Problems", "", *problems, ""]
    if report.get("chart"):
        out += [f"Chart: `{report['chart']}` (and .png), next to this file.", ""]
    if runpy_md:
        out += ["## Details (run.py's report: latency, loadgen CPU, repetitions, errors)", "",
                re.sub(r"(?m)^### ", "#### ", runpy_md).strip(), ""]
    return "\n".join(out)


# ---------------------------------------------------------------- main

def split_scenarios(spec: str) -> list[str]:
    """Comma list of names, where a MODE:k=v,k=v item keeps its own commas."""
    out: list[str] = []
    for item in (i.strip() for i in spec.split(",")):
        if not item:
            continue
        if out and re.fullmatch(r"[csp]=\d+", item) and ":" in out[-1]:
            out[-1] += "," + item
        else:
            out.append(item)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-r", "--reps", type=int, default=5, help="repetitions, interleaved (5)")
    ap.add_argument("-d", "--duration", type=float, default=2.0, help="measured seconds per run (2)")
    ap.add_argument("-w", "--warmup", type=float, default=0.5, help="warm-up seconds per run (0.5)")
    ap.add_argument("-S", "--scenarios", default=",".join(DEFAULT_SCENARIOS),
                    help="comma list of run.py scenario names or MODE:c=N,s=N,p=N (default: the six of the issue)")
    ap.add_argument("-s", "--forms", default=",".join(DEFAULT_FORMS),
                    help=f"comma list of forms of benchmarks/forms.py ({', '.join(FORMS)}; {REFERENCE} is always "
                         "included)")
    ap.add_argument("--also", default="", help="run.py servers to run alongside, e.g. c-epoll,c-uring")
    ap.add_argument("--python", default=H.default_python(), help="server interpreter (.venv/bin/python)")
    ap.add_argument("--bench-dir", default=H.SHARED_BENCH, help=f"shared harness ({H.SHARED_BENCH})")
    H.add_noise_args(ap)
    ap.add_argument("--no-pin", action="store_true", help="do not pin server/loadgen to CPUs 1/0")
    ap.add_argument("--port-base", type=int, default=23000)
    ap.add_argument("--no-count", action="store_true", help="skip the counting pass (syscalls, ring ops)")
    ap.add_argument("--count-only", action="store_true", help="only the counting pass")
    ap.add_argument("--count-scenarios", help="scenarios of the counting pass (default: those of -S)")
    ap.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    ap.add_argument("--from-json", metavar="RUN_JSON",
                    help="no new runs: re-render the report from a run.py JSON (results/*.run.json)")
    ap.add_argument("--out-dir", default=H.RESULTS, help="where results go (benchmarks/results)")
    args = ap.parse_args()
    command = shlex.join([os.path.relpath(sys.argv[0], H.REPO), *sys.argv[1:]])

    wanted = parse_forms(args.forms)
    also = [s.strip() for s in args.also.split(",") if s.strip()]
    scenarios = split_scenarios(args.scenarios)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = H.outputs(args.out_dir, "")
    run_json, run_md = base + ".run.json", base + ".run.md"
    probe = H.probe_python(args.python)

    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        # next to the run it comes from: X.run.json -> X-rerendered.md, .json, .svg, .png
        base = re.sub(r"(\.run)?\.json$", "", args.from_json) + "-rerendered"
        servers = list(data["meta"]["servers"])
        probe = {"python": data["meta"].get("machine", {}).get("python")}  # that run's, not this interpreter's
        report = build_report(command, data, [s for s in servers if s in FORMS], servers, [
            f"re-rendered from {args.from_json}"], probe, {}, "Not measured (re-rendered from JSON).", args,
            args.from_json)
        return finish(report, base, None, 0, args)

    forms, notes = H.usable_forms(probe, wanted, lambda f: FORMS[f].uses_uring)
    for n in notes:
        log(n)
    H.prepare(args.bench_dir, tuple(s for s in also if s.startswith("c-")))
    runpy = H.load_runpy()
    for s in also:
        if s not in runpy.SERVERS:
            sys.exit(f"compare: unknown run.py server {s!r} in --also")
    servers = forms + [s for s in also if s not in forms]
    scen_specs = dict(runpy.parse_scenarios(scenarios))
    count_specs = dict(runpy.parse_scenarios(split_scenarios(args.count_scenarios))) if args.count_scenarios \
        else scen_specs

    n_runs = 0 if args.count_only else len(servers) * len(scen_specs) * args.reps
    per_run = args.duration + args.warmup + 0.6
    est = n_runs * per_run + (0 if args.no_count else len(forms) * len(count_specs) * (per_run + 0.5))
    log(f"{len(servers)} servers x {len(scen_specs)} scenarios x {args.reps} reps = {n_runs} runs"
        f"{'' if args.no_count else ' + counting pass'}: about {est / 60:.1f} min on a quiet machine "
        "(retries of disturbed runs come on top)")

    rc, runpy_md = 0, None
    if args.count_only:
        data = {"meta": {"started": "", "duration_s": args.duration, "warmup_s": args.warmup, "reps": 0,
                         "servers": {}, "scenarios": {}, "machine": runpy.machine_facts(args.python)}, "runs": []}
    else:
        rc = run_suite(args, forms, [s for s in also if s not in forms], scenarios, run_json, run_md)
        with open(run_json) as f:
            data = json.load(f)
        with open(run_md) as f:
            runpy_md = f.read()
        os.remove(run_md)  # included in our Markdown
    counts, count_note = ({}, None) if args.no_count else counting_pass(runpy, args, forms, count_specs)
    report = build_report(command, data, forms, servers, notes, probe, counts, count_note, args,
                          None if args.count_only else run_json)
    return finish(report, base, runpy_md, rc, args)


def build_report(command: str, data: dict[str, Any], forms: list[str], servers: list[str], notes: list[str],
                 probe: dict[str, Any], counts: dict[str, Any], count_note: str | None, args: Any,
                 run_json: str | None) -> dict[str, Any]:
    table = analyze(data, servers) if data["runs"] else []
    return {"benchmark": "echo", "command": command, "cwd": os.getcwd(), "notes": notes, "probe": probe,
            "forms": forms, "servers": servers, "form_descriptions": {f: FORMS[f].description for f in forms},
            "run_json": os.path.relpath(run_json, args.out_dir) if run_json else None, "meta": data["meta"],
            "table": table, "counts": counts, "counts_note": count_note,
            "count_window": [args.duration, args.warmup], "goals": check_goals(table, counts)}


def finish(report: dict[str, Any], base: str, runpy_md: str | None, rc: int, args: Any) -> int:
    if not args.no_chart:
        try:
            import report as report_mod

            report["chart"] = os.path.basename(report_mod.echo_chart(report, base))
        except ImportError as e:
            log(f"no chart: {e} (pip install -e '.[bench]')")
    md = render(report, runpy_md)
    report["run_py_exit_status"] = rc
    written = H.write_report(base, md, report)
    print(md)
    print(f"Written: {', '.join(os.path.relpath(p) for p in written)}"
          + (f", {report['run_json']}" if report.get("run_json") and not args.from_json else ""))
    failed = any(e["failed"] or e["errors"] for row in report["table"] for e in row["forms"].values())
    failed |= any(e.get("loadgen_errors") or "error" in e for pf in report["counts"].values() for e in pf.values())
    if failed:
        log("some runs failed or loadgen counted errors: see 'Problems' in the report")
    return 1 if failed or rc else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
