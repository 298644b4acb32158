#!/usr/bin/env python3
"""Fan-out: one server writes many small messages to 64 connections (send-bundle issue 15).

    benchmarks/fanout.py                          # 64 conns x 100,000 msgs, 64 B and 1 KiB, 3 reps
    benchmarks/fanout.py -m 10000 -r 1            # quick look

Server: benchmarks/servers/fanout_server.py (a publisher, a bounded queue per
connection, a writer task per connection), one variant per run; client:
benchmarks/fanout_reader.c, which only reads, checks every byte (sequence number and
pattern of each message) and times from the first byte to the last. Variants (-v; the
server's VARIANTS table, where adding one is a writer function and a line):

    trio-epoll            stock Trio, send_all per message
    trio-uring            the same code on trio_uring.run (drop-in), plain sends
    trio-uring-streams    trio_uring's streams, send_all per message
    trio-uring-coalesced  trio_uring's streams, the queue joined into one send_all per batch
                          (the honest rival of bundles)
    trio-epoll-coalesced  stock Trio, coalesced: what coalescing alone gives, without io_uring
    trio-uring-bundles    trio_uring's streams, the same batches sent by
                          trio_uring.bundles.BundleStream.send_many with send bundles on

Per scenario (message size) and variant: messages/s and its ratio to trio-epoll of the
same interleaved run; server CPU µs per message and ring ops (SQEs) per message, from the
server's own snapshots around the publishing (benchmarks/stats.py); then a counting pass
(one run each, --count-msgs messages per connection) with perf counting the server's
system calls, io_uring_enter per message among them, between the reader's go and its
last byte. The goals of benchmarks/goals.py are checked. Writes
results/<timestamp>-fanout.md, .json and a chart.

Time: a run lasts N x M / rate; plain sends manage some 40-60k messages/s here, so
64 x 100,000 messages take 2-3 minutes per plain run (the full default: ~40 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

import goals as goals_mod
import harness as H
from stats import delta

PROG = "fanout"
SERVER = os.path.join(H.HERE, "servers", "fanout_server.py")
REFERENCE = "trio-epoll"
DEFAULT_VARIANTS = ["trio-epoll", "trio-uring", "trio-uring-streams", "trio-epoll-coalesced", "trio-uring-coalesced",
                    "trio-uring-bundles"]
COMPLETION_FIELDS = ("completions", "cqes", "cqes_reaped")  # a counter trio_uring may gain


def size_label(size: int) -> str:
    return f"{size // 1024}k" if size % 1024 == 0 else str(size)


def server_argv(args: Any, variant: str, port: int, msgs: int, size: int, stats: str) -> list[str]:
    return [args.python, SERVER, "--variant", variant, "--port", str(port), "-c", str(args.conns), "-m", str(msgs),
            "-s", str(size), "--queue", str(args.queue), "--max-batch", str(args.max_batch), "--stats", stats]


def one_run(args: Any, runpy: Any, variant: str, size: int, port: int, msgs: int, count: bool) -> dict[str, Any]:
    os.makedirs(os.path.join(H.HARNESS, "tmp"), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="fanout-", dir=os.path.join(H.HARNESS, "tmp"))
    stats_path = os.path.join(tmp, "stats.json")
    server = H.Server(server_argv(args, variant, port, msgs, size, stats_path), H.SERVER_CPU)
    perf = None
    try:
        server.wait_listening(port, runpy.listening)
        reader = [H.tool("fanout_reader"), "-p", str(port), "-c", str(args.conns), "-m", str(msgs), "-s", str(size),
                  "--server-pid", str(server.pid), "--timeout", str(args.timeout), "--json"]
        if count:
            perf = H.Perf(server.pid)
            reader += ["--perf-ctl", perf.fifo]
        win = H.CpuWindow(runpy, server.pid)
        win.start()
        rc, out, err, _ = H.run_client(reader, args.timeout + 60)
        bg = win.stop(exclude={perf.proc.pid} if perf else set())["bg_cpu"]
        calls = perf.stop() if perf else None
        perf = None
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
        if line is None:
            raise RuntimeError(f"fanout_reader gave no JSON (rc {rc}): {err.strip()[-300:]}")
        res: dict[str, Any] = json.loads(line)
        res["human"] = out.splitlines()[0]
        try:
            server.proc.wait(timeout=30)  # it exits by itself once every writer is done
        except subprocess.TimeoutExpired:
            pass
        rec: dict[str, Any] = {"result": res, "bg_cpu": bg}
        try:
            with open(stats_path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            st = None
        n = res["messages"]
        if st and n:
            d = delta(st["before"], st["after"])
            ops = d.get("io", {}).get("ops_submitted", {})
            res["server_cpu_us_per_msg"] = d["cpu_s"] * 1e6 / n
            res["sqes_per_msg"] = sum(ops.values()) / n if st["after"]["io"].get("backend") == "io_uring" else None
            res["ops_per_msg"] = {k: v / n for k, v in sorted(ops.items(), key=lambda kv: -kv[1]) if v}
            done = next((d["io"][k] for k in COMPLETION_FIELDS if k in d.get("io", {})), None)
            res["completions_per_msg"] = done / n if done is not None else None
        if calls and n:
            res["syscalls"] = calls
            res["syscalls_per_msg"] = calls["total"] / n
            res["io_uring_enter_per_msg"] = calls.get("io_uring_enter", 0) / n
        if res["errors"]["total"]:
            rec["error"] = "reader counted errors: " + ", ".join(
                f"{k}={v}" for k, v in res["errors"].items() if v and k != "total")
        elif st is None:
            rec["error"] = "the server wrote no statistics: " + server.output()[-300:].strip()
        return rec
    finally:
        if perf is not None:
            perf.close()
        server.stop()
        for name in os.listdir(tmp):
            os.remove(os.path.join(tmp, name))
        os.rmdir(tmp)


def completions(res: dict[str, Any]) -> float | None:
    """Completions per message: the backend's own counter if it has one, else SQEs
    (every op the servers use today is single-shot: one SQE, one completion)."""
    c = res.get("completions_per_msg")
    return c if c is not None else res.get("sqes_per_msg")


METRICS = {"rate": lambda r: r.get("msgs_per_s") or None, "cpu": lambda r: r.get("server_cpu_us_per_msg"),
           "sqes": lambda r: r.get("sqes_per_msg"), "completions": completions}


def check_goals(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for g in goals_mod.goals_for("fanout"):
        row = next((r for r in table if r["scenario"] == g.scenario), None)
        if row is None:
            continue
        e = row["forms"].get(g.form)
        if g.metric == "ratio":
            value = e.get("rate_ratio") if e else None
        elif g.metric == "completions_per_msg":
            value = e.get("completions") if e else None
        elif g.metric.startswith("ratio_to:"):
            other = row["forms"].get(g.metric.split(":", 1)[1])
            value = e["rate"] / other["rate"] if e and other and e.get("rate") and other.get("rate") else None
        else:
            continue
        out.append({**g._asdict(), "value": value, "met": g.met(value), "goal": g.text(),
                    "note": None if e else f"{g.form} was not run"})
    return out


def render(report: dict[str, Any]) -> str:
    a = report["args"]
    out = ["# Fan-out: many small writes to many connections", "", f"`{report['command']}`", "",
           f"{report['started']}; {a['conns']} connections x {a['msgs']:,} messages per run, {report['reps']} "
           f"repetitions per size and variant, interleaved; server on CPU 1, reader on CPU 0; queue {a['queue']} "
           f"messages per connection, coalesced batches up to {a['max_batch']:,} bytes; trio_uring "
           f"{report['probe'].get('trio_uring', '-')}"
           f"{' (commit ' + report['probe']['commit'] + ')' if report['probe'].get('commit') else ''}.", ""]
    out += [f"* `{v}`: {d}" for v, d in report["descriptions"].items()]
    out += [f"* **Note:** {n}" for n in report["notes"]]
    out += ["", "| scenario | variant | messages/s | ratio | server CPU µs/msg | SQEs/msg (top op) | completions/msg | "
            "syscalls/msg | io_uring_enter/msg | reps |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["table"]:
        counts = report["counts"].get(row["scenario"], {})
        for v, e in row["forms"].items():
            c = counts.get(v, {})
            ops = c.get("ops_per_msg") or {}
            top = next(iter(ops.items()), None)
            sq = "-" if e["sqes"] is None else f"{e['sqes']:.3f}" + (f" ({top[0]} {top[1]:.3f})" if top else "")
            out.append(
                f"| {row['scenario']} | {v} | {H.fnum(e['rate'])} ({H.fpct(e['rate_spread'])}){H.flags(e)} | "
                f"{H.fratio(e.get('rate_ratio'), e.get('rate_paired')) if v != REFERENCE else '1'} | "
                f"{H.fnum(e['cpu'], 2)} | {sq} | "
                f"{'-' if e.get('completions') is None else format(e['completions'], '.3f')} | "
                f"{'-' if c.get('syscalls_per_msg') is None else format(c['syscalls_per_msg'], '.3f')} | "
                f"{'-' if c.get('io_uring_enter_per_msg') is None else format(c['io_uring_enter_per_msg'], '.3f')} | "
                f"{e['median_of']}/{e['reps']}{' (' + str(e['disturbed']) + ' dist.)' if e['disturbed'] else ''} |")
    out += ["", "messages/s: all connections' messages / (last byte - first byte) at the reader; median over the "
            "repetitions used, (spread) = (max - min) / median; ratio = variant / trio-epoll of the same run, in "
            "parentheses the range of per-repetition ratios. Server CPU and SQEs per message: the server's own "
            "getrusage and io_statistics.ops_submitted, snapshots when publishing starts and when the last writer "
            "is done. Completions per message: counted by the bundles writer (every CQE of its send bundles, "
            "IORING_CQE_F_MORE ones included); for the other variants read as SQEs per message (their ops are "
            "single-shot: one SQE, one completion). syscalls and io_uring_enter per "
            f"message: the counting pass (perf stat, one run per size and variant, {a['count_msgs']:,} messages "
            "per connection), from the reader's go to its last byte. `!` = errors (see Problems), `~` = still "
            "disturbed after retries.", ""]
    if report["goals"]:
        out += ["## Goals (benchmarks/goals.py)", "", "| scenario | variant | metric | goal | measured | verdict |",
                "|---|---|---|---|---|---|"]
        for g in report["goals"]:
            v = "-" if g["value"] is None else f"{g['value']:.3f}"
            verdict = goals_mod.verdict(g["met"]) + (f" ({g['note']})" if g.get("note") else "")
            out.append(f"| {g['scenario']} | {g['form']} | {g['metric']} | {g['goal']} | {v} | {verdict} |")
        out.append("")
    problems = [f"* {row['scenario']} / {v}: {m}" for row in report["table"] for v, e in row["forms"].items()
                for m in e["failed"]]
    problems += [f"* counting pass / {s} / {v}: {c['error']}" for s, pc in report["counts"].items()
                 for v, c in pc.items() if c.get("error")]
    if problems:
        out += ["## Problems", "", *problems, ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--variants", default=",".join(DEFAULT_VARIANTS), help="comma list (server's VARIANTS)")
    ap.add_argument("-S", "--sizes", default="64,1024", help="message sizes in bytes (64,1024)")
    ap.add_argument("-c", "--conns", type=int, default=64, help="connections (64)")
    ap.add_argument("-m", "--msgs", type=int, default=100000, help="messages per connection (100000)")
    ap.add_argument("-r", "--reps", type=int, default=3, help="repetitions, interleaved (3)")
    ap.add_argument("--queue", type=int, default=1024, help="queue bound per connection, messages (1024)")
    ap.add_argument("--max-batch", type=int, default=65536, help="coalesced: bytes per send_all at most (65536)")
    ap.add_argument("--count-msgs", type=int, default=20000,
                    help="messages per connection in the counting pass (20000; at most -m)")
    ap.add_argument("--no-count", action="store_true", help="skip the counting pass (perf)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds a run may take (600)")
    ap.add_argument("--python", default=H.default_python(), help="server interpreter (.venv/bin/python)")
    ap.add_argument("--port-base", type=int, default=27000)
    ap.add_argument("--out-dir", default=H.RESULTS)
    ap.add_argument("--no-chart", action="store_true")
    H.add_noise_args(ap)
    args = ap.parse_args()
    command = shlex.join([os.path.relpath(sys.argv[0], H.REPO), *sys.argv[1:]])
    wanted = list(dict.fromkeys([REFERENCE, *(v.strip() for v in args.variants.split(",") if v.strip())]))
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.count_msgs = min(args.count_msgs, args.msgs)
    probe = H.probe_python(args.python)
    H.prepare(tools=("fanout_reader",))
    runpy = H.load_runpy()

    variants, notes, descriptions = [], [], {}
    desc_code = ("import sys; sys.path.insert(0, sys.argv[1]); import json, fanout_server as s; "
                 "print(json.dumps({k: v.description for k, v in s.VARIANTS.items()}))")
    r = subprocess.run([args.python, "-c", desc_code, os.path.dirname(SERVER)], capture_output=True, text=True)
    known = json.loads(r.stdout) if r.returncode == 0 else {}
    for v in wanted:
        if v not in known:
            sys.exit(f"fanout: unknown variant {v!r}; known: {', '.join(known)} ({r.stderr.strip()[-200:]})")
        chk = subprocess.run([args.python, SERVER, "--variant", v, "--check"], capture_output=True, text=True)
        if chk.returncode:
            notes.append(f"{v} skipped: {(chk.stdout + chk.stderr).strip()[-300:]}")
        else:
            variants.append(v)
            descriptions[v] = known[v]
    for n in notes:
        H.log(PROG, n)
    scen_size = {f"fanout-c{args.conns}-s{size_label(s)}": s for s in sizes}
    started = time.strftime("%Y-%m-%dT%H:%M:%S")

    def once(scen: str, variant: str, port: int) -> dict[str, Any]:
        return one_run(args, runpy, variant, scen_size[scen], port, args.msgs, count=False)

    def describe(rec: dict[str, Any]) -> str:
        r = rec["result"]
        cpu = r.get("server_cpu_us_per_msg")
        return (f"{r['msgs_per_s']:,.0f} msg/s in {r['seconds']:.2f} s, server {cpu or 0:.2f} µs/msg, "
                f"SQEs/msg {r.get('sqes_per_msg') if r.get('sqes_per_msg') is None else round(r['sqes_per_msg'], 3)}")

    counts: dict[str, dict[str, Any]] = {}
    with H.stopping_on_sigterm():
        runs = H.interleave(PROG, runpy, variants, list(scen_size), args.reps, once, args, describe)
        if not args.no_count:
            why = H.perf_usable()
            if why:
                notes.append(f"System calls not counted: {why}.")
            else:
                picker = runpy.PortPicker(args.port_base + 1000)
                for scen, size in scen_size.items():
                    for v in variants:
                        H.log(PROG, f"counting: {scen} {v}")
                        try:
                            rec = one_run(args, runpy, v, size, picker.next(), args.count_msgs, count=True)
                            counts.setdefault(scen, {})[v] = {k: rec["result"].get(k) for k in (
                                "syscalls_per_msg", "io_uring_enter_per_msg", "syscalls", "ops_per_msg")}
                            if rec.get("error"):
                                counts[scen][v]["error"] = rec["error"]
                        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                            counts.setdefault(scen, {})[v] = {"error": str(e)}
    table = H.summarize(runs, list(scen_size), variants, REFERENCE, METRICS, {"rate": "higher", "cpu": "lower"})
    others = [v for v in variants if v != REFERENCE]
    report: dict[str, Any] = {
        "benchmark": "fanout", "command": command, "started": started, "probe": probe, "notes": notes,
        "descriptions": descriptions, "variants": variants, "reps": args.reps, "args": vars(args), "table": table,
        "counts": counts, "runs": runs, "goals": check_goals(table),
        "summary_lines": [
            f"Fan-out {row['scenario']} (`benchmarks/fanout.py`): " + ", ".join(
                f"{v} {e['rate_ratio']:.2f}" for v, e in row["forms"].items() if e.get("rate_ratio"))
            + f" x stock Trio ({H.fnum(row['forms'][REFERENCE]['rate'])} msg/s)"
            for row in table if row["forms"].get(REFERENCE, {}).get("rate")],
        "chart_data": {
            "title": "Fan-out: messages/s / stock Trio (same run, log scale); black tick = goal",
            "ylabel": "messages/s / stock Trio", "groups": list(scen_size), "log": True,
            "series": {v: [r["forms"][v].get("rate_ratio") for r in table] for v in others},
            "ranges": {v: [(min(p), max(p)) if (p := r["forms"][v].get("rate_paired")) else None for r in table]
                       for v in others},
            "goals": {v: [g.threshold if (g := goals_mod.goal("fanout", r["scenario"], v, "ratio")) else None
                          for r in table] for v in others}},
    }
    base = H.outputs(args.out_dir, "fanout")
    written = []
    if not args.no_chart and others:
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
    failed = any(e["failed"] for row in table for e in row["forms"].values())
    failed |= any(c.get("error") for pc in counts.values() for c in pc.values())
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
