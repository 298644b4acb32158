#!/usr/bin/env python3
"""Stock Trio on epoll vs trio_uring: the same echo handler in three forms, one command.

    benchmarks/compare.py                  # full comparison: 6 scenarios x 5 reps, then strace
    benchmarks/compare.py -r 1 -d 1 -S echo-c64-s64,connect-c32     # quick look

The forms (names as in the shared harness, /work/shared/bench/run.py):

    trio-epoll          trio.serve_tcp under trio.run: stock Trio, epoll
    trio-uring          the same code under trio_uring.run: the drop-in
    trio-uring-streams  trio_uring.serve_tcp under trio_uring.run: trio_uring's own streams
                        (left out, with a note, while trio_uring has no serve_tcp)

What it does:

 1. Copies the shared harness into benchmarks/.harness/ (the shared folder is
    read-only; the copy is refreshed on every call) and builds its loadgen.
 2. Runs the harness's run.py with the project's interpreter: every scenario,
    every form, interleaved (the order of forms rotates on each repetition),
    disturbed runs retried.  Nothing here generates load itself.
 3. Reads run.py's JSON and prints, per scenario, each form's median, its
    ratio to trio-epoll from the same run next to the issue's target, and
    server CPU per request (per MB for stream) from /proc.
 4. Measures syscalls per request: echo-c64-s64 against each form with
    `strace -c -f -p PID` attached (see strace_pass for how setup and
    teardown are kept out of the count).
 5. Writes results/<timestamp>.md, .json (this script's tables and the
    strace counts) and .run.json (run.py's raw JSON, every run).

Benchmarks are scripts, not tests: nothing here is collected by pytest.
See benchmarks/README.md for how to read the output.
"""

import argparse
import datetime
import filecmp
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HARNESS = os.path.join(HERE, ".harness")
RESULTS = os.path.join(HERE, "results")
SHARED_BENCH = os.environ.get("TRIO_URING_BENCH_DIR", "/work/shared/bench")

FORMS = {
    "trio-epoll": "trio.serve_tcp under trio.run (stock Trio, epoll)",
    "trio-uring": "trio.serve_tcp under trio_uring.run (drop-in)",
    "trio-uring-streams": "trio_uring.serve_tcp under trio_uring.run (trio_uring streams)",
}
REFERENCE = "trio-epoll"
DEFAULT_SCENARIOS = ["echo-c1-s64", "echo-c64-s64", "echo-c512-s64", "connect-c32",
                     "stream-c8-s64k", "echo-c64-s16k"]

# The performance issue's targets: minimum ratio form / trio-epoll, per scenario.
TARGETS = {
    "trio-uring": {"echo-c1-s64": 0.95, "echo-c64-s64": 1.1, "echo-c512-s64": 1.3,
                   "connect-c32": 1.5, "stream-c8-s64k": 1.0, "echo-c64-s16k": 1.0},
    "trio-uring-streams": {"echo-c1-s64": 1.2, "echo-c64-s64": 2.0, "echo-c512-s64": 2.5,
                           "connect-c32": 2.5, "stream-c8-s64k": 1.5, "echo-c64-s16k": 1.5},
}

# Harness files we need (not its .venv, results or build products).
HARNESS_FILES = ["run.py", "loadgen.c", "Makefile", "README.md", "servers/trio_echo.py",
                 "servers/asyncio_echo.py", "servers/asyncio_streams_echo.py",
                 "servers/epoll_echo.c", "servers/uring_echo.c"]


def log(msg):
    print(f"compare: {msg}", file=sys.stderr, flush=True)


def read_text(path):
    with open(path) as f:
        return f.read()


# ---------------------------------------------------------------- preparation

