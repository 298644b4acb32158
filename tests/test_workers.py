"""Worker processes sharing one port (trio_uring/workers.py), and reuse_port.

Real processes and real sockets: a supervisor is started with ``python -c`` in a new
session (its own process group, which its workers share), driven with stdlib
sockets and signals, and checked through /proc: which processes are in the group,
which sockets listen on the port. Whatever happens in a test, the fixture kills the
whole group at the end, so nothing is left behind.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

import trio_uring
from trio_uring import _listeners
from trio_uring.workers import default_workers, run_workers

from .conftest import default_sigint

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60

SERVER = """
import logging, os, sys, trio
from trio_uring.workers import run_workers, serve_tcp_workers
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

async def handler(stream):
    await stream.send_all(b"worker %d\\n" % os.getpid())
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass

def ready(port):
    print(f"port {port}", flush=True)
"""


def proc_stat(pid: str | int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def live_processes(match: Callable[[int, int], bool]) -> set[int]:
    """Processes (not zombies: they hold no fds or memory) whose (ppid, pgrp) match."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(entry)
            if stat is not None and stat[0] != "Z" and match(stat[1], stat[2]):
                found.add(int(entry))
    return found


def listening_on(port: int) -> list[str]:
    """The /proc/net/tcp{,6} lines of sockets listening on ``port`` (state 0A)."""
    lines = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    lines.append(line.strip())
    return lines


