"""What every benchmark script here shares: tools, processes, CPU accounting, interleaving.

* The shared harness (/work/shared/bench, read-only) is copied to benchmarks/.harness/
  (git-ignored): compare.py drives its run.py. Our C tools (loadgen.c with the window
  hooks, wsload.c, fanout_reader.c) are built there too, from benchmarks/.
* Servers run pinned to CPU 1, clients to CPU 0 (as run.py does), are started in their
  own session and stopped by their PID only.
* CPU accounting over a client's window, like loadgen's: the server's CPU from
  /proc/PID/stat, each CPU's busy and steal time from /proc/stat, and the CPU that other
  processes took (a run where they took more than --max-bg cores, or the hypervisor stole
  more than --max-steal, is "disturbed" and retried, as run.py does).
* `interleave()`: repetitions x variants with the order of variants rotated on every
  repetition, so a slow minute of a shared VM hits all variants alike.
* `Perf`: system calls counted by `perf stat` on the server's PID, switched on and off
  by the client at the edges of its measured window (a control FIFO), at full speed.
  Why perf and not strace or /proc: strace stops the server on every system call
  (ptrace), which slows it many times over and changes how much work each loop
  iteration finds; /proc has no per-process system call counter (/proc/PID/io's syscr
  and syscw count only read- and write-family VFS calls: not sendto, recvfrom or
  io_uring_enter). perf's syscall tracepoints count in the kernel without stopping
  anything. They need root or CAP_PERFMON (or kernel.perf_event_paranoid = -1).
"""

from __future__ import annotations

import contextlib
import filecmp
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HARNESS = os.path.join(HERE, ".harness")
RESULTS = os.path.join(HERE, "results")
SHARED_BENCH = os.environ.get("TRIO_URING_BENCH_DIR", "/work/shared/bench")
SERVER_CPU, CLIENT_CPU = 1, 0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Shared harness files compare.py needs (not its .venv, results or build products).
# loadgen.c is ours (benchmarks/loadgen.c), the rest is used as it is.
SHARED_FILES = ["run.py", "Makefile", "README.md", "servers/trio_echo.py", "servers/asyncio_echo.py",
                "servers/asyncio_streams_echo.py", "servers/epoll_echo.c", "servers/uring_echo.c"]
# Our C tools: source in benchmarks/, binary in .harness/
C_TOOLS = {"loadgen": "loadgen.c", "wsload": "wsload.c", "fanout_reader": "fanout_reader.c",
           "fanin_writer": "fanin_writer.c"}


def log(prog: str, msg: str) -> None:
    print(f"{prog}: {msg}", file=sys.stderr, flush=True)


def default_python() -> str:
    py = os.path.join(REPO, ".venv", "bin", "python")
    return py if os.path.exists(py) else sys.executable


def tool(name: str) -> str:
    return os.path.join(HARNESS, name)


# ---------------------------------------------------------------- preparation

def prepare(shared: str = SHARED_BENCH, c_servers: tuple[str, ...] = (), tools: tuple[str, ...] = ("loadgen",)
            ) -> None:
    """Refresh .harness from the shared harness, then build our C tools that are asked
    for (and the shared C servers). Files are copied only when they differ."""
    if not os.path.exists(os.path.join(shared, "run.py")):
        sys.exit(f"no shared harness at {shared} (set TRIO_URING_BENCH_DIR or --bench-dir)")
    for rel in SHARED_FILES:
        s, d = os.path.join(shared, rel), os.path.join(HARNESS, rel)
        if os.path.exists(s):
            _copy_if_changed(s, d, 0o755 if rel == "run.py" else 0o644)
    for binary in tools:
        _build(os.path.join(HERE, C_TOOLS[binary]), tool(binary))
    if c_servers:
        targets = ["servers/epoll_echo"]
        if "c-uring" in c_servers:
            if not os.path.exists("/usr/include/liburing.h"):
                apt_install("liburing-dev")
            targets.append("servers/uring_echo")
        r = subprocess.run(["make", "-s", "-C", HARNESS, *targets], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"building the shared C servers failed:\n{r.stdout}{r.stderr}")


