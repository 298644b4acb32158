"""``python -m trio_uring`` (also installed as ``trio-uring``): check, demo, run.

    python -m trio_uring            check this machine, then the echo comparison
    python -m trio_uring check      is io_uring usable here, and if not, why not
    python -m trio_uring demo [-c CONNS] [-d SECONDS]
                                    the same Trio echo server (trio.serve_tcp +
                                    SocketStream) on Trio's epoll and on io_uring,
                                    driven by the same client
    python -m trio_uring run [--fallback] script.py [args...]
    python -m trio_uring run [--fallback] -m module [args...]
                                    run a program on io_uring without changing it
                                    (like ``python -m cProfile``): trio_uring.install(),
                                    then the target runs as ``__main__``

The environment variable ``TRIO_URING=1`` does what ``run --fallback`` does for every
Python process of the installation (a ``.pth`` file that setup.py ships; see
docs/source/cli.rst).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import re
import runpy
import subprocess
import sys
import textwrap
import time
from functools import partial
from typing import Any

import trio

import trio_uring
from trio_uring import _ring
from trio_uring._restrict import current_state
from trio_uring._ring import (
    FEAT_CQE_SKIP,
    REQUIRED_FEATURES,
    SETUP_CLAMP,
    SETUP_SUBMIT_ALL,
    Opcode,
    Ring,
    _read_text,
    _seccomp_mode,
)

#: The Linux release trio_uring is built and tested for.
KERNEL_FLOOR = (6, 1)

#: The opcodes trio_uring submits: what for, and the first Linux that has them.
USED_OPCODES: dict[Opcode, tuple[str, str]] = {
    Opcode.POLL_ADD: ("wait_readable / wait_writable", "5.1"),
    Opcode.ASYNC_CANCEL: ("cancellation, notify_closing, end of run", "5.5"),
    Opcode.READ: ("force_wakeup (eventfd)", "5.6"),
    Opcode.SOCKET: ("socket()", "5.19"),
    Opcode.CONNECT: ("connect()", "5.5"),
    Opcode.ACCEPT: ("accept() (multishot)", "5.5"),
    Opcode.SEND: ("send()", "5.6"),
    Opcode.SENDMSG: ("sendto(), sendmsg()", "5.3"),
    Opcode.RECV: ("recv(), recv_into()", "5.6"),
    Opcode.RECVMSG: ("recvfrom(), recvmsg() and their _into forms", "5.3"),
}

#: Variants of those ops that the opcode probe cannot see: judged by kernel version.
USED_FLAGS: dict[str, tuple[str, tuple[int, int]]] = {
    "multishot ACCEPT": ("a listener's accept queue", (5, 19)),
    "multishot POLL_ADD": ("wait_writable after a peer's shutdown", (5, 13)),
    "ASYNC_CANCEL_ANY": ("cancelling what is left when a run ends", (5, 19)),
}
if hasattr(_ring, "BufferRing"):  # receives that wait take a kernel-chosen buffer
    USED_FLAGS["PBUF_RING"] = ("recv() waits without a buffer of its own", (5, 19))

#: Things the backend uses when the kernel has them, and does without otherwise.
OPTIONAL_FEATURES: dict[str, tuple[str, str]] = {
    "CQE_SKIP": ("successful cancels post no CQE", "5.17"),
    "SUBMIT_ALL": ("a bad SQE does not strand the SQEs behind it", "5.18"),
}
_COOP_TASKRUN = getattr(_ring, "SETUP_COOP_TASKRUN", None)
if _COOP_TASKRUN is not None:  # plain (non-guest) runs ask for it
    OPTIONAL_FEATURES["COOP_TASKRUN"] = ("completions are processed when the loop enters the kernel", "5.19")

_SETUP_FLAG_NAMES = {
    1 << 0: "IOPOLL",
    1 << 1: "SQPOLL",
    1 << 2: "SQ_AFF",
    1 << 3: "CQSIZE",
    SETUP_CLAMP: "CLAMP",
    1 << 5: "ATTACH_WQ",
    1 << 6: "R_DISABLED",
    SETUP_SUBMIT_ALL: "SUBMIT_ALL",
    1 << 8: "COOP_TASKRUN",
    1 << 9: "TASKRUN_FLAG",
    1 << 10: "SQE128",
    1 << 11: "CQE32",
    1 << 12: "SINGLE_ISSUER",
    1 << 13: "DEFER_TASKRUN",
}

_DISABLED_MEANING = {
    "0": "io_uring allowed",
    "1": "only CAP_SYS_ADMIN or kernel.io_uring_group may use io_uring",
    "2": "io_uring disabled for everyone",
}


def kernel_version(release: str | None = None) -> tuple[int, int] | None:
    """(major, minor) of ``platform.release()``, or None if it does not parse."""
    match = re.match(r"(\d+)\.(\d+)", release if release is not None else platform.release())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


# ---------------------------------------------------------------- check


def _open_ring() -> Ring:
    """A small ring, set up as a plain run's ring is."""
    if _COOP_TASKRUN is not None:
        try:
            return Ring(8, 16, coop_taskrun=True)
        except TypeError:
            pass
    return Ring(8, 16)


