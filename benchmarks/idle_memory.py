#!/usr/bin/env python3
"""Server memory for 10,000 idle connections: stock Trio vs trio_uring, per form.

    benchmarks/idle_memory.py                  # 10,000 connections, every form, 3 interleaved reps
    benchmarks/idle_memory.py -n 2000 -r 1     # quick look

For each repetition and form (benchmarks/forms.py; order rotated on each repetition):

 1. Start the echo server (benchmarks/servers/echo.py, the same handler as compare.py)
    on CPU 1. Warm it up: 64 connections, one echo each, closed.
 2. Baseline: the server's RSS (VmRSS, /proc/PID/status) with no connection open.
 3. A client in a separate process (this script with --client, on CPU 0) opens N
    connections, 500 at a time, and does one 1-byte echo on each, so every connection
    has been accepted and its handler is waiting in receive_some. Then it stays idle.
 4. After --settle seconds (1) of idle: the server's RSS again, and its open fds (to
    confirm all N connections are there).
    KiB per connection = (RSS with N idle connections - baseline) / N.
 5. The client closes everything; the RSS after that is reported too (memory the
    server keeps once the connections are gone).

RSS counts pages the process touched: a buffer that is allocated but never written
does not count until it is. Everything else on the machine does not matter here (no
timing), so no run is "disturbed"; the spread over the repetitions shows how stable it is.
Writes results/<timestamp>-idle-memory.md, .json, and a chart (.svg, .png).
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import shlex
import socket
import subprocess
import sys
import time
from typing import Any

import goals as goals_mod
import harness as H
from forms import DEFAULT_FORMS, FORMS, REFERENCE, parse_forms

PROG = "idle_memory"
ECHO_SERVER = os.path.join(H.HERE, "servers", "echo.py")


# ---------------------------------------------------------------- the client (child process)

def client(port: int, n: int, batch: int = 500) -> None:
    """Open n connections, one 1-byte echo on each, print "ready", wait for stdin to close."""
    need = n + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
        except (ValueError, OSError):
            sys.exit(f"idle_memory client: need {need} fds, RLIMIT_NOFILE allows {hard} (run as root, or ulimit -n)")
    conns: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + 120
    while len(conns) < n:
        pending = {}
        for _ in range(min(batch, n - len(conns))):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE)
            pending[s] = "connect"
        while pending:
            if time.monotonic() > deadline:
                sys.exit(f"idle_memory client: timed out with {len(conns)} of {n} connections done")
            for key, _ in sel.select(timeout=1.0):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if pending[s] == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        sys.exit(f"idle_memory client: connect failed: {os.strerror(err)}")
                    s.send(b"x")
                    pending[s] = "echo"
                    sel.modify(s, selectors.EVENT_READ)
                else:
                    if s.recv(1) != b"x":
                        sys.exit("idle_memory client: wrong or no echo")
                    sel.unregister(s)
                    del pending[s]
                    conns.append(s)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()  # until the driver closes our stdin
    for s in conns:
        s.close()


# ---------------------------------------------------------------- one measurement

def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def measure(args: Any, runpy: Any, form: str, port: int) -> dict[str, Any]:
    env = FORMS[form].env
    server = H.Server([args.python, ECHO_SERVER, "--form", form, "--port", str(port)], H.SERVER_CPU, env)
    cl = None
    try:
        server.wait_listening(port, runpy.listening)
        warm = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        for s in warm:
            s.sendall(b"w")
        for s in warm:
            if s.recv(1) != b"w":
                raise RuntimeError("warm-up echo failed")
            s.close()
        time.sleep(args.settle)
        base, fds0 = H.rss_kib(server.pid), fd_count(server.pid)
        cl = subprocess.Popen(H.pinned([sys.executable, os.path.abspath(__file__), "--client", str(port),
                                        "-n", str(args.connections)], H.CLIENT_CPU),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cl.stdout is not None and cl.stdin is not None
        t0 = time.monotonic()
        line = cl.stdout.readline()
        if not line.startswith("ready"):
            cl.kill()
            raise RuntimeError(f"client failed: {cl.communicate()[1].strip()[-300:]}")
        open_s = time.monotonic() - t0
        time.sleep(args.settle)
        idle, fds1, hwm = H.rss_kib(server.pid), fd_count(server.pid), vm_hwm(server.pid)
        cl.stdin.close()
        cl.wait(timeout=60)
        cl = None
        time.sleep(args.settle)
        after, fds2 = H.rss_kib(server.pid), fd_count(server.pid)
        if base is None or idle is None:
            raise RuntimeError("server gone: " + server.output()[-300:])
        res = {"n": args.connections, "rss_base_kib": base, "rss_idle_kib": idle, "rss_after_close_kib": after,
               "vm_hwm_kib": hwm, "kib_per_conn": (idle - base) / args.connections, "fds_base": fds0,
               "fds_idle": fds1, "fds_after_close": fds2, "open_s": round(open_s, 2),
               "errors": {"total": 0 if fds1 - fds0 >= args.connections else 1}}
        if res["errors"]["total"]:
            return {"result": res, "error": f"the server had {fds1 - fds0} more fds, not {args.connections}"}
        return {"result": res}
    finally:
        if cl is not None:
            cl.kill()
            cl.wait()
        server.stop()


def vm_hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
    except OSError:
        return None


# ---------------------------------------------------------------- report

def summary_item(form: str, e: dict[str, Any], scenario: str) -> str:
    """ "trio-uring 4.77 = 0.93 (goal ≤ 1: met) x stock" for the README's summary."""
    text = f"{form} {H.fnum(e['kib'], 2)}"
    if form != REFERENCE and e.get("kib_ratio"):
        text += f" = {goals_mod.with_goal(e['kib_ratio'], 'idle-memory', scenario, form, 'kib_per_conn_ratio')} x stock"
    return text


def mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f} MiB"


def render(report: dict[str, Any]) -> str:
    n, forms = report["connections"], report["forms"]
    out = ["# Server memory for idle connections", "", f"`{report['command']}`", "",
           f"{report['started']}; {report['reps']} repetitions per form, interleaved; {n:,} connections from a "
           f"client in another process; trio_uring {report['probe'].get('trio_uring', '-')}"
           f"{' (commit ' + report['probe']['commit'] + ')' if report['probe'].get('commit') else ''}.", ""]
    out += [f"* **Note:** {x}" for x in report["notes"]]
    out += ["| form | RSS, no connection | RSS, idle connections | KiB per connection | ratio to stock | goal | "
            "met | RSS after close |", "|---|---|---|---|---|---|---|---|"]
    row = report["table"][0]
    for f in forms:
        e = row["forms"][f]
        g = goals_mod.goal("idle-memory", report["scenario"], f, "kib_per_conn_ratio")
        r = e.get("kib_ratio")
        out.append(f"| {f}{H.flags(e)} | {mib(e['base'])} | {mib(e['idle'])} | {H.fnum(e['kib'], 2)} "
                   f"({H.fpct(e['kib_spread'])}) | {'-' if r is None else f'{r:.2f}'} | {g.text() if g else '-'} | "
                   f"{goals_mod.verdict(g.met(r)) if g else '-'} | {mib(e['after'])} |")
    out += ["", "Medians over the repetitions, (spread) = (max - min) / median. KiB per connection = (RSS with "
            "the connections open and idle - RSS before) / connections. ratio = the form's KiB per connection / "
            "stock Trio's (below 1: less memory).", ""]
    problems = [f"* {f}: {m}" for f in forms for m in row["forms"][f]["failed"]]
    if problems:
        out += ["## Problems", "", *problems, ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--connections", type=int, default=10000, help="idle connections (10000)")
    ap.add_argument("-r", "--reps", type=int, default=3, help="repetitions, interleaved (3)")
    ap.add_argument("-s", "--forms", default=",".join(DEFAULT_FORMS), help=f"forms ({', '.join(FORMS)})")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds idle before each RSS reading (1)")
    ap.add_argument("--python", default=H.default_python(), help="server interpreter (.venv/bin/python)")
    ap.add_argument("--port-base", type=int, default=25000)
    ap.add_argument("--out-dir", default=H.RESULTS)
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client(args.client, args.connections)
        return 0
    command = shlex.join([os.path.relpath(sys.argv[0], H.REPO), *sys.argv[1:]])
    probe = H.probe_python(args.python)
    forms, notes = H.usable_forms(probe, parse_forms(args.forms), lambda f: FORMS[f].uses_uring)
    H.prepare(tools=())
    runpy = H.load_runpy()
    scenario = f"idle-c{args.connections}"
    started = time.strftime("%Y-%m-%dT%H:%M:%S")

    def once(_scen: str, form: str, port: int) -> dict[str, Any]:
        return measure(args, runpy, form, port)

    def describe(rec: dict[str, Any]) -> str:
        r = rec["result"]
        return (f"RSS {r['rss_base_kib'] / 1024:.1f} -> {r['rss_idle_kib'] / 1024:.1f} MiB: "
                f"{r['kib_per_conn']:.2f} KiB/conn (opened in {r['open_s']} s)")

    noise = argparse.Namespace(retries=0, max_bg=float("inf"), max_steal=float("inf"), quiet_wait=0,
                               port_base=args.port_base)
    with H.stopping_on_sigterm():
        runs = H.interleave(PROG, runpy, forms, [scenario], args.reps, once, noise, describe)
    metrics = {"kib": lambda r: r["kib_per_conn"], "base": lambda r: r["rss_base_kib"],
               "idle": lambda r: r["rss_idle_kib"], "after": lambda r: r["rss_after_close_kib"]}
    table = H.summarize(runs, [scenario], forms, REFERENCE, metrics, {})
    ref = table[0]["forms"].get(REFERENCE, {}).get("kib")
    for e in table[0]["forms"].values():  # as the goal states it: memory / stock Trio's memory
        e["kib_ratio"] = e["kib"] / ref if e["kib"] is not None and ref else None
    checked = []
    for g in goals_mod.goals_for("idle-memory"):
        e = table[0]["forms"].get(g.form)
        if g.scenario == scenario and e is not None:
            checked.append({**g._asdict(), "value": e.get("kib_ratio"), "met": g.met(e.get("kib_ratio")),
                            "goal": g.text()})
    report: dict[str, Any] = {
        "benchmark": "idle-memory", "command": command, "started": started, "probe": probe, "notes": notes,
        "forms": forms, "connections": args.connections, "reps": args.reps, "scenario": scenario,
        "table": table, "runs": runs, "goals": checked,
        "summary_lines": [f"Memory, {args.connections:,} idle connections (`benchmarks/idle_memory.py`), KiB per "
                          "connection: " + ", ".join(summary_item(f, e, scenario) for f, e in
                                                     table[0]["forms"].items())],
    }
    base = H.outputs(args.out_dir, "idle-memory")
    chart_args = {"title": f"Server RSS per idle connection ({args.connections:,} connections; lower is better)",
                  "ylabel": "KiB per connection", "groups": [scenario],
                  "series": {f: [table[0]["forms"][f]["kib"]] for f in forms}, "baseline": None}
    report["chart_data"] = chart_args
    if not args.no_chart:
        try:
            import report as report_mod

            report["chart"] = os.path.basename(report_mod.ratio_chart(base=base, **chart_args))
        except ImportError as e:
            H.log(PROG, f"no chart: {e} (pip install -e '.[bench]')")
    md = render(report)
    written = H.write_report(base, md, report) + ([base + ".svg", base + ".png"] if report.get("chart") else [])
    print(md)
    print(f"Written: {', '.join(os.path.relpath(p) for p in written)}")
    return 1 if any(e["failed"] for e in table[0]["forms"].values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