def _copy_if_changed(src: str, dst: str, mode: int) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not (os.path.exists(dst) and filecmp.cmp(src, dst, shallow=False)):
        shutil.copy2(src, dst)
        os.chmod(dst, mode)


def _build(src: str, out: str) -> None:
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return
    os.makedirs(os.path.dirname(out), exist_ok=True)
    r = subprocess.run(["gcc", "-O2", "-g", "-Wall", "-Wextra", "-o", out, src], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"building {os.path.relpath(src, REPO)} failed:\n{r.stderr}")


def apt_install(pkg: str) -> None:
    log("harness", f"apt-get install {pkg}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=False)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", pkg], env=env, stdout=subprocess.DEVNULL, check=False)


def load_runpy() -> Any:
    """The shared harness's run.py as a module (its registry, port helpers, stop())."""
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(HARNESS, "run.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    try:
        trio_uring.check_available()
        out["uring_available"] = True
    except Exception as e:
        out["uring_available"] = False
        out["uring_error"] = str(e)
except Exception as e:
    out["trio_uring_error"] = repr(e)
try:
    import subprocess
    here = __import__("os").path.dirname(out.get("trio_uring_path", "."))
    out["commit"] = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                                   text=True).stdout.strip() or None
except Exception:
    pass
print(json.dumps(out))
"""


def probe_python(python: str) -> dict[str, Any]:
    """What the server interpreter has: trio, trio_uring, io_uring, the commit."""
    r = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    except (IndexError, ValueError):
        sys.exit(f"cannot run {python}: {r.stderr.strip()}")


def usable_forms(probe: dict[str, Any], wanted: list[str], uses_uring: Callable[[str], bool]) -> tuple[
        list[str], list[str]]:
    """The forms this interpreter can run, and a note for each one left out."""
    if "trio_error" in probe:
        sys.exit(f"trio cannot be imported by the server interpreter: {probe['trio_error']}")
    forms, notes = [], []
    for f in wanted:
        if uses_uring(f) and "trio_uring_error" in probe:
            notes.append(f"{f} skipped: trio_uring cannot be imported ({probe['trio_uring_error']}).")
        elif uses_uring(f) and not probe.get("uring_available"):
            notes.append(f"{f} skipped: io_uring is unavailable here ({probe.get('uring_error')}).")
        else:
            forms.append(f)
    return forms, notes


# ---------------------------------------------------------------- processes

def pinned(argv: list[str], cpu: int | None) -> list[str]:
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


class Server:
    """A server process: started pinned, in its own session, output to a temp file,
    stopped by its PID (SIGTERM, then SIGKILL after 3 s)."""

    def __init__(self, argv: list[str], cpu: int | None = SERVER_CPU, env: dict[str, str] | None = None,
                 cwd: str = HERE) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(pinned(argv, cpu), cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env=dict(os.environ, **(env or {})))
        self.pid = self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_listening(self, port: int, listening: Callable[[int], bool], timeout: float = 15.0) -> None:
        t_end = time.monotonic() + timeout
        while not listening(port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()[-600:].strip()}")
            if time.monotonic() > t_end:
                raise RuntimeError(f"server did not listen within {timeout:g} s: {self.output()[-600:].strip()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def run_client(argv: list[str], timeout: float, cpu: int | None = CLIENT_CPU) -> tuple[int, str, str, float]:
    """Run a client to the end: (exit status, stdout, stderr, its CPU seconds)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(pinned(argv, cpu), stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        t_end = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > t_end:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.01)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (p.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                ru.ru_utime + ru.ru_stime)


def proc_cpu_s(pid: int) -> float | None:
    """user + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, from /proc/PID/status."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _per_cpu() -> list[tuple[int, int, int]]:
    """(busy, steal, total) jiffies per CPU, from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:9]]
                out.append((v[0] + v[1] + v[2] + v[5] + v[6], v[7], sum(v)))
    return out


