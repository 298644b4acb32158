"""Resource exhaustion: trio.serve_tcp on io_uring keeps serving through EMFILE.

A server runs ``trio.serve_tcp`` under ``trio_uring.run`` in a child process with a
lowered RLIMIT_NOFILE. Its multishot ACCEPT ends with EMFILE; ``accept()`` raises
it, Trio's serve_listeners logs it and backs off 100 ms, and the next ``accept()``
re-arms. Clients (threads in this process) connect while the server has no fd to
spare; every one of them must eventually be served, and the server must not spin
re-arming ACCEPTs while the fds are gone.

(ENFILE, the system-wide limit, behaves the same in our code path but cannot be
provoked without changing fs.file-max for the whole machine; not tested here.)
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
from typing import Any

SERVER = r"""
import errno, json, logging, os, resource, sys
from functools import partial
import trio, trio_uring

mode = sys.argv[1]
logged = []

class Record(logging.Handler):
    def emit(self, record):
        logged.append(record.getMessage().split(" ")[2])  # "accept returned EMFILE (...)"

log = logging.getLogger("trio.serve_listeners")
log.addHandler(Record())
log.propagate = False

served = 0

async def handler(stream):
    global served
    data = await stream.receive_some(100)
    await stream.send_all(b"echo:" + data)
    served += 1
    while await stream.receive_some(100):  # until the client closes
        pass

def say(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

def accepts():
    return trio.lowlevel.current_statistics().io_statistics.ops_submitted.get("ACCEPT", 0)

async def main():
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        held = []
        if mode == "connections":
            # Room for 3 connections: the handlers' own fds exhaust the table.
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 3, hard))
        else:
            # Something else took every fd; given back when the parent says so.
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 50, hard))
            try:
                while True:
                    held.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
        say(port=port)
        os.set_blocking(0, False)
        buf = b""
        while True:
            await trio.lowlevel.wait_readable(0)
            chunk = os.read(0, 100)
            buf += chunk
            if b"release\n" in buf:
                buf = buf.replace(b"release\n", b"")
                say(accepts_while_exhausted=accepts(), logged=len(logged))
                for fd in held:
                    os.close(fd)
                held.clear()
            if not chunk:
                break
        nursery.cancel_scope.cancel()
    say(served=served, logged=sorted(set(logged)), emfile_count=logged.count("EMFILE"), accepts=accepts(),
        fds=len(os.listdir("/proc/self/fd")))

trio_uring.run(main)
"""


class Server:
    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,  # read() takes lines off the pipe itself: nothing is left in a buffer
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        self.port = self.read()["port"]

    def read(self, timeout: float = 20) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the server said nothing (hung?)"
        line = self.proc.stdout.readline()
        assert line, self.finish()
        return json.loads(line)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())

    def finish(self) -> Any:
        try:
            out, err = self.proc.communicate(timeout=20)  # closes stdin: the server stops
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"server hung: {err.decode()}") from None
        assert self.proc.returncode == 0, err.decode()
        assert err == b"", err.decode()
        return json.loads(out.decode().splitlines()[-1])


class Clients:
    """n clients (threads) connect at once; each sends its name, waits for the echo, closes."""

    def __init__(self, port: int, n: int, *, hold: threading.Event | None = None) -> None:
        self.results = [""] * n
        self.hold = hold
        self.connected = threading.Barrier(n + 1)
        self.threads = [threading.Thread(target=self.client, args=(port, i)) for i in range(n)]
        for t in self.threads:
            t.start()
        self.connected.wait(timeout=20)  # every connection is established (in the backlog)

    def client(self, port: int, i: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                self.connected.wait()
                if self.hold is not None:
                    self.hold.wait()
                sock.sendall(b"client %d" % i)
                self.results[i] = sock.recv(100).decode()
        except Exception as exc:  # reported in the results; never leaves the barrier waiting
            self.results[i] = f"{type(exc).__name__}: {exc}"
            self.connected.abort()

    def join(self) -> list[str]:
        for t in self.threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a client was never served"
        return self.results


def test_serve_tcp_keeps_serving_when_its_connections_exhaust_the_fds() -> None:
    server = Server("connections")
    try:
        n = 40
        results = Clients(server.port, n).join()
        assert results == [f"echo:client {i}" for i in range(n)]
        # Exhaustion is over: a newcomer is served at once.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"late")
            assert sock.recv(100) == b"echo:late"
    finally:
        report = server.finish()
    print(f"\n{report}")
    assert report["served"] == n + 1
    assert report["logged"] == ["EMFILE"]  # it did run out, and said so
    # One ACCEPT arm per back-off at most, not a spin: 40 clients, 3 at a time.
    assert report["accepts"] <= 2 * report["emfile_count"] + 2


def test_serve_tcp_serves_the_clients_that_came_during_exhaustion() -> None:
    server = Server("held")
    try:
        n = 20
        go = threading.Event()
        clients = Clients(server.port, n, hold=go)
        # Every client is connected and has sent nothing yet; the server has no fd
        # to accept them with. Let it fail for a while.
        go.set()
        select.select([], [], [], 0.5)
        server.send("release\n")
        during = server.read()
        results = clients.join()
        assert results == [f"echo:client {i}" for i in range(n)]
    finally:
        report = server.finish()
    print(f"\n{during} {report}")
    assert during["logged"] >= 2  # accept kept failing with EMFILE while exhausted
    # ... without spinning: Trio backs off 100 ms between attempts, and each attempt
    # arms one multishot ACCEPT.
    assert during["accepts_while_exhausted"] <= during["logged"] + 2
    assert report["served"] == n
    assert report["logged"] == ["EMFILE"]
