"""``demo``: the same Trio echo server on Trio's epoll and on io_uring, side by side.

Each form runs in its own server process (`trio_uring._cli.echo_server`), driven by a
small C client (demo_client.c, compiled once into the user's cache directory) on the
other CPU; a Python client stands in when there is no C compiler.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import trio

import trio_uring

from .echo_server import FORMS

__all__ = ["client_cache_dir", "demo", "demo_client"]

_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo_client.c")


def client_cache_dir() -> str:
    """Where the compiled demo client is kept: ``$XDG_CACHE_HOME/trio_uring`` (or
    ``~/.cache/trio_uring``)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "trio_uring")


def demo_client() -> str | None:
    """The compiled demo_client.c, built once per version of the source; None if
    there is no C compiler. Builds for other versions of the source are removed, so
    the cache holds one file."""
    with open(_SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = client_cache_dir()
    binary = os.path.join(cache, f"demo_client-{digest}")
    if not os.path.exists(binary):
        print(f"Compiling the demo's C client into {cache}/ (once) ...", flush=True)
        try:
            os.makedirs(cache, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix="demo_client-", suffix=".tmp", dir=cache)
            os.close(fd)
            try:
                subprocess.run(["gcc", "-O2", "-o", tmp, _SOURCE], check=True, capture_output=True, timeout=60)
                os.replace(tmp, binary)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        except (OSError, subprocess.SubprocessError):
            return None
    for stale in glob.glob(os.path.join(cache, "demo_client-*")):
        if stale != binary and not stale.endswith(".tmp"):  # (a .tmp may be another demo's build)
            with contextlib.suppress(OSError):
                os.unlink(stale)
    return binary


async def _py_client(port: int, conns: int, seconds: float, size: int) -> tuple[int, int]:
    # Used only when no C compiler is around: a Python client is about as slow as
    # the server it measures.
    done = 0
    errors = 0
    payload = bytes(range(256)) * (size // 256 + 2)

    async def one(i: int) -> None:
        nonlocal done, errors
        msg = payload[i % 256 : i % 256 + size]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            while True:
                await stream.send_all(msg)
                got = b""
                while len(got) < size:
                    chunk = await stream.receive_some(size - len(got))
                    if not chunk:
                        raise trio.BrokenResourceError("server closed")
                    got += chunk
                if got != msg:
                    errors += 1
                done += 1

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for i in range(conns):
                nursery.start_soon(one, i)
    return done, errors


def _pin(pid: int, cpu: int) -> None:
    # Server and client on different CPUs, so they don't take turns on one.
    with contextlib.suppress(OSError):
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(pid, {cpu})


@contextlib.contextmanager
def _child(argv: list[str], *, stdin: int | None = None, stdout: int | None = None) -> Iterator[subprocess.Popen[str]]:
    """A child process in its own session (a terminal's Ctrl-C reaches only the demo,
    which stops the child here), gone when the block ends."""
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, text=True, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one_run(form: str, client: str | None, conns: int, seconds: float, size: int) -> tuple[float, float, int]:
    """(round trips per second, server CPU µs per round trip, errors)."""
    with tempfile.TemporaryDirectory(prefix="trio_uring_demo_") as tmp:
        port_file = os.path.join(tmp, "port")
        server_argv = [sys.executable, "-m", "trio_uring._cli.echo_server", form, port_file]
        with _child(server_argv, stdin=subprocess.PIPE) as server:  # it exits when its stdin closes
            _pin(server.pid, 1)
            deadline = time.monotonic() + 10
            while not os.path.exists(port_file):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"demo: the {form} echo server did not start")
                time.sleep(0.02)
            with open(port_file) as f:
                port = int(f.read())
            cpu_before = _cpu_seconds(server.pid)
            if client is None:
                done, errors = trio.run(_py_client, port, conns, seconds, size)
            else:
                argv = [client, str(port), str(conns), str(size), str(seconds)]
                with _child(argv, stdout=subprocess.PIPE) as proc:
                    _pin(proc.pid, 0)
                    out, _ = proc.communicate(timeout=seconds + 30)
                try:
                    done, errors = (int(x) for x in out.split())
                except ValueError:
                    raise SystemExit(f"demo: the C client failed (exit status {proc.returncode})") from None
            cpu = _cpu_seconds(server.pid) - cpu_before
    return done / seconds, cpu / max(done, 1) * 1e6, errors


def demo(conns: int, seconds: float, reps: int, size: int = 64) -> bool:
    """Run the echo comparison and print its table. False if io_uring is unavailable."""
    try:
        trio_uring.check_available()
    except trio_uring.UringUnavailableError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return False
    client = demo_client()
    kind = "a C client (demo_client.c)" if client else "a Python client (no C compiler found)"
    rounds = f"{reps} round{'s' if reps > 1 else ''}"
    print(
        f"\nEcho over loopback, {conns} connections, {size}-byte messages: the same unchanged Trio server "
        f"(trio.serve_tcp)\non epoll and on io_uring, driven by {kind}. {rounds} of {seconds:g} s per form, "
        "interleaved;\nthe median is shown.",
        flush=True,
    )
    rates: dict[str, list[float]] = {form: [] for form in FORMS}
    cpus: dict[str, list[float]] = {form: [] for form in FORMS}
    errors = dict.fromkeys(FORMS, 0)
    for rep in range(reps):
        for form in FORMS:
            rate, cpu, errs = _one_run(form, client, conns, seconds, size)
            rates[form].append(rate)
            cpus[form].append(cpu)
            errors[form] += errs
            print(
                f"  round {rep + 1}/{reps}  {form:<9} {rate:>10,.0f} round trips/s  {cpu:6.1f} µs server CPU each",
                flush=True,
            )
    median = {form: statistics.median(values) for form, values in rates.items()}
    cpu_median = {form: statistics.median(values) for form, values in cpus.items()}
    base, base_cpu = median["epoll"] or 1.0, cpu_median["epoll"]
    print()
    header = ("server", "round trips/s", "vs epoll", "server CPU/trip", "vs epoll", "errors")
    print("  {:<30} {:>14} {:>9} {:>16} {:>9} {:>7}".format(*header))
    for form, label in FORMS.items():
        print(
            f"  {label:<30} {median[form]:>14,.0f} {median[form] / base:>8.2f}x "
            f"{cpu_median[form]:>13.1f} µs {base_cpu / (cpu_median[form] or 1):>8.2f}x {errors[form]:>7}"
        )
    ratios = [u / e for u, e in zip(rates["io_uring"], rates["epoll"]) if e]  # noqa: B905
    print(
        "\nHow to read it: the round trips/s of a shared or virtual machine move by 10-30% from one\n"
        "second to the next (other work, and the hypervisor, take the CPU); the server's CPU time per\n"
        "round trip moves much less, so trust its ratio more. The rounds' own ratios went from\n"
        f"{min(ratios):.2f} to {max(ratios):.2f}; if they straddle 1.0, run more rounds (-r 5) or a longer\n"
        "window (-d 5), with nothing else running. benchmarks/compare.py measures properly."
    )
    return True