def check() -> bool:
    """Print what this machine allows and what trio_uring needs. True if io_uring works."""
    kernel = kernel_version()
    floor = ".".join(map(str, KERNEL_FLOOR))
    verdict = "unknown" if kernel is None else ("ok" if kernel >= KERNEL_FLOOR else "TOO OLD")
    print(f"trio_uring {trio_uring.__version__}, Trio {trio.__version__}, Python {platform.python_version()}")
    print(f"kernel:              Linux {platform.release()} ({platform.machine()}); needs >= {floor}: {verdict}")
    disabled = _read_text("/proc/sys/kernel/io_uring_disabled")
    if disabled is None:
        print("io_uring_disabled:   n/a (no such sysctl: Linux < 6.6)")
    else:
        print(f"io_uring_disabled:   {disabled} ({_DISABLED_MEANING.get(disabled, 'unknown value')})")
    mode = _seccomp_mode()
    seccomp_modes = {"0": "none", "1": "strict", "2": "filter (a container's profile, or systemd's)"}
    seccomp = seccomp_modes.get(mode or "", "unknown")
    print(f"seccomp:             {seccomp}")
    try:
        ring = _open_ring()
    except trio_uring.UringUnavailableError as exc:
        print("io_uring:            UNAVAILABLE")
        for line in textwrap.wrap(str(exc), width=88):
            print(f"  {line}")
        return False
    try:
        flags = [name for bit, name in _SETUP_FLAG_NAMES.items() if ring.setup_flags & bit]
        print(
            f"io_uring:            available (ring fd {ring.fd}, "
            f"setup flags {ring.setup_flags:#x}: {' | '.join(flags)})"
        )
        print()
        print(f"  {'feature':<22} {'since':<6} {'here':<5} use")
        for name, (bit, since) in REQUIRED_FEATURES.items():
            print(f"  {name:<22} {since:<6} {_yes(bool(ring.features & bit)):<5} required")
        optional = {
            "CQE_SKIP": bool(ring.features & FEAT_CQE_SKIP),
            "SUBMIT_ALL": bool(ring.setup_flags & SETUP_SUBMIT_ALL),
            "COOP_TASKRUN": bool(ring.setup_flags & (_COOP_TASKRUN or 0)),
        }
        for name, (use, since) in OPTIONAL_FEATURES.items():
            print(f"  {name:<22} {since:<6} {_yes(optional[name]):<5} optional: {use}")
        print()
        print(f"  {'opcode':<22} {'since':<6} {'here':<5} used for")
        supported = ring.probe()
        for op, (use, since) in USED_OPCODES.items():
            print(f"  {'IORING_OP_' + op.name:<22} {since:<6} {_yes(op in supported):<5} {use}")
        for name, (use, since_v) in USED_FLAGS.items():
            here = "?" if kernel is None else _yes(kernel >= since_v)
            print(f"  {name:<22} {'.'.join(map(str, since_v)):<6} {here:<5} {use} (by kernel version)")
    finally:
        ring.close()
    # The ring a run would get: restricted to what trio_uring uses (trio_uring/_restrict.py)?
    restrictions = current_state(trio_uring.UringIOManager.restrict)
    print()
    for i, line in enumerate(textwrap.wrap(restrictions.describe(), width=80)):
        print(f"{'restrictions:' if i == 0 else '':<21}{line}")
    return True


