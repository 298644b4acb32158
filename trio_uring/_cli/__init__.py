"""The command line: ``python -m trio_uring`` (also installed as ``trio-uring``).

    python -m trio_uring                the check, then what to run next
    python -m trio_uring check          is io_uring usable here, and if not, why not (check.py)
    python -m trio_uring demo [...]     Trio's echo server on epoll and on io_uring (demo.py)
    python -m trio_uring run [...] script.py | -m module [args...]
                                        a program on io_uring, unchanged (run.py)

This module parses arguments and turns every way a command can end into an exit
status and at most one line on stderr: usage errors (2), io_uring unavailable (1),
Ctrl-C (130). A traceback means a bug.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
from collections.abc import Callable

import trio

import trio_uring

__all__ = ["entry_point", "main"]

#: demo's argument limits.
MAX_CONNECTIONS = 10_000
MAX_DURATION = 3600.0
MAX_ROUNDS = 100


def _bounded(kind: type[int] | type[float], low: float, high: float, low_ok: bool = True) -> Callable[[str], float]:
    """An argparse ``type``: a number of ``kind`` in [low, high] (or (low, high])."""
    word = "a whole number" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {word}") from None
        if not ((low <= value) if low_ok else (low < value)) or not value <= high:  # (also refuses nan)
            bound = f"at least {low:g}" if low_ok else f"more than {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound} and at most {high:g}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def _prog() -> str:
    return "trio-uring" if os.path.basename(sys.argv[0]) == "trio-uring" else "python -m trio_uring"


def _parser(prog: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Trio on io_uring: is io_uring usable here, how does it compare with Trio's "
        "epoll, and run a program on it. With no command: the check, then what to run next.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"trio_uring {trio_uring.__version__} (Trio {trio.__version__}, "
        f"Python {platform.python_version()})",
    )
    sub = parser.add_subparsers(dest="command", title="commands", metavar="{check,demo,run}")
    sub.add_parser(
        "check",
        help="is io_uring usable here, and if not, why not",
        description="Print what decides whether io_uring works on this machine (kernel, the "
        "io_uring_disabled sysctl, seccomp) and whether each feature and opcode trio_uring uses "
        "is there. Exit status 0 if io_uring can be used, 1 if not.",
    )
    demo = sub.add_parser(
        "demo",
        help="the same Trio echo server on epoll and on io_uring, side by side",
        description="Serve the same Trio echo handler three ways (trio.serve_tcp on Trio's epoll, "
        "the same on io_uring, trio_uring.serve_tcp), each in its own process, drive each with "
        "the same C client and print round trips per second. About 20 s with the defaults.",
    )
    demo.add_argument(
        "-c", "--connections", type=_bounded(int, 1, MAX_CONNECTIONS), default=64,
        help="client connections (default 64)",
    )  # fmt: skip
    demo.add_argument(
        "-d", "--duration", type=_bounded(float, 0, MAX_DURATION, low_ok=False), default=2.0,
        metavar="SECONDS", help="seconds per form and round (default 2)",
    )  # fmt: skip
    demo.add_argument(
        "-r", "--rounds", type=_bounded(int, 1, MAX_ROUNDS), default=3,
        help="interleaved rounds; the median is shown (default 3)",
    )  # fmt: skip
    # Parsed by run.py (everything after the target is the target's); listed here for --help.
    sub.add_parser("run", help="run a script or module with every trio.run on io_uring (see: run --help)")
    return parser, demo


def _next_steps(prog: str) -> None:
    print()
    print("Next:")
    print(f"  {prog} demo              Trio's echo server on epoll and on io_uring, side by side (~20 s)")
    print(f"  {prog} run app.py        your program, with every trio.run on io_uring")
    print(f"  {prog} run -m module     the same, for a module (a server, pytest, ...)")
    print(f"  {prog} --help            all commands and options")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    prog = _prog()
    if argv[:1] == ["run"]:
        # Everything after the target belongs to the target: no argparse here.
        from .run import run_program

        return run_program(argv[1:], prog)

    parser, demo_parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.command == "demo":
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft_limit != resource.RLIM_INFINITY and args.connections + 64 > soft_limit:
            demo_parser.error(
                f"-c {args.connections}: more connections than the open-file limit allows "
                f"(ulimit -n is {soft_limit})"
            )
        from .demo import demo

        return 0 if demo(args.connections, args.duration, args.rounds) else 1

    from .check import check

    ok = check()
    if args.command is None and ok:
        _next_steps(prog)
    return 0 if ok else 1


def entry_point() -> int:
    """``python -m trio_uring`` and the ``trio-uring`` script: `main`, with Ctrl-C and
    a closed stdout turned into an exit status."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{_prog()}: interrupted", file=sys.stderr)
        return 130  # as a shell reports a command killed by SIGINT
    except BrokenPipeError:  # `python -m trio_uring check | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