class CpuWindow:
    """CPU accounting over a client's run, for clients that do not do it themselves
    (wrk): the server's cores used, each CPU's busy and steal share, and the cores
    other processes used (run.py's bg_cpu)."""

    def __init__(self, runpy: Any, server_pid: int) -> None:
        self.runpy, self.server_pid = runpy, server_pid

    def start(self) -> None:
        self.t0, self.srv0, self.cpus0 = time.monotonic(), proc_cpu_s(self.server_pid), _per_cpu()
        self.other0 = self.runpy.other_cpu_ticks({os.getpid(), self.server_pid})

    def stop(self, exclude: set[int]) -> dict[str, Any]:
        dt = time.monotonic() - self.t0
        srv1, cpus1 = proc_cpu_s(self.server_pid), _per_cpu()
        other = self.runpy.other_cpu_ticks({os.getpid(), self.server_pid, *exclude})
        # processes that started during the window (the client itself is excluded by pid)
        bg = self.runpy.bg_cpu(self.other0, other, dt)
        pairs = list(zip(self.cpus0, cpus1, strict=False))
        busy = [(b1 - b0) / (t1 - t0) if t1 > t0 else 0.0 for (b0, _, t0), (b1, _, t1) in pairs]
        steal = [(s1 - s0) / (t1 - t0) if t1 > t0 else 0.0 for (_, s0, t0), (_, s1, t1) in pairs]
        srv = (srv1 - self.srv0) / dt if srv1 is not None and self.srv0 is not None and dt > 0 else None
        return {"wall_s": dt, "server_cpu": srv, "cpu_busy": busy, "cpu_steal": steal, "bg_cpu": round(bg, 3)}


# ---------------------------------------------------------------- perf

class Perf:
    """`perf stat` counting the system calls of one process, enabled only while a
    client holds the window open: the client writes "enable" / "disable" to
    self.fifo (loadgen --perf-ctl, wsload and fanout_reader the same).

    Counted: every system call (raw_syscalls:sys_enter, "total") and, one by one, those
    a network server makes. Not every syscalls:sys_enter_* tracepoint: perf takes about
    50 ms per tracepoint to detach, so all ~350 of them made each stop last 20 s."""

    SYSCALLS = ("io_uring_enter", "recvfrom", "sendto", "recvmsg", "sendmsg", "read", "write", "epoll_wait",
                "epoll_ctl", "accept4", "close", "shutdown", "setsockopt", "getsockopt", "getsockname", "fcntl",
                "futex", "rt_sigreturn", "mmap", "munmap", "madvise", "brk")

    def __init__(self, pid: int, cpu: int | None = CLIENT_CPU) -> None:
        os.makedirs(os.path.join(HARNESS, "tmp"), exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="perf-", dir=os.path.join(HARNESS, "tmp"))
        self.fifo, self.out = os.path.join(self.dir, "ctl"), os.path.join(self.dir, "counts.csv")
        os.mkfifo(self.fifo)
        self.err = open(os.path.join(self.dir, "stderr"), "w+")  # noqa: SIM115  (closed in stop)
        events = ",".join(["raw_syscalls:sys_enter", *(f"syscalls:sys_enter_{s}" for s in self.SYSCALLS)])
        self.proc = subprocess.Popen(
            pinned(["perf", "stat", "-x", ",", "-o", self.out, "-e", events, "-D", "-1",
                    "--control", f"fifo:{self.fifo}", "-p", str(pid)], cpu),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)
        # attached (it says so) before any client may open the window
        t_end = time.monotonic() + 15
        while "disabled" not in self._stderr():
            if self.proc.poll() is not None or time.monotonic() > t_end:
                why = self._stderr()[-300:]
                self.close()
                raise RuntimeError("perf did not start: " + why)
            time.sleep(0.01)

    def _stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def stop(self) -> dict[str, int]:
        """Stop perf and return {syscall: count} over the enabled window(s); "total" is
        raw_syscalls:sys_enter (every system call, also those without a tracepoint)."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # perf prints the counts and exits
                self.proc.wait(timeout=30)
            counts: dict[str, int] = {}
            with open(self.out) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) < 3 or not parts[0].isdigit():
                        continue
                    name = parts[2]
                    if name == "raw_syscalls:sys_enter":
                        counts["total"] = int(parts[0])
                    elif name.startswith("syscalls:sys_enter_") and int(parts[0]):
                        counts[name.removeprefix("syscalls:sys_enter_")] = int(parts[0])
            if "total" not in counts:
                raise RuntimeError("perf counted nothing: " + self._stderr().strip()[-300:])
            counts["other"] = counts["total"] - sum(v for k, v in counts.items() if k != "total")
            return counts
        finally:
            self.close()

    def close(self) -> None:
        """Stop perf without reading the counts (after an error); idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.err.closed:
            self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def perf_usable() -> str | None:
    """None if perf can count syscall tracepoints of our own processes here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed (apt-get install linux-perf)"
    r = subprocess.run(["perf", "stat", "-x", ",", "-e", "syscalls:sys_enter_getpid", "true"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode or "not supported" in r.stderr or "<not" in r.stderr:
        return "perf cannot count syscall tracepoints here: " + r.stderr.strip()[-200:]
    return None


# ---------------------------------------------------------------- interleaving

def add_noise_args(ap: Any) -> None:
    """run.py's handling of disturbed runs, same options and defaults."""
    ap.add_argument("--retries", type=int, default=3, help="extra attempts for a disturbed run (3)")
    ap.add_argument("--max-bg", type=float, default=0.10, help="disturbed if other processes used more cores (0.10)")
    ap.add_argument("--max-steal", type=float, default=0.05, help="disturbed if the hypervisor stole more (0.05)")
    ap.add_argument("--quiet-wait", type=float, default=10.0, help="wait up to this long for quiet before a retry")