# ---------------------------------------------------------------- demo


# The same echo handler, served three ways: Trio on epoll, the drop-in (unchanged
# trio.serve_tcp on the io_uring backend), and trio_uring's own streams.
FORMS = {
    "epoll": "trio.serve_tcp on Trio's epoll",
    "io_uring": "trio.serve_tcp on io_uring (drop-in)",
    "streams": "trio_uring.serve_tcp on io_uring",
}


async def _serve(port_file: str, serve_tcp: Any) -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_tcp, handler, 0, host="127.0.0.1"))
        with open(port_file + ".tmp", "w") as f:
            f.write(str(listeners[0].socket.getsockname()[1]))
        os.replace(port_file + ".tmp", port_file)


def echo_server_main(form: str, port_file: str) -> None:
    try:
        if form == "epoll":
            trio.run(_serve, port_file, trio.serve_tcp)
        elif form == "streams":
            trio_uring.run(_serve, port_file, trio_uring.serve_tcp)
        else:
            trio_uring.run(_serve, port_file, trio.serve_tcp)
    except KeyboardInterrupt:
        pass


def _c_client() -> str | None:
    """Build demo_client.c (once, cached); None if there is no C compiler."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_client.c")
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "trio_uring")
    binary = os.path.join(cache, f"demo_client-{int(os.path.getmtime(source))}")
    if os.path.exists(binary):
        return binary
    try:
        os.makedirs(cache, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-o", binary + ".tmp", source], check=True, capture_output=True, timeout=60
        )
        os.replace(binary + ".tmp", binary)
    except (OSError, subprocess.SubprocessError):
        return None
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


def _one_run(form: str, client: str | None, conns: int, seconds: float, size: int) -> tuple[float, int]:
    port_file = f"/tmp/trio_uring_demo_{os.getpid()}_{form}"
    server = subprocess.Popen([sys.executable, "-m", "trio_uring", "_echo-server", form, port_file])
    _pin(server.pid, 1)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the {form} echo server did not start")
            time.sleep(0.02)
        with open(port_file) as f:
            port = int(f.read())
        if client is not None:
            proc = subprocess.Popen(
                [client, str(port), str(conns), str(size), str(seconds)], stdout=subprocess.PIPE, text=True
            )
            _pin(proc.pid, 0)
            out, _ = proc.communicate(timeout=seconds + 30)
            done, errors = (int(x) for x in out.split())
        else:
            done, errors = trio.run(_py_client, port, conns, seconds, size)
    finally:
        server.terminate()
        server.wait()
        if os.path.exists(port_file):
            os.unlink(port_file)
    return done / seconds, errors


def demo(conns: int, seconds: float, size: int = 64, reps: int = 3) -> bool:
    """Run the echo comparison and print its table. False if io_uring is unavailable."""
    try:
        trio_uring.check_available()
    except trio_uring.UringUnavailableError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return False
    client = _c_client()
    kind = "a C client (demo_client.c)" if client else "a Python client (no C compiler found)"
    print(
        f"\nEcho over loopback, {conns} connections, {size}-byte messages: the same Trio handler "
        f"served three ways,\ndriven by {kind}. {reps} rounds of {seconds:g} s per form, interleaved; "
        "the median is shown.\nThe machine may be shared and noisy: benchmarks/compare.py measures "
        "properly."
    )
    rates: dict[str, list[float]] = {form: [] for form in FORMS}
    errors = dict.fromkeys(FORMS, 0)
    for rep in range(reps):
        for form in FORMS:
            rate, errs = _one_run(form, client, conns, seconds, size)
            rates[form].append(rate)
            errors[form] += errs
            print(f"  round {rep + 1}/{reps}  {form:<9} {rate:>10,.0f} round trips/s")
    median = {form: sorted(values)[len(values) // 2] for form, values in rates.items()}
    base = median["epoll"] or 1.0
    print()
    print(f"  {'server':<38} {'round trips/s':>14} {'vs epoll':>9} {'errors':>7}")
    for form, label in FORMS.items():
        print(f"  {label:<38} {median[form]:>14,.0f} {median[form] / base:>8.2f}x {errors[form]:>7}")
    return True


# ---------------------------------------------------------------- run

RUN_USAGE = """\
usage: {prog} run [--fallback] script.py [args...]
       {prog} run [--fallback] -m module [args...]