def prepare_harness(src, c_servers):
    """Refresh benchmarks/.harness from the shared harness and build loadgen
    (and the C servers if asked).  Files are copied with their mtimes and only
    when they differ, so make rebuilds only what changed upstream."""
    if not os.path.exists(os.path.join(src, "run.py")):
        sys.exit(f"compare: no harness at {src} (set TRIO_URING_BENCH_DIR or --bench-dir)")
    for rel in HARNESS_FILES:
        s, d = os.path.join(src, rel), os.path.join(HARNESS, rel)
        if not os.path.exists(s):
            continue
        os.makedirs(os.path.dirname(d), exist_ok=True)
        if not (os.path.exists(d) and filecmp.cmp(s, d, shallow=False)):
            shutil.copy2(s, d)
            os.chmod(d, 0o755 if rel == "run.py" else 0o644)
    targets = ["loadgen"]
    if c_servers:
        targets.append("servers/epoll_echo")
        if "c-uring" in c_servers:
            if not os.path.exists("/usr/include/liburing.h"):
                apt_install("liburing-dev")
            targets.append("servers/uring_echo")
    r = subprocess.run(["make", "-s", "-C", HARNESS, *targets], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"compare: building the harness failed:\n{r.stdout}{r.stderr}")


def apt_install(pkg):
    log(f"apt-get install {pkg}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", pkg], env=env, stdout=subprocess.DEVNULL)


PROBE = r"""
import json, sys
out = {"python": sys.version.split()[0]}
try:
    import trio
    out["trio"] = trio.__version__
except Exception as e:
    out["trio_error"] = repr(e)
try:
    import trio_uring
    out["trio_uring"] = getattr(trio_uring, "__version__", "?")
    out["trio_uring_path"] = trio_uring.__file__
    out["serve_tcp"] = hasattr(trio_uring, "serve_tcp")
    try:
        trio_uring.check_available()
        out["uring_available"] = True
    except Exception as e:
        out["uring_available"] = False
        out["uring_error"] = str(e)
except Exception as e:
    out["trio_uring_error"] = repr(e)
print(json.dumps(out))
"""


def probe_python(python):
    r = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.exit(f"compare: cannot run {python}: {r.stderr.strip()}")


def choose_forms(probe, wanted):
    """The forms that can run with this interpreter, and a note for each left out."""
    forms, notes = [], []
    if "trio_error" in probe:
        sys.exit(f"compare: trio cannot be imported by the server interpreter: {probe['trio_error']}")
    for f in wanted:
        if f != REFERENCE and "trio_uring_error" in probe:
            notes.append(f"{f} skipped: trio_uring cannot be imported ({probe['trio_uring_error']}).")
        elif f != REFERENCE and not probe.get("uring_available"):
            notes.append(f"{f} skipped: io_uring is unavailable here ({probe.get('uring_error')}).")
        elif f == "trio-uring-streams" and not probe.get("serve_tcp"):
            notes.append("trio-uring-streams skipped: trio_uring has no serve_tcp yet "
                         "(hasattr(trio_uring, 'serve_tcp') is False), so only the drop-in is compared.")
        else:
            forms.append(f)
    return forms, notes