def disturbance(rec: dict[str, Any], args: Any) -> str:
    """Why a run's numbers are not a clean measurement ('' if they are); run.py's rule."""
    why = []
    res = rec.get("result")
    if rec.get("bg_cpu", 0) > args.max_bg:
        why.append(f"other processes {rec['bg_cpu']:.2f} cores")
    if res and res.get("cpu_busy"):
        other = sum(res["cpu_busy"]) - (res.get("client_cpu") or 0) - (res.get("server_cpu") or 0)
        steal = sum(res.get("cpu_steal", []))
        rec["other_cpu"], rec["steal"] = round(max(other, 0.0), 3), round(steal, 3)
        if other > args.max_bg and rec.get("bg_cpu", 0) <= args.max_bg:
            why.append(f"unattributed CPU {other:.2f} cores")
        if steal > args.max_steal:
            why.append(f"steal {steal:.2f} cores")
    return "; ".join(why)


def interleave(prog: str, runpy: Any, variants: list[str], scenarios: list[str], reps: int,
               run_once: Callable[[str, str, int], dict[str, Any]], args: Any,
               describe: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
    """For each repetition, each scenario, every variant (order rotated on each
    repetition): run_once(scenario, variant, port) -> {"result": {...}} or {"error": ...}.
    Disturbed runs are retried up to args.retries times; the last attempt is kept
    either way. Every attempt is returned, the kept ones with used=True."""
    picker = runpy.PortPicker(args.port_base)
    runs: list[dict[str, Any]] = []
    total, k = reps * len(scenarios) * len(variants), 0
    for rep in range(reps):
        for scen in scenarios:
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for v in order:
                k += 1
                for attempt in range(args.retries + 1):
                    try:
                        rec = run_once(scen, v, picker.next())
                    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                        rec = {"error": str(e)}
                    rec.update(scenario=scen, variant=v, rep=rep, attempt=attempt)
                    rec["disturbed"] = disturbance(rec, args)
                    runs.append(rec)
                    msg = describe(rec) if "result" in rec else "-"
                    if rec.get("error"):
                        msg += f"  ERROR: {rec['error']}"
                    if rec["disturbed"]:
                        msg += f"  (disturbed: {rec['disturbed']}" + ("; retrying)" if attempt < args.retries else ")")
                    log(prog, f"[{k}/{total}] rep {rep + 1} {scen} {v}: {msg}")
                    if not rec["disturbed"] or attempt == args.retries:
                        rec["used"] = True
                        break
                    runpy.wait_quiet(args.max_bg, args.max_steal, args.quiet_wait)
    return runs


# ---------------------------------------------------------------- summaries

def median(xs: list[float | None]) -> float | None:
    ys = [x for x in xs if x is not None]
    return statistics.median(ys) if ys else None


def spread(xs: list[float]) -> float | None:
    m = median(list(xs))
    return (max(xs) - min(xs)) / m if xs and m else None


def selected(runs: list[dict[str, Any]], scen: str, variant: str, key: str = "variant") -> tuple[
        list[dict[str, Any]], list[dict[str, Any]]]:
    """(every kept repetition, the ones the median is over): kept attempts with a
    result, the clean ones only if at least two are clean (run.py's rule)."""
    rs = [r for r in runs if r["scenario"] == scen and r[key] == variant and r.get("used")]
    ok = [r for r in rs if "result" in r]
    clean = [r for r in ok if not r["disturbed"]]
    return rs, (clean if len(clean) >= 2 else ok)


def summarize(runs: list[dict[str, Any]], scenarios: list[str], variants: list[str], reference: str,
              metrics: dict[str, Callable[[dict[str, Any]], float | None]], ratio_of: dict[str, str],
              key: str = "variant") -> list[dict[str, Any]]:
    """Per scenario and variant: the median of each metric over the repetitions used
    and its spread ((max - min) / median); for each metric in ratio_of, the ratio to the
    reference, oriented so that above 1 is better ("higher": value / reference's, e.g. a
    rate; "lower": reference's / value, e.g. CPU per request): the ratio of medians
    (NAME_ratio) and the per-repetition ratios (NAME_paired, each against the reference
    of the same repetition, which ran seconds apart)."""
    table = []
    for scen in scenarios:
        row: dict[str, Any] = {"scenario": scen, "forms": {}}
        by_rep: dict[str, dict[int, dict[str, Any]]] = {}
        for v in variants:
            rs, ok = selected(runs, scen, v, key)
            e: dict[str, Any] = {"reps": len(rs), "median_of": len(ok),
                                 "disturbed": sum(1 for r in rs if r.get("disturbed")),
                                 "errors": sum((r["result"].get("errors") or {}).get("total", 0)
                                               for r in rs if "result" in r),
                                 "failed": [f"rep {r['rep'] + 1}: {r['error']}" for r in rs if r.get("error")]}
            for name, fn in metrics.items():
                vals = [x for x in (fn(r["result"]) for r in ok) if x is not None]
                e[name], e[name + "_values"], e[name + "_spread"] = median(vals), vals, spread(vals)
            by_rep[v] = {r["rep"]: r for r in ok}
            row["forms"][v] = e
        ref = row["forms"].get(reference)
        for v, e in row["forms"].items():
            if v == reference or not ref:
                continue
            for name, better in ratio_of.items():
                fn = metrics[name]

                def oriented(a: float | None, b: float | None, better: str = better) -> float | None:
                    if not a or not b:
                        return None
                    return a / b if better == "higher" else b / a

                e[name + "_ratio"] = oriented(e[name], ref[name])
                e[name + "_paired"] = [x for x in (
                    oriented(fn(r["result"]), fn(by_rep[reference][rep]["result"]))
                    for rep, r in by_rep[v].items() if rep in by_rep[reference]) if x is not None]
        table.append(row)
    return table


def fratio(x: float | None, paired: list[float] | None = None) -> str:
    if x is None:
        return "-"
    s = f"**{x:.2f}**"
    if paired and len(paired) > 1:
        s += f" ({min(paired):.2f}–{max(paired):.2f})"
    return s


def fnum(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.{digits}f}"


def fpct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def flags(e: dict[str, Any]) -> str:
    f = ""
    if e.get("errors") or e.get("failed"):
        f += " !"
    if e.get("disturbed"):
        f += " ~"
    return f


def outputs(out_dir: str, name: str) -> str:
    """The base path of this call's output files: out_dir/YYYYmmdd-HHMMSS-name."""
    os.makedirs(out_dir, exist_ok=True)
    return os.path.join(out_dir, time.strftime("%Y%m%d-%H%M%S") + ("-" + name if name else ""))


def write_report(base: str, md: str, data: dict[str, Any]) -> list[str]:
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(md)
    return [base + ".md", base + ".json"]


@contextlib.contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the script like Ctrl-C does, so servers are stopped in finally blocks."""
    old = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
