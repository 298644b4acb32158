"""``python -m trio_uring run`` reaches child processes: a real server with worker
processes (Hypercorn, spawn), every ``multiprocessing`` start method, and plain
subprocesses of the same interpreter; ``--verbose`` announces each run in each of them.

The server also runs without ``run``, where every worker must report epoll: the
reports come from the children's own Trio runs, not from the parent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli import env

TIMEOUT = 60

# An ASGI app: each worker records its pid and backend at start-up (lifespan), so the
# test sees every worker, not only the one that happens to accept its connection.
APP = """
import json, os
import trio_uring

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                report = {"pid": os.getpid(), "backend": trio_uring.current_backend()}
                path = os.path.join(os.environ["REPORT_DIR"], str(os.getpid()))
                with open(path + ".tmp", "w") as f:
                    json.dump(report, f)
                os.replace(path + ".tmp", path)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"pid": os.getpid(), "backend": trio_uring.current_backend()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process_group(argv: list[str], cwd: Path, **env_changes: str | None) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in a process group of its own; on exit, SIGTERM the group (a
    server's graceful stop), then SIGKILL whatever is left: no orphans."""
    with open(cwd / "output.txt", "wb") as out:  # a file, not a pipe: a chatty server cannot block on it
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env(**env_changes),
                                start_new_session=True)  # fmt: skip
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the workers, after the main process
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def output(cwd: Path) -> str:
    return (cwd / "output.txt").read_text(errors="replace")


def serve_hypercorn(tmp_path: Path, via_run: bool) -> tuple[list[dict[str, object]], dict[str, object], str, int]:
    """Hypercorn with two trio workers: (each worker's report, one HTTP response,
    the output, the main process's pid)."""
    (tmp_path / "app.py").write_text(APP)
    reports = tmp_path / "reports"
    reports.mkdir()
    port = free_port()
    hypercorn = ["-m", "hypercorn", "--worker-class", "trio", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    hypercorn.append("app:app")
    argv = [sys.executable, *(["-m", "trio_uring", "run", "--verbose"] if via_run else []), *hypercorn]
    with process_group(argv, tmp_path, REPORT_DIR=str(reports)) as proc:
        deadline = time.monotonic() + TIMEOUT
        while len(list(reports.glob("[0-9]*"))) < 2 or not (tmp_path / "response").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"hypercorn did not start two workers (status {proc.poll()}):\n{output(tmp_path)}")
            if len(list(reports.glob("[0-9]*"))) == 2:
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response,
                ):
                    (tmp_path / "response").write_bytes(response.read())
            time.sleep(0.1)
        main_pid = proc.pid
    workers = [json.loads(path.read_text()) for path in sorted(reports.glob("[0-9]*"))]
    return workers, json.loads((tmp_path / "response").read_text()), output(tmp_path), main_pid


@pytest.mark.parametrize("via_run", [True, False], ids=["run", "plain"])
def test_hypercorn_workers_run_on_io_uring_under_run(tmp_path: Path, via_run: bool) -> None:
    workers, response, out, main_pid = serve_hypercorn(tmp_path, via_run)
    worker_pids = {w["pid"] for w in workers}
    assert len(worker_pids) == 2 and main_pid not in worker_pids  # two worker processes
    expected = "io_uring" if via_run else "epoll"
    assert [w["backend"] for w in workers] == [expected, expected], out
    assert response["pid"] in worker_pids and response["backend"] == expected
    notices = dict(re.findall(r"^trio_uring: pid (\d+): this Trio run is on (\S+)$", out, re.M))
    if via_run:  # --verbose reached the workers too
        assert notices == {str(pid): "io_uring" for pid in worker_pids}, out
    else:
        assert notices == {}, out


# Every way a Python program starts another Python process, each reporting the backend
# of a trio.run of its own.
CHILDREN = """
import json, multiprocessing, subprocess, sys, trio, trio_uring

async def backend():
    return trio_uring.current_backend()

def child(queue):
    queue.put(trio.run(backend))

if __name__ == "__main__":
    results = {"parent": trio.run(backend)}
    for method in ("spawn", "forkserver", "fork"):
        ctx = multiprocessing.get_context(method)
        queue = ctx.Queue()
        process = ctx.Process(target=child, args=(queue,))
        process.start()
        results[method] = queue.get(timeout=30)
        process.join(30)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results["pool"] = sorted(set(pool.starmap(trio.run, [(backend,)] * 4)))
    code = "import trio, trio_uring\\nasync def b(): return trio_uring.current_backend()\\nprint(trio.run(b))"
    results["subprocess"] = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                           timeout=30, check=True).stdout.strip()
    print(json.dumps(results))
"""


def test_multiprocessing_and_subprocesses_run_on_io_uring_under_run(tmp_path: Path) -> None:
    # (The Hypercorn test above shows, with its "plain" case, that children report what
    # they run on and not what their parent does.)
    (tmp_path / "children.py").write_text(CHILDREN)
    argv = [sys.executable, "-m", "trio_uring", "run", "--verbose", "children.py"]
    with process_group(argv, tmp_path) as proc:
        proc.wait(timeout=TIMEOUT * 2)
    out = output(tmp_path)
    assert proc.returncode == 0, out
    results = json.loads(out.splitlines()[-1])
    expected = "io_uring"
    assert results == {
        "parent": expected,
        "spawn": expected,
        "forkserver": expected,
        "fork": expected,
        "pool": [expected],
        "subprocess": expected,
    }, out
    # --verbose: a notice for every run, from its own process (the parent, three
    # Process children, the pool's workers, the subprocess).
    notices = re.findall(r"^trio_uring: pid (\d+): this Trio run is on (\S+)$", out, re.M)
    assert {backend for _, backend in notices} == {"io_uring"}
    assert len({pid for pid, _ in notices}) >= 6, out