def load_runpy():
    """The harness's run.py as a module (server registry, port helpers, stop())."""
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(HARNESS, "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- the suite

def run_suite(args, servers, scenarios, run_json, run_md):
    argv = [sys.executable, os.path.join(HARNESS, "run.py"), "-s", ",".join(servers)]
    for s in scenarios:  # one -S each: a MODE:c=N,s=N spec has commas of its own
        argv += ["-S", s]
    argv += ["-r", str(args.reps), "-d", str(args.duration),
            "-w", str(args.warmup), "--python", args.python, "--retries", str(args.retries),
            "--max-bg", str(args.max_bg), "--max-steal", str(args.max_steal),
            "--quiet-wait", str(args.quiet_wait), "-o", run_json, "--md", run_md]
    if args.no_pin:
        argv.append("--no-pin")
    log("running " + " ".join(shlex.quote(a) for a in argv))
    # run.py's progress goes to our stderr; its Markdown (stdout) is also in run_md.
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
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


# ---------------------------------------------------------------- analysis

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def primary(mode, res):
    return res["mbps"] if mode == "stream" else res["rps"]


def unit_of(mode):
    return {"stream": "MB/s", "connect": "conn/s"}.get(mode, "req/s")


def cpu_unit_of(mode):
    return {"stream": "µs/MB", "connect": "µs/conn"}.get(mode, "µs/req")


def cpu_per_unit(mode, res):
    """Server CPU µs per request (per connection, per MB for stream):
    cores used / units per second * 1e6."""
    rate = primary(mode, res)
    if res.get("server_cpu") is None or not rate:
        return None
    return res["server_cpu"] / rate * 1e6


def selected(runs, scen, server):
    """The repetitions run.py's median is over: used attempts with a result,
    the clean ones only if at least two are clean (run.py's rule)."""
    rs = [r for r in runs if r["scenario"] == scen and r["server"] == server and r.get("used")]
    ok = [r for r in rs if "result" in r]
    clean = [r for r in ok if not r["disturbed"]]
    return rs, (clean if len(clean) >= 2 else ok)


def analyze(data, servers):
    """Per scenario and server: median rate and CPU/unit, spreads, and the
    ratio to trio-epoll (ratio of medians, plus the range of the per-repetition
    ratios, each form against trio-epoll of the same repetition)."""
    runs, meta = data["runs"], data["meta"]
    table = []
    for scen, spec in meta["scenarios"].items():
        mode = spec["mode"]
        row = {"scenario": scen, "mode": mode, "unit": unit_of(mode), "cpu_unit": cpu_unit_of(mode),
               "forms": {}}
        for srv in servers:
            rs, ok = selected(runs, scen, srv)
            vals = [primary(mode, r["result"]) for r in ok]
            cpus = [cpu_per_unit(mode, r["result"]) for r in ok]
            med, cmed = median(vals), median(cpus)
            cpus = [c for c in cpus if c is not None]
            row["forms"][srv] = {
                "median": med, "values": vals,
                "spread": (max(vals) - min(vals)) / med if vals and med else None,
                "cpu_per_unit": cmed, "cpu_values": cpus,
                "cpu_spread": (max(cpus) - min(cpus)) / cmed if cpus and cmed else None,
                "server_cpu": median([r["result"].get("server_cpu") for r in ok]),
                "reps": len(rs), "median_of": len(ok),
                "disturbed": sum(1 for r in rs if r.get("disturbed")),
                "errors": sum(r["result"]["errors"]["total"] for r in rs if "result" in r),
                "failed": [f"rep {r['rep'] + 1}: {r['error']}" for r in rs if r.get("error")],
                "by_rep": {r["rep"]: r for r in ok},
            }
        ref = row["forms"].get(REFERENCE)
        for srv, e in row["forms"].items():
            if srv == REFERENCE or not ref:
                continue
            e["ratio"] = e["median"] / ref["median"] if e["median"] and ref["median"] else None
            # CPU ratio: trio-epoll's cost / this form's cost, so > 1 means cheaper, like the rate ratio
            e["cpu_ratio"] = (ref["cpu_per_unit"] / e["cpu_per_unit"]
                              if e["cpu_per_unit"] and ref["cpu_per_unit"] else None)
            paired, cpu_paired = [], []
            for rep, r in e["by_rep"].items():
                rr = ref["by_rep"].get(rep)
                if rr is None:
                    continue
                a, b = primary(mode, r["result"]), primary(mode, rr["result"])
                if a and b:
                    paired.append(a / b)
                ca, cb = cpu_per_unit(mode, r["result"]), cpu_per_unit(mode, rr["result"])
                if ca and cb:
                    cpu_paired.append(cb / ca)
            e["paired_ratios"], e["cpu_paired_ratios"] = paired, cpu_paired
            e["target"] = TARGETS.get(srv, {}).get(scen)
        for e in row["forms"].values():
            del e["by_rep"]
        table.append(row)
    return table


# ---------------------------------------------------------------- syscalls

STRACE_LINE = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?([a-z_0-9]+)\s*$")


def parse_strace_c(text):
    """{syscall: calls} from `strace -c` output (the total line is skipped and
    recomputed: it has no usecs/call column, so it parses ambiguously)."""
    calls = {}
    for line in text.splitlines():
        m = STRACE_LINE.match(line)
        if m and m.group(6) != "total":
            calls[m.group(6)] = calls.get(m.group(6), 0) + int(m.group(4))
    return calls


def strace_once(bench, cmd, port, duration, args):
    """Start the server, attach strace -c -f, run loadgen echo-c64-s64 for
    `duration` s (no warm-up), detach.  Returns ({syscall: calls}, loadgen JSON)."""
    argv = shlex.split(cmd.replace("{port}", str(port)))
    if not args.no_pin:
        argv = ["taskset", "-c", "1", *argv]
    tmp = tempfile.mkdtemp(prefix="compare-strace-")
    out, err_path = os.path.join(tmp, "strace.txt"), os.path.join(tmp, "strace.err")
    slog = open(os.path.join(tmp, "server.log"), "w+b")  # noqa: SIM115  (closed in the finally below)
    server = subprocess.Popen(argv, cwd=HARNESS, stdin=subprocess.DEVNULL, stdout=slog,
                              stderr=subprocess.STDOUT, start_new_session=True)
    tracer = None
    try:
        t_end = time.monotonic() + 15
        while not bench.listening(port):
            if server.poll() is not None or time.monotonic() > t_end:
                slog.seek(0)
                raise RuntimeError("server did not start listening: "
                                   + slog.read().decode(errors="replace")[-500:])
            time.sleep(0.02)
        with open(err_path, "w") as ef:
            tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(server.pid)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ef)
        t_end = time.monotonic() + 10
        while "attached" not in read_text(err_path):
            if tracer.poll() is not None or time.monotonic() > t_end:
                raise RuntimeError("strace did not attach: " + read_text(err_path).strip())
            time.sleep(0.02)
        time.sleep(0.2)  # let it attach to every thread (-f)
        lg = [bench.LOADGEN, "-m", "echo", "-p", str(port), "-c", "64", "-s", "64",
              "-d", str(duration), "-w", "0", "--json", "--setup-timeout", "30"]
        if not args.no_pin:
            lg = ["taskset", "-c", "0", *lg]
        r = subprocess.run(lg, capture_output=True, text=True, timeout=duration + 60)
        line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("{")), None)
        if line is None:
            raise RuntimeError(f"loadgen gave no JSON (rc {r.returncode}): {r.stderr.strip()[-300:]}")
        res = json.loads(line)
        tracer.send_signal(signal.SIGINT)  # detach; strace writes the summary
        tracer.wait(timeout=15)
        tracer = None
        with open(out) as f:
            calls = parse_strace_c(f.read())
        if res["errors"]["total"]:
            res["human"] = next((ln for ln in r.stdout.splitlines() if not ln.startswith("{")), "")
        return calls, res
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)
            try:
                tracer.wait(timeout=15)
            except subprocess.TimeoutExpired:
                tracer.kill()
        bench.stop(server)
        slog.close()
        shutil.rmtree(tmp, ignore_errors=True)


