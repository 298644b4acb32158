"""The environment variables trio_uring reads, parsed in one place.

    TRIO_URING          install the backend in every Python process at start-up
                        (the .pth file setup.py ships calls `install_from_environment`)
    TRIO_URING_VERBOSE  print one line on stderr per run: which backend, and why epoll
    TRIO_URING_SPIN_US  microseconds to busy-poll before sleeping in the kernel
    TRIO_URING_RESTRICT 0 turns off the restricted ring (trio_uring._restrict)
    TRIO_URING_RECV_MODE
                        select or bundle: how waiting stream receives
                        use the buffer ring (trio_uring._recvmodes)
    TRIO_URING_TRIO_STREAMS
                        0 leaves Trio's SocketStream & co. Trio's own on the backend
                        (trio_uring._stream)
    TRIO_URING_TRIO_FILES
                        1 sends trio.open_file and trio.Path's file methods through
                        the ring on the backend (trio_uring._trio_files)
    TRIO_URING_UNTESTED_TRIO
                        1 accepts a Trio release outside the tested range
                        (trio_uring._trio_contract)

A value we do not understand is an error that names the variable and what it accepts,
never a silent default: ``TRIO_URING=false`` must not turn the backend on.

This module imports nothing of Trio's: the I/O manager reads its setting from here.
"""

from __future__ import annotations

import math
import os
import sys

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "env_flag", "env_microseconds", "install_from_environment"]

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")  # "": set but empty, as in `TRIO_URING= cmd`


def env_flag(name: str, default: bool = False) -> bool:
    """The boolean environment variable ``name``; unset is ``default``.

    :raises ValueError: naming the variable and the accepted words, for any other value.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    on, off = ", ".join(TRUE_WORDS), ", ".join(w for w in FALSE_WORDS if w)
    if default:  # unset or empty keeps it on
        advice = f"use {off} to turn it off, {on} or empty to keep it on"
    else:
        advice = f"use {on} to turn it on, {off} or empty to turn it off"
    raise ValueError(f"{name}={raw!r} is not understood: {advice} (any case)")


def env_microseconds(name: str, default: float) -> float:
    """The duration in microseconds in the environment variable ``name``, or ``default``.

    :raises ValueError: naming the variable, unless the value is a finite number >= 0.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={raw!r} is not understood: use a number of microseconds >= 0 (0 turns it off)")
    return value


_from_environment_done = False


def install_from_environment() -> None:
    """What ``TRIO_URING=1`` does: called at start-up by ``trio_uring-autoinstall.pth``.

    ``install(fallback=True)``: io_uring if it can be used, else Trio's epoll with a
    RuntimeWarning. Never raises: an error in a .pth line would print a traceback at the
    start of every Python process, so a bad value is one line on stderr and nothing is
    installed. (The .pth line itself skips the unset and false cases without importing
    anything, so that this costs nothing then.) Once per process: site.py can run the
    .pth twice, when a venv's lib64 is a symlink to its lib.
    """
    global _from_environment_done
    if _from_environment_done:
        return
    _from_environment_done = True
    try:
        if not env_flag("TRIO_URING"):
            return
    except ValueError as exc:
        print(f"trio_uring: {exc}; not installing the io_uring backend", file=sys.stderr)
        return
    from ._install import install

    install(fallback=True)