Run a Python program with trio_uring.install() in effect, so every trio.run in it
(and anyio, pytest-trio, servers) uses io_uring without a code change. The target
runs as __main__, with sys.argv set to [script or module path, args...].

  --fallback   if io_uring is unavailable, warn and run on Trio's epoll backend
               (default: print why and exit with status 1)
"""


def run_program(argv: list[str], prog: str) -> int:
    """``run [--fallback] (script.py | -m module) [args...]``: returns an exit status
    (the target's own ``SystemExit`` and exceptions pass through)."""
    fallback = False
    module: str | None = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg == "--fallback":
            fallback = True
            i += 1
        elif arg in ("-h", "--help"):
            print(RUN_USAGE.format(prog=prog), end="")
            return 0
        elif arg.startswith("-m"):
            if arg == "-m":
                if i + 1 >= len(argv):
                    break
                module, i = argv[i + 1], i + 2
            else:
                module, i = arg[2:], i + 1
            break
        elif arg == "--":
            i += 1
            break
        else:
            print(f"{prog} run: unknown option {arg}\n" + RUN_USAGE.format(prog=prog), file=sys.stderr, end="")
            return 2
    rest = argv[i:]
    if module is None and not rest:
        print(f"{prog} run: nothing to run\n" + RUN_USAGE.format(prog=prog), file=sys.stderr, end="")
        return 2

    if module is None:
        script = rest[0]
        if not os.path.isfile(script):
            print(f"{prog} run: can't open file {script!r}: no such file", file=sys.stderr)
            return 2
        target_dir = os.path.dirname(os.path.realpath(script))  # as `python script.py`
    else:
        target_dir = os.getcwd()  # as `python -m module`

    try:
        trio_uring.install(fallback=fallback)
    except trio_uring.UringUnavailableError as exc:
        print(f"{prog} run: {exc}\n(With --fallback, the program runs on Trio's epoll backend instead.)",
              file=sys.stderr)
        return 1

    # sys.path[0] is our own entry (the cwd for `python -m trio_uring`, the bin
    # directory for the console script): make it the target's.
    sys.path[0] = target_dir
    if module is None:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")
    else:
        sys.argv = [module, *rest]
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            print(f"{prog} run: no module named {module!r}", file=sys.stderr)
            return 1
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    prog = "trio-uring" if os.path.basename(sys.argv[0]) == "trio-uring" else "python -m trio_uring"
    if argv[:1] == ["run"]:
        # Everything after the target belongs to the target: no argparse here.
        return run_program(argv[1:], prog)

    parser = argparse.ArgumentParser(
        prog=prog,
        description="trio_uring: is io_uring usable here, how does it compare with epoll, "
        "and run a program on it.",
        epilog="Also: `%(prog)s run [--fallback] script.py [args...]` and "
        "`%(prog)s run [--fallback] -m module [args...]` (see `%(prog)s run --help`).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{check,demo,run}")
    sub.add_parser("check", help="is io_uring usable here, and if not, why not")
    demo_p = sub.add_parser("demo", help="echo on io_uring vs Trio's epoll")
    sub.add_parser("run", help="run a script or module with the io_uring backend installed", add_help=False)
    for p in (parser, demo_p):
        p.add_argument("-c", "--connections", type=int, default=64, help="client connections (default 64)")
        p.add_argument("-d", "--duration", type=float, default=2.0, help="seconds per run (default 2)")
        p.add_argument("-r", "--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    server_p = sub.add_parser("_echo-server")
    server_p.add_argument("backend")
    server_p.add_argument("port_file")
    args = parser.parse_args(argv)

    if args.command == "_echo-server":
        echo_server_main(args.backend, args.port_file)
        return 0
    if args.command in (None, "check"):
        ok = check()
        if args.command == "check" or not ok:
            return 0 if ok else 1
    return 0 if demo(args.connections, args.duration, reps=args.rounds) else 1


def _main() -> int:
    try:
        return main()
    except BrokenPipeError:  # `python -m trio_uring check | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(_main())