def strace_pass(bench, forms, args):
    """Syscalls per request at echo-c64-s64, per form.

    strace counts everything the server does while attached: accepting the 64
    connections, the probe exchanges, closing them at the end, and the
    requests.  Per-connection work is small next to ~2 syscalls per request
    on epoll, but not next to io_uring's few per hundred requests.  So each form is
    run twice under strace, with a 1 s and a (1 + --strace-seconds) s window,
    and syscalls/request = (calls_long - calls_short) / (requests_long -
    requests_short): the fixed part cancels.  strace slows every syscall, so
    the rates seen here are not reported; the slowdown also changes how many
    requests a loop iteration handles, so the counts are approximate."""
    if shutil.which("strace") is None:
        apt_install("strace")
        if shutil.which("strace") is None:
            return None, "strace is not installed and could not be installed; syscalls not measured."
    picker = bench.PortPicker(args.port_base + 1000)
    result = {}
    short, long_ = 1.0, 1.0 + args.strace_seconds
    for form in forms:
        cmd = bench.SERVERS[form].replace("{python}", shlex.quote(args.python))
        log(f"strace: {form} ({short:g} s and {long_:g} s windows)")
        try:
            c_s, r_s = strace_once(bench, cmd, picker.next(), short, args)
            c_l, r_l = strace_once(bench, cmd, picker.next(), long_, args)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            result[form] = {"error": str(e)}
            log(f"strace: {form}: {e}")
            continue
        dreq = r_l["requests"] - r_s["requests"]
        names = set(c_s) | set(c_l)
        delta = {n: c_l.get(n, 0) - c_s.get(n, 0) for n in names}
        entry = {"short": {"calls": c_s, "requests": r_s["requests"], "errors": r_s["errors"]},
                 "long": {"calls": c_l, "requests": r_l["requests"], "errors": r_l["errors"]},
                 "requests": dreq, "syscalls": sum(delta.values())}
        if dreq > 0:
            entry["per_request"] = entry["syscalls"] / dreq
            entry["by_syscall"] = {n: d / dreq for n, d in sorted(delta.items(), key=lambda kv: -kv[1]) if d}
        # the undifferenced ratio, for reference
        entry["naive_per_request"] = (sum(c_l.values()) / r_l["requests"]) if r_l["requests"] else None
        for k, r in (("short", r_s), ("long", r_l)):
            if r["errors"]["total"]:
                entry.setdefault("loadgen_errors", []).append(f"{k} window: {r.get('human') or r['errors']}")
        result[form] = entry
    return result, None


