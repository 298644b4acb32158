"""Every file in examples/ runs and does what its docstring says, so none can rot.

Servers are started with ``--port 0``, driven with plain stdlib sockets, and stopped
with SIGTERM, which each one handles by shutting down cleanly: exit status 0 and
nothing on stderr (no traceback, no warning).
"""

from __future__ import annotations

import http.client
import os
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 60

# Each example, and the test(s) below that run it.
EXERCISED = {
    "echo_server.py",
    "http_server.py",
    "chat_server.py",
    "fanout_client.py",
    "test_with_pytest_trio.py",
    "anyio_example.py",
    "multicore_server.py",
    "lowlevel_ops.py",
}


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("TRIO_URING", None)  # the examples choose io_uring themselves
    return env


def run_example(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, env=_env()
    )


class Server:
    """An example server on a free port (it prints ``listening on port N``)."""

    def __init__(self, name: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        match = re.fullmatch(r"listening on port (\d+)\n", line)
        if match is None:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"{name} did not start: {line!r}\n{err}")
        self.port = int(match.group(1))

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, then the server must exit 0 with nothing on stderr."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=TIMEOUT)
        assert (self.proc.returncode, err) == (0, "")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    srv = Server(request.param)
    try:
        yield srv
        srv.stop()
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.communicate()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_every_example_is_exercised() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == EXERCISED


@pytest.mark.parametrize("name", sorted(EXERCISED))
def test_every_example_says_how_to_run_it(name: str) -> None:
    source = (EXAMPLES / name).read_text()
    docstring = re.match(r'"""(.*?)"""', source, re.S)
    assert docstring is not None, f"{name} has no module docstring"
    assert f"examples/{name}" in docstring.group(1), f"{name}'s docstring does not show how to run it"


@pytest.mark.parametrize("server", ["echo_server.py"], indirect=True)
def test_echo_server(server: Server) -> None:
    with server.connect() as a, server.connect() as b:
        a.sendall(b"hello ")
        b.sendall(b"other client")
        assert recv_exactly(a, 6) == b"hello "
        assert recv_exactly(b, 12) == b"other client"
        big = bytes(range(256)) * 1024  # more than one socket buffer's worth
        a.sendall(big)
        assert recv_exactly(a, len(big)) == big


@pytest.mark.parametrize("server", ["http_server.py"], indirect=True)
def test_http_server(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/hello")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type") == "text/plain; charset=utf-8"
        assert response.read() == b"GET /hello served by Trio on io_uring\n"
        # Keep-alive: the same connection serves the next request, body and all.
        conn.request("POST", "/form", body=b"a=1&b=2")
        response = conn.getresponse()
        assert response.read() == b"POST /form served by Trio on io_uring\n"
        conn.request("GET", "/last", headers={"Connection": "close"})
        response = conn.getresponse()
        assert response.read() == b"GET /last served by Trio on io_uring\n"
        assert response.will_close
    finally:
        conn.close()
    # Garbage gets the connection dropped, and the server goes on.
    with server.connect() as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(100) == b""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()


@pytest.mark.parametrize("server", ["chat_server.py"], indirect=True)
def test_chat_server(server: Server) -> None:
    with server.connect() as alice_sock, server.connect() as bob_sock, \
            alice_sock.makefile("rwb", buffering=0) as alice, bob_sock.makefile("rwb", buffering=0) as bob:
        alice.write(b"alice\n")
        assert alice.readline() == b"* welcome alice, 1 here\n"
        bob.write(b"bob\n")
        assert bob.readline() == b"* welcome bob, 2 here\n"
        assert alice.readline() == b"* bob joined\n"
        bob.write(b"hi alice\r\n")
        assert alice.readline() == b"bob: hi alice\n"
        alice.write(b"hi bob\n")
        assert bob.readline() == b"alice: hi bob\n"
        bob_sock.shutdown(socket.SHUT_WR)
        assert alice.readline() == b"* bob left\n"
        assert bob.readline() == b""  # the server closed bob's side too


@pytest.mark.parametrize("server", ["multicore_server.py"], indirect=True)
def test_multicore_server(server: Server) -> None:
    # One worker per core, each a child of the server process; each connection is
    # told which one took it (tests/test_workers.py checks the spreading).
    seen = set()
    for _ in range(20):
        with server.connect() as sock:
            line = sock.makefile("rb").readline()
            match = re.fullmatch(rb"worker (\d+)\n", line)
            assert match, line
            seen.add(int(match.group(1)))
            sock.sendall(b"echo")
            assert recv_exactly(sock, 4) == b"echo"
    pid = server.proc.pid
    children = {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    assert seen <= children
    assert len(children) == len(os.sched_getaffinity(0))


def test_fanout_client_on_its_own() -> None:
    proc = run_example(str(EXAMPLES / "fanout_client.py"), "-c", "100", "-n", "5")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert re.fullmatch(r"100 connections x 5 round trips = 500 echoes checked in [\d.]+ s on io_uring\n", proc.stdout)


@pytest.mark.parametrize("server", ["echo_server.py"], indirect=True)
def test_fanout_client_against_the_echo_server(server: Server) -> None:
    proc = run_example(str(EXAMPLES / "fanout_client.py"), "--port", str(server.port), "-c", "50", "-n", "10")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout.startswith("50 connections x 10 round trips = 500 echoes checked in")


def test_anyio_example() -> None:
    proc = run_example(str(EXAMPLES / "anyio_example.py"))
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout == "HELLO FROM ANYIO\nbackend: io_uring\n"


def test_pytest_trio_example_with_trio_backend_uring(tmp_path: Path) -> None:
    # An ini of its own, so the only thing choosing io_uring is the command-line option.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = run_example(
        "-m", "pytest", str(EXAMPLES / "test_with_pytest_trio.py"),
        "--trio-backend=uring", "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path),
        "-p", "no:cacheprovider", "-W", "error", "-s", "-v",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trio backend: io_uring (trio_uring)" in proc.stdout
    assert "backend: io_uring" in proc.stdout
    assert re.search(r"\b4 passed\b", proc.stdout)


def test_lowlevel_ops() -> None:
    proc = run_example(str(EXAMPLES / "lowlevel_ops.py"))
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert re.fullmatch(
        r"slept 0\.1\d s in the kernel\nread: hello through the ring\nan empty pipe's read was cancelled: True\n",
        proc.stdout,
    ), proc.stdout
