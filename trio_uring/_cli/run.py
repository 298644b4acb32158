"""``run``: a Python program on io_uring, unchanged (like ``python -m cProfile``).

The target runs in this process as ``__main__`` after `trio_uring.install`. Its child
processes are reached through the environment: ``TRIO_URING=1`` (and
``TRIO_URING_VERBOSE=1`` for ``--verbose``) is exported before the target starts, so
every Python process it starts from the same installation installs the backend at
start-up (trio_uring-autoinstall.pth; see trio_uring._config). Fork children inherit
the installed backend anyway.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys

import trio_uring

__all__ = ["USAGE", "run_program"]

USAGE = """\
usage: {prog} run [--fallback] [--verbose] script.py [args...]
       {prog} run [--fallback] [--verbose] -m module [args...]

Run a Python program with trio_uring.install() in effect, so every trio.run in it
(and anyio, pytest-trio, servers) uses io_uring without a code change. The target
runs as __main__, with sys.argv set to [script or module path, args...]. Child
processes reach io_uring too: TRIO_URING=1 is exported to them (Python processes
of this installation install the backend at start-up; fork children inherit it).

  --fallback   if io_uring is unavailable, warn and run on Trio's epoll backend
               (default: print why and exit with status 1)
  --verbose    one line on stderr per Trio run, in this process and its children:
               which backend it is on, and why if epoll (TRIO_URING_VERBOSE=1)
"""


def run_program(argv: list[str], prog: str) -> int:
    """``run [--fallback] [--verbose] (script.py | -m module) [args...]``: returns an
    exit status (the target's own ``SystemExit`` and exceptions pass through)."""
    fallback = verbose = False
    module: str | None = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg == "--fallback":
            fallback = True
            i += 1
        elif arg == "--verbose":
            verbose = True
            i += 1
        elif arg in ("-h", "--help"):
            print(USAGE.format(prog=prog), end="")
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
            print(f"{prog} run: unknown option {arg}\n" + USAGE.format(prog=prog), file=sys.stderr, end="")
            return 2
    rest = argv[i:]
    if module is None and not rest:
        print(f"{prog} run: nothing to run\n" + USAGE.format(prog=prog), file=sys.stderr, end="")
        return 2

    if module is None:
        script = rest[0]
        if not os.path.isfile(script):
            print(f"{prog} run: can't open file {script!r}: no such file", file=sys.stderr)
            return 2
        target_dir = os.path.dirname(os.path.realpath(script))  # as `python script.py`
    else:
        target_dir = os.getcwd()  # as `python -m module`

    # For the target's child processes (this process installs below).
    os.environ["TRIO_URING"] = "1"
    if verbose:
        os.environ["TRIO_URING_VERBOSE"] = "1"
    try:
        trio_uring.install(fallback=fallback)
    except trio_uring.UringUnavailableError as exc:
        print(
            f"{prog} run: {exc}\n(With --fallback, the program runs on Trio's epoll backend instead.)",
            file=sys.stderr,
        )
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