# ---------------------------------------------------------------- report

def fnum(x, unit=""):
    if x is None:
        return "-"
    if unit == "MB/s" and x < 100:
        return f"{x:,.1f}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def fpct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def fratio(x, paired):
    if x is None:
        return "-"
    s = f"**{x:.2f}**"
    if len(paired) > 1:
        s += f" ({min(paired):.2f}–{max(paired):.2f})"
    return s


def ftarget(t):
    if t is None:
        return "-"
    return f"≥{t:.1f}" if t == round(t, 1) else f"≥{t:.2f}"  # ≥1.0, ≥2.5, ≥0.95


def met(ratio, target):
    if ratio is None or target is None:
        return "-"
    return "yes" if ratio >= target else "no"


def flags(e):
    f = ""
    if e["errors"] or e["failed"]:
        f += " !"
    if e["disturbed"]:
        f += " ~"
    return f


def ratio_table(table, forms, kind):
    """One Markdown table, one row per scenario: trio-epoll's value, then per
    form its value, the ratio to trio-epoll, the issue's target and whether
    it is met.  kind "rate": throughput; kind "cpu": server CPU per unit."""
    value, spread, ratio, paired, unit = {
        "rate": ("median", "spread", "ratio", "paired_ratios", "unit"),
        "cpu": ("cpu_per_unit", "cpu_spread", "cpu_ratio", "cpu_paired_ratios", "cpu_unit"),
    }[kind]
    hdr = ["scenario", REFERENCE]
    for f in forms:
        hdr += [f, "ratio", "target", "met"]
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    n_met = n_targets = 0

    def cell(e, row):
        text = f"{fnum(e[value], row[unit])} ({fpct(e[spread])})"
        return text + flags(e) if kind == "rate" else text

    for row in table:
        ref = row["forms"].get(REFERENCE)
        cells = [f"{row['scenario']} ({row[unit]})", cell(ref, row) if ref else "-"]
        for f in forms:
            e = row["forms"][f]
            ok = met(e.get(ratio), e.get("target"))
            n_targets += ok != "-"
            n_met += ok == "yes"
            cells += [cell(e, row), fratio(e.get(ratio), e.get(paired, [])),
                      ftarget(e.get("target")), ok]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out, n_met, n_targets


