from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import trio

import trio_uring


def pytest_report_header(config: pytest.Config) -> str:
    try:
        trio_uring.check_available()
    except trio_uring.UringUnavailableError as exc:
        return f"io_uring: UNAVAILABLE ({exc})"
    return "io_uring: available"


@pytest.fixture
def stock_trio() -> Iterator[None]:
    """Run this test's own trio.run calls on Trio's epoll backend."""
    trio_uring.uninstall()
    try:
        yield
    finally:
        trio_uring.install()


def io_stats() -> trio_uring.UringStatistics:
    stats = trio.lowlevel.current_statistics().io_statistics
    assert isinstance(stats, trio_uring.UringStatistics)
    return stats


def fill_socket(sock: socket.socket) -> None:
    """Make ``sock`` non-blocking and fill its send buffer."""
    sock.setblocking(False)
    try:
        while True:
            sock.send(b"x" * 65536)
    except BlockingIOError:
        pass


def default_sigint() -> None:
    """preexec_fn: start the child with SIGINT at its default disposition.

    A job started in the background by a non-interactive shell (as a CI runner may
    do) inherits SIGINT *ignored*; Python then leaves it ignored and Trio installs
    no KeyboardInterrupt handler, so tests that send SIGINT would hang.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_python(
    code: str, *, timeout: float = 60, env_extra: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (this one, so trio_uring is importable)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env_extra or {})},
        preexec_fn=default_sigint,
        **kwargs,  # type: ignore[arg-type]
    )