def eventually(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


class Supervisor:
    """``SERVER`` plus ``main`` (which prints ``port N`` when the workers serve)."""

    def __init__(self, main: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER + textwrap.dedent(main)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,  # its own process group: the workers join it
            preexec_fn=default_sigint,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        self.pgid = self.proc.pid
        self.port = 0
        self.stderr = ""

    def wait_ready(self) -> int:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        match = re.fullmatch(r"port (\d+)\n", line)
        assert match, f"not ready: {line!r} {self.finish(kill=True)}"
        self.port = int(match.group(1))
        return self.port

    def workers(self) -> set[int]:
        return live_processes(lambda ppid, _: ppid == self.proc.pid)

    def group(self) -> set[int]:
        return live_processes(lambda _, pgrp: pgrp == self.pgid)

    def connect(self) -> tuple[socket.socket, int]:
        """A connection, and the pid of the worker that took it."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        line = sock.makefile("rb").readline()
        match = re.fullmatch(rb"worker (\d+)\n", line)
        assert match, line
        return sock, int(match.group(1))

    def connections_to_each(self, pids: set[int]) -> dict[int, socket.socket]:
        """Connect until every worker in ``pids`` holds one open connection; echo on each."""
        held: dict[int, socket.socket] = {}
        for _ in range(500):
            sock, pid = self.connect()
            assert pid in pids, (pid, pids)
            if pid in held:
                sock.close()
            else:
                held[pid] = sock
                sock.sendall(b"ping")
                assert sock.recv(10) == b"ping"
            if held.keys() == pids:
                return held
        raise AssertionError(f"500 connections reached only {sorted(held)} of {sorted(pids)}")

    def finish(self, *, kill: bool = False) -> str:
        if kill:
            self.kill_group()
        _, self.stderr = self.proc.communicate(timeout=TIMEOUT)
        return self.stderr

    def kill_group(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def supervisor() -> Iterator[Callable[[str], Supervisor]]:
    started: list[Supervisor] = []

    def start(main: str) -> Supervisor:
        sup = Supervisor(main)
        started.append(sup)
        return sup

    yield start
    for sup in started:  # nothing left behind, even when the test failed
        sup.kill_group()
        if sup.proc.poll() is None:
            sup.proc.kill()
        sup.proc.communicate(timeout=TIMEOUT)


def assert_nothing_left(sup: Supervisor) -> None:
    eventually(lambda: not sup.group(), f"no process is left in group {sup.pgid}")
    # Workers that shut down cleanly closed their listeners themselves: at once.
    assert listening_on(sup.port) == []


# ---------------------------------------------------------------- serving


def test_every_worker_accepts_connections_on_one_port(supervisor: Callable[[str], Supervisor]) -> None:
    sup = supervisor("sys.exit(serve_tcp_workers(handler, 0, host='127.0.0.1', workers=3, on_ready=ready))")
    sup.wait_ready()
    workers = sup.workers()
    assert len(workers) == 3
    held = sup.connections_to_each(workers)  # each worker serves some
    # One listening socket per worker, all on the port; the supervisor's reservation
    # is bound but not listening.
    assert len(listening_on(sup.port)) == 3
    for sock in held.values():
        sock.close()
    sup.proc.terminate()
    assert sup.proc.wait(TIMEOUT) == 0
    assert sup.finish() == ""
    assert_nothing_left(sup)


@pytest.mark.parametrize("how", ["SIGTERM to the supervisor", "SIGINT to the process group (Ctrl-C)"])
def test_shutdown_closes_every_connection_and_leaves_no_process(
    supervisor: Callable[[str], Supervisor], how: str
) -> None:
    sup = supervisor("sys.exit(serve_tcp_workers(handler, 0, host='127.0.0.1', workers=2, on_ready=ready))")
    sup.wait_ready()
    held = sup.connections_to_each(sup.workers())
    if how.startswith("SIGTERM"):
        sup.proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(sup.pgid, signal.SIGINT)
    assert sup.proc.wait(TIMEOUT) == 0
    assert sup.finish() == ""  # no traceback, no warning
    for sock in held.values():
        # Closed by the worker, in order (FIN: EOF, not a reset).
        assert sock.recv(10) == b""
        sock.close()
    assert_nothing_left(sup)


def test_a_killed_worker_is_reported_and_the_others_keep_serving(supervisor: Callable[[str], Supervisor]) -> None:
    sup = supervisor("sys.exit(serve_tcp_workers(handler, 0, host='127.0.0.1', workers=3, on_ready=ready))")
    sup.wait_ready()
    workers = sup.workers()
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: sup.workers() == workers - {victim}, "the killed worker is reaped")
    # Its listening socket outlives it by ~0.1 s (the kernel tears its ring down
    # asynchronously, and the ring's pending ACCEPT holds the socket); connections
    # that hash to it meanwhile are reset. Wait until it is gone.
    eventually(lambda: len(listening_on(sup.port)) == 2, "its listening socket is closed")
    held = sup.connections_to_each(workers - {victim})
    for sock in held.values():
        sock.close()
    sup.proc.terminate()
    assert sup.proc.wait(TIMEOUT) == 1  # a worker died and was not replaced
    assert re.fullmatch(
        rf"trio_uring.workers: worker \d \(pid {victim}\) was killed by SIGKILL; not restarted \(restart=False\)\n",
        sup.finish(),
    )
    assert_nothing_left(sup)


def test_a_killed_worker_is_restarted_when_asked(supervisor: Callable[[str], Supervisor]) -> None:
    sup = supervisor(
        "sys.exit(serve_tcp_workers(handler, 0, host='127.0.0.1', workers=2, restart=True, on_ready=ready))"
    )
    sup.wait_ready()
    workers = sup.workers()
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: len(sup.workers() - workers) == 1, "a replacement worker is running")
    eventually(lambda: len(listening_on(sup.port)) == 2, "the killed worker's socket is closed")
    replacement = sup.workers() - workers
    held = sup.connections_to_each((workers - {victim}) | replacement)  # and it serves
    for sock in held.values():
        sock.close()
    sup.proc.terminate()
    assert sup.proc.wait(TIMEOUT) == 0
    assert re.fullmatch(
        rf"trio_uring.workers: worker \d \(pid {victim}\) was killed by SIGKILL; restarting it\n", sup.finish()
    )
    assert_nothing_left(sup)


def test_a_worker_that_keeps_dying_stops_everything(supervisor: Callable[[str], Supervisor]) -> None:
    sup = supervisor(
        """
        async def broken(*, task_status):
            raise RuntimeError("cannot start")

        sys.exit(run_workers(broken, workers=1, restart=True, max_restarts=3))
        """
    )
    assert sup.proc.wait(TIMEOUT) == 1
    err = sup.finish()
    assert err.count("RuntimeError: cannot start") == 4  # the first, then 3 restarts
    assert err.count("restarting it") == 3
    assert re.search(r"exited with status 1; 3 restarts within 60 s already: stopping all workers", err)
    eventually(lambda: not sup.group(), "no process is left")


def test_a_worker_that_ignores_the_shutdown_is_killed(supervisor: Callable[[str], Supervisor]) -> None:
    sup = supervisor(
        """
        async def stubborn(*, task_status):
            with trio.CancelScope(shield=True):
                task_status.started()
                print("port 0", flush=True)
                await trio.sleep_forever()

        sys.exit(run_workers(stubborn, workers=1, shutdown_timeout=0.5))
        """
    )
    sup.wait_ready()
    (worker,) = sup.workers()
    sup.proc.terminate()
    assert sup.proc.wait(TIMEOUT) == 1
    err = sup.finish()
    assert f"worker 0 (pid {worker}) did not stop within 0.5 s: killing it" in err
    eventually(lambda: not sup.group(), "no process is left")


def test_a_killed_supervisor_leaves_no_orphan(supervisor: Callable[[str], Supervisor]) -> None:
    sup = supervisor("sys.exit(serve_tcp_workers(handler, 0, host='127.0.0.1', workers=2, on_ready=ready))")
    sup.wait_ready()
    workers = sup.workers()
    assert len(workers) == 2
    sup.proc.kill()
    sup.proc.wait(TIMEOUT)
    # PR_SET_PDEATHSIG: the kernel kills them (their zombies, if init does not reap
    # them, hold nothing).
    eventually(lambda: not live_processes(lambda ppid, pgrp: pgrp == sup.pgid), "the workers are gone")
    # Their sockets go when the kernel has torn their rings down (asynchronously).
    eventually(lambda: listening_on(sup.port) == [], "no socket listens on the port")


def test_main_returning_ends_the_worker_and_the_run(supervisor: Callable[[str], Supervisor]) -> None:
    sup = supervisor(
        """
        async def job(n, *, task_status):
            task_status.started()
            # One write per line: the two workers share the pipe, and print()
            # writes its pieces one by one when stdout is unbuffered.
            os.write(1, f"worker {n}\\n".encode())

        sys.exit(run_workers(job, 7, workers=2))
        """
    )
    assert sup.proc.wait(TIMEOUT) == 0
    assert sup.proc.stdout is not None
    assert sup.proc.stdout.read() == "worker 7\nworker 7\n"
    assert sup.finish() == ""


# ---------------------------------------------------------------- arguments


def test_run_workers_refuses_to_fork_inside_a_run() -> None:
    async def main() -> None:
        run_workers(trio.sleep_forever, workers=1)

    with pytest.raises(RuntimeError, match=r"call it outside trio\.run"):
        trio_uring.run(main)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers must be at least 1, not 0"),
        ({"workers": "2"}, TypeError, "'str' object cannot be interpreted as an integer"),
        ({"shutdown_timeout": -1}, ValueError, "must not be negative"),
    ],
)
def test_run_workers_rejects_bad_arguments(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        run_workers(trio.sleep_forever, **kwargs)  # type: ignore[arg-type]


def test_default_workers_is_the_cores_this_process_may_use() -> None:
    assert default_workers() == len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- reuse_port


async def test_reuse_port_lets_two_listeners_share_a_port() -> None:
    first = await trio_uring.open_tcp_listeners(0, host="127.0.0.1", reuse_port=True)
    port = first[0].socket.getsockname()[1]
    second = await trio_uring.open_tcp_listeners(port, host="127.0.0.1", reuse_port=True)
    try:
        for listener in first + second:
            assert isinstance(listener, trio_uring.UringSocketListener)
            assert listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        # Without it, the port is taken, exactly as with trio.open_tcp_listeners.
        with pytest.raises(OSError) as exc:
            await trio_uring.open_tcp_listeners(port, host="127.0.0.1")
        assert exc.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as exc:
            await trio.open_tcp_listeners(port, host="127.0.0.1")
        assert exc.value.errno == errno.EADDRINUSE
        # Both accept: connect until each has taken one.
        accepted = {0: 0, 1: 0}
        with trio.fail_after(TIMEOUT):
            while not all(accepted.values()):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                async with trio.open_nursery() as nursery:

                    async def take(i: int, listener: trio.abc.Listener[trio.abc.Stream]) -> None:
                        stream = await listener.accept()
                        accepted[i] += 1
                        await stream.aclose()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(take, 0, first[0])
                    nursery.start_soon(take, 1, second[0])
                await client.aclose()
    finally:
        for listener in first + second:
            await listener.aclose()


async def test_without_reuse_port_listeners_are_set_up_as_trios() -> None:
    ours = await trio_uring.open_tcp_listeners(0)  # host None: 0.0.0.0 and ::
    theirs = await trio.open_tcp_listeners(0)
    try:

        def options(listeners: list[trio.abc.Listener[trio.abc.Stream]]) -> list[tuple[int, int, int, int]]:
            result = []
            for listener in listeners:
                sock = listener.socket  # type: ignore[attr-defined]
                v6 = sock.family == socket.AF_INET6
                v6only = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) if v6 else -1
                result.append((sock.family, sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR),
                               sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), v6only))  # fmt: skip
            return sorted(result)

        assert options(ours) == options(theirs)
        assert [family for family, *_ in options(ours)] == sorted([socket.AF_INET, socket.AF_INET6])
    finally:
        for listener in ours + theirs:
            await listener.aclose()


def test_backlog_rules_are_trios() -> None:
    assert _listeners.compute_backlog(None) == 0xFFFF
    assert _listeners.compute_backlog(100) == 100
    assert _listeners.compute_backlog(10**6) == 0xFFFF
    with pytest.raises(TypeError, match="backlog must be an int or None"):
        _listeners.compute_backlog("5")  # type: ignore[arg-type]


async def test_bad_port_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="port must be an int"):
        await trio_uring.open_tcp_listeners("80", reuse_port=True)  # type: ignore[arg-type]


async def test_serve_tcp_passes_reuse_port_on() -> None:
    async with trio.open_nursery() as nursery:
        serve = partial(trio_uring.serve_tcp, trio.lowlevel.checkpoint, 0, host="127.0.0.1", reuse_port=True)
        listeners = await nursery.start(serve)
        assert listeners
        assert all(listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for listener in listeners)
        nursery.cancel_scope.cancel()


def test_reserved_port_is_shared_by_reuse_port_listeners_only() -> None:
    port, reserved = _listeners.reserve_tcp_port(0, host="127.0.0.1")
    try:
        assert port != 0 and listening_on(port) == []
        plain = socket.socket()
        with plain, pytest.raises(OSError) as exc:
            plain.bind(("127.0.0.1", port))
        assert exc.value.errno == errno.EADDRINUSE

        async def main() -> int:
            listeners = await trio_uring.open_tcp_listeners(port, host="127.0.0.1", reuse_port=True)
            n = len(listening_on(port))
            for listener in listeners:
                await listener.aclose()
            return n

        assert trio_uring.run(main) == 1
    finally:
        for sock in reserved:
            sock.close()