def render_rate_tables(table, forms):
    out = ["## Throughput: ratio to trio-epoll in the same run", ""]
    rows, n_met, n = ratio_table(table, forms, "rate")
    out += rows
    out.append("Cells: median over the repetitions used (spread = (max - min) / median). "
               "ratio = form median / trio-epoll median; in parentheses the range of the "
               "per-repetition ratios (each against trio-epoll of the same repetition). "
               "`!` = a repetition failed or loadgen counted errors (see Problems), "
               "`~` = some repetitions were disturbed by other load or steal even after retries.")
    if n:
        out.append(f"Targets met by throughput: {n_met} of {n}.")
    out += ["", "## Server CPU per request (from /proc; per MB for stream)", ""]
    rows, n_met, n = ratio_table(table, forms, "cpu")
    out += rows
    out.append("Server CPU time (user + system, from /proc/PID/stat over loadgen's window) divided by "
               "the work done: µs per request, per connection (connect) or per MB echoed (stream); "
               "median over the repetitions used. ratio = trio-epoll's cost / the form's cost, so "
               "above 1 means cheaper, comparable to the throughput ratio and to the same target. "
               "Steal and other load inflate it less than they cut req/s. In echo-c1-s64 the server "
               "is not saturated (latency-bound), so its CPU per request includes going to sleep "
               "and waking up for each request.")
    if n:
        out.append(f"Targets met by CPU cost: {n_met} of {n}.")
    out.append("")
    return out


def render_syscalls(syscalls, syscall_note, meta):
    out = ["## Syscalls per request (strace -c, echo-c64-s64)", ""]
    if syscall_note:
        out.append(syscall_note)
    elif syscalls:
        out.append("| server | syscalls/request | top 3 (per request) | requests counted |")
        out.append("|---|---|---|---|")
        for s, e in syscalls.items():
            if "error" in e:
                out.append(f"| {s} | failed: {e['error']} | | |")
                continue
            top = ", ".join(f"{n} {v:.3f}" for n, v in list(e.get("by_syscall", {}).items())[:3])
            flag = " !" if e.get("loadgen_errors") else ""
            out.append(f"| {s} | {e['per_request']:.3f}{flag} | {top} | {e['requests']:,} |"
                       if "per_request" in e else f"| {s} | - (no requests) | | |")
        out.append("")
        out.append("Each form ran twice under `strace -c -f -p PID` (loadgen windows of 1 s and "
                   f"{1 + meta.get('strace_seconds', 3):g} s, no warm-up); the counts are the "
                   "difference of the two, so connection setup and teardown cancel out. strace "
                   "slows the server, so no rates are reported from this pass.")
    else:
        out.append("Not measured (--no-strace).")
    out.append("")
    return out


def render(table, servers, notes, meta, probe, command, syscalls, syscall_note, runpy_md):
    forms = [s for s in servers if s != REFERENCE]
    m = meta.get("machine", {})
    out = ["# trio_uring vs stock Trio: echo benchmark", ""]
    out.append(f"`{command}`")
    out.append("")
    run = (f"{meta['reps']} repetitions of {meta['duration_s']} s (after {meta['warmup_s']} s "
           f"warm-up) per scenario and form, interleaved; server on CPU {meta.get('server_cpu')}, "
           f"loadgen on CPU {meta.get('client_cpu')}; run.py took {meta.get('elapsed_s', '?')} s. "
           if table else "")
    out.append(f"{meta.get('started', '?')}; {run}Linux {m.get('kernel', '?')}, "
               f"{m.get('nproc', '?')} CPUs ({m.get('cpu_model', '?')}), "
               f"Python {m.get('python', probe.get('python'))}, trio {m.get('trio', probe.get('trio'))}, "
               f"trio_uring {m.get('trio_uring', probe.get('trio_uring', '-'))}.")
    out.append("")
    for s in servers:
        out.append(f"* `{s}`: {FORMS.get(s, meta['servers'].get(s, ''))}")
    for n in notes:
        out.append(f"* **Note:** {n}")
    out.append("")

    if table:
        out += render_rate_tables(table, forms)
    out += render_syscalls(syscalls, syscall_note, meta)
    problems = []
    for row in table:
        for s, e in row["forms"].items():
            for fmsg in e["failed"]:
                problems.append(f"* {row['scenario']} / {s}: {fmsg}")
    for s, e in (syscalls or {}).items():
        for msg in e.get("loadgen_errors", []):
            problems.append(f"* strace pass / {s}: {msg}")
    if problems:
        out.append("## Problems")
        out.append("")
        out += problems
        out.append("")
    if runpy_md:
        out.append("## Details (run.py's report: latency, loadgen CPU, repetitions, errors)")
        out.append("")
        # demote run.py's headings below ours
        out.append(re.sub(r"(?m)^### ", "#### ", runpy_md).strip())
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- main

def main():
    default_py = os.path.join(REPO, ".venv", "bin", "python")
    if not os.path.exists(default_py):
        default_py = sys.executable
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-r", "--reps", type=int, default=5, help="repetitions, interleaved (5)")
    ap.add_argument("-d", "--duration", type=float, default=2.0, help="measured seconds per run (2)")
    ap.add_argument("-w", "--warmup", type=float, default=0.5, help="warm-up seconds per run (0.5)")
    ap.add_argument("-S", "--scenarios", default=",".join(DEFAULT_SCENARIOS),
                    help="comma list of run.py scenario names or MODE:c=N,s=N,p=N (default: the six "
                         "of the issue)")
    ap.add_argument("-s", "--forms", default=",".join(FORMS),
                    help="comma list of forms (default: all three; trio-epoll is always included)")
    ap.add_argument("--also", default="",
                    help="more run.py servers to run alongside, e.g. c-epoll,c-uring (builds them; "
                         "c-uring needs liburing-dev, installed with apt if missing)")
    ap.add_argument("--python", default=default_py, help=f"server interpreter ({default_py})")
    ap.add_argument("--bench-dir", default=SHARED_BENCH, help=f"shared harness ({SHARED_BENCH})")
    ap.add_argument("--retries", type=int, default=3, help="run.py: retries of a disturbed run (3)")
    ap.add_argument("--max-bg", type=float, default=0.10, help="run.py: disturbed if other load > this (0.10)")
    ap.add_argument("--max-steal", type=float, default=0.05, help="run.py: disturbed if steal > this (0.05)")
    ap.add_argument("--quiet-wait", type=float, default=10.0, help="run.py: wait for idle before a retry (10)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server/loadgen to CPUs 1/0")
    ap.add_argument("--port-base", type=int, default=23000)
    ap.add_argument("--strace-seconds", type=float, default=3.0,
                    help="extra window of the long strace run (3)")
    ap.add_argument("--no-strace", action="store_true", help="skip the syscalls/request pass")
    ap.add_argument("--strace-only", action="store_true", help="only the syscalls/request pass")
    ap.add_argument("--from-json", metavar="RUN_JSON",
                    help="no new runs: re-render the tables from a run.py JSON (e.g. results/*.run.json)")
    ap.add_argument("--out-dir", default=RESULTS, help="where results go (benchmarks/results)")
    args = ap.parse_args()
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])

    wanted = [f.strip() for f in args.forms.split(",") if f.strip()]
    for f in wanted:
        if f not in FORMS:
            sys.exit(f"compare: unknown form {f!r}; known: {', '.join(FORMS)}")
    if REFERENCE not in wanted:
        wanted.insert(0, REFERENCE)
    also = [s.strip() for s in args.also.split(",") if s.strip()]
    scenarios = split_scenarios(args.scenarios)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, stamp)
    run_json, run_md = base + ".run.json", base + ".run.md"

    probe = probe_python(args.python)
    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        servers = list(data["meta"]["servers"])
        notes = [f"re-rendered from {args.from_json}"]
        if "trio-uring-streams" not in servers:
            notes.append("trio-uring-streams was not part of that run.")
        rc, syscalls, sys_note, runpy_md = 0, None, "Not measured (re-rendered from JSON).", None
        forms = [s for s in servers if s in FORMS]
        return finish(args, command, base, data, forms, servers, notes, probe, syscalls, sys_note,
                      runpy_md, rc, run_json=args.from_json)

    forms, notes = choose_forms(probe, wanted)
    for n in notes:
        log(n)
    prepare_harness(args.bench_dir, [s for s in also if s.startswith("c-")])
    bench = load_runpy()
    for s in also:
        if s not in bench.SERVERS:
            sys.exit(f"compare: unknown run.py server {s!r} in --also")
    servers = forms + [s for s in also if s not in forms]

    n_runs = len(servers) * len(scenarios) * args.reps
    strace_s = 0 if args.no_strace else len(forms) * (4 + args.strace_seconds)
    est = n_runs * (args.duration + args.warmup + 0.3) + strace_s
    log(f"{len(servers)} servers x {len(scenarios)} scenarios x {args.reps} reps = {n_runs} runs"
        f"{'' if args.no_strace else ' + strace pass'}: about {est / 60:.1f} min on a quiet machine "
        "(retries of disturbed runs come on top)")

    rc = 0
    if args.strace_only:
        data = {"meta": {"started": datetime.datetime.now().isoformat(timespec="seconds"),
                         "duration_s": "-", "warmup_s": "-", "reps": 0, "servers": {}, "scenarios": {},
                         "machine": bench.machine_facts(args.python)}, "runs": []}
        runpy_md = None
    else:
        rc = run_suite(args, servers, scenarios, run_json, run_md)
        with open(run_json) as f:
            data = json.load(f)
        with open(run_md) as f:
            runpy_md = f.read()
        os.remove(run_md)  # included in our Markdown

    syscalls, sys_note = None, None
    if not args.no_strace:
        syscalls, sys_note = strace_pass(bench, forms, args)
    data["meta"]["strace_seconds"] = args.strace_seconds
    return finish(args, command, base, data, forms, servers, notes, probe, syscalls, sys_note,
                  runpy_md, rc, run_json=None if args.strace_only else run_json)


def split_scenarios(spec):
    """Comma list of names, where a MODE:k=v,k=v item keeps its own commas."""
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if out and re.fullmatch(r"[csp]=\d+", item) and ":" in out[-1]:
            out[-1] += "," + item
        else:
            out.append(item)
    return out


def finish(args, command, base, data, forms, servers, notes, probe, syscalls, sys_note, runpy_md, rc,
           run_json):
    table = analyze(data, servers) if data["runs"] else []
    md = render(table, servers, notes, data["meta"], probe, command, syscalls, sys_note, runpy_md)
    failed = any(e["failed"] or e["errors"] for row in table for e in row["forms"].values())
    failed |= any(e.get("loadgen_errors") or "error" in e for e in (syscalls or {}).values())
    report = {"command": command, "cwd": os.getcwd(), "notes": notes, "probe": probe,
              "forms": forms, "servers": servers, "targets": TARGETS,
              "run_json": os.path.relpath(run_json, HERE) if run_json else None,
              "meta": data["meta"], "table": table, "syscalls": syscalls, "syscalls_note": sys_note,
              "run_py_exit_status": rc}
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(md)
    print(md)
    written = [base + ".md", base + ".json"] + ([run_json] if run_json and run_json.startswith(base) else [])
    print(f"Written: {', '.join(os.path.relpath(p) for p in written)}")
    print(f"Command: {command}")
    if failed:
        log("some runs failed or loadgen counted errors: see 'Problems' in the report")
    return 1 if failed or rc else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
