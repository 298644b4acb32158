"""The process around the run: fork(), KeyboardInterrupt under load, many runs in a row.

Everything that can take the interpreter down runs in a child interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio
import trio.testing

import trio_uring

from .conftest import default_sigint, run_python


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- fork


FORK_IN_A_RUN = """
import json, os, sys, trio, trio.testing, trio_uring

PARENT = os.getpid()
what = sys.argv[1]

def report(**kw):
    print(json.dumps(kw), flush=True)

async def in_child(a):
    if what == "wait_readable":
        await trio.lowlevel.wait_readable(a)
    elif what == "send":
        await a.send(b"from the child")
    elif what == "recv":
        await a.recv(10)
    elif what == "socket":
        trio.socket.socket()
    elif what == "sleep":
        await trio.sleep(0.01)

async def main():
    a, b = trio.socket.socketpair()
    got = []
    async with trio.open_nursery() as nursery:
        async def reader():
            got.append(await b.recv(100))
        nursery.start_soon(reader)  # the parent has an op in flight when it forks
        await trio.testing.wait_all_tasks_blocked()
        pid = os.fork()
        if pid == 0:
            try:
                await in_child(a)
            except RuntimeError as exc:
                report(child=type(exc).__name__, where="call", message=str(exc))
            else:
                report(child="no error")
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        await a.send(b"parent ok")
    # The parent's ring is intact: more ops, a new connection.
    lsock = trio.socket.socket()
    await lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    c = trio.socket.socket()
    await c.connect(lsock.getsockname())
    s, _ = await lsock.accept()
    await c.send(b"!")
    got.append(await s.recv(10))
    for sock in (a, b, lsock, c, s):
        sock.close()
    stats = trio.lowlevel.current_statistics().io_statistics
    return got, os.waitstatus_to_exitcode(status), stats.ops_in_flight

try:
    got, child_status, in_flight = trio_uring.run(main)
except BaseException as exc:
    if os.getpid() != PARENT:
        # The child's copy of the run died on its first trip to the kernel.
        report(child=type(exc).__name__, where="run", message=str(exc))
        os._exit(0)
    raise
report(parent=[g.decode() for g in got], child_status=child_status, in_flight=in_flight)
"""


@pytest.mark.parametrize("what", ["wait_readable", "send", "recv", "socket", "sleep"])
def test_fork_child_gets_a_clear_error_and_the_parent_carries_on(what: str) -> None:
    proc = subprocess.run([sys.executable, "-c", FORK_IN_A_RUN, what], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    child = next(line for line in lines if "child" in line)
    parent = next(line for line in lines if "parent" in line)
    # The child is told, with a RuntimeError that says fork, either by the call
    # itself or by its copy of the run when that next enters the kernel.
    assert child["child"] == "RuntimeError", child
    assert "fork" in child["message"], child
    assert parent == {"parent": ["parent ok", "!"], "child_status": 0, "in_flight": parent["in_flight"]}
    assert proc.stderr == ""


def test_fork_from_a_worker_thread_then_a_new_run_in_the_child() -> None:
    # A child forked outside the run (from a worker thread) may start its own run.
    proc = run_python(
        """
        import json, os, trio, trio_uring

        async def echo():
            a, b = trio.socket.socketpair()
            await a.send(b"child run ok")
            data = await b.recv(100)
            a.close(); b.close()
            return trio.lowlevel.current_statistics().io_statistics.backend, data.decode()

        def fork_and_run():
            pid = os.fork()
            if pid == 0:
                try:
                    print(json.dumps(trio_uring.run(echo)), flush=True)
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)

        async def main():
            status = await trio.to_thread.run_sync(fork_and_run)
            return status, await echo()

        print(json.dumps(trio_uring.run(main)))
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    child, parent = (json.loads(line) for line in proc.stdout.splitlines())
    assert child == ["io_uring", "child run ok"]
    assert parent == [0, ["io_uring", "child run ok"]]


# ---------------------------------------------------------------- KeyboardInterrupt


ECHO_LOAD = """
import json, sys, trio, trio_uring
from functools import partial
try:
    ExceptionGroups = BaseExceptionGroup
except NameError:  # Python 3.10
    from exceptiongroup import BaseExceptionGroup as ExceptionGroups

echoes = 0

async def handler(stream):
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the client went away

async def client(port):
    global echoes
    while True:
        try:
            async with await trio.open_tcp_stream("127.0.0.1", port) as s:
                for _ in range(50):
                    await s.send_all(b"x" * 1000)
                    got = 0
                    while got < 1000:
                        got += len(await s.receive_some(2000))
                    echoes += 1
                    if echoes == 2000:
                        print("loaded", flush=True)
        except (trio.BrokenResourceError, OSError):
            pass  # the server went away

async def main():
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        for _ in range(64):
            nursery.start_soon(client, port)

def leaves(exc):
    if isinstance(exc, ExceptionGroups):
        return [leaf for e in exc.exceptions for leaf in leaves(e)]
    return [exc]

run = trio_uring.run if sys.argv[1] == "uring" else trio.run
try:
    run(main)
except BaseException as exc:
    print(json.dumps({"raised": type(exc).__name__, "leaves": sorted({type(l).__name__ for l in leaves(exc)}),
                      "echoes": echoes}), flush=True)
"""


def interrupt_under_load(backend: str) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-c", ECHO_LOAD, backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "loaded"  # 2000 echoes done, 64 connections busy
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)  # (the close-time drain gives up after 5 s)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate()
    return {"returncode": proc.returncode, "stderr": err, **json.loads(out.strip().splitlines()[-1])}


def test_keyboard_interrupt_during_heavy_io() -> None:
    stock = interrupt_under_load("stock")
    assert stock["leaves"] == ["KeyboardInterrupt"], stock
    for _ in range(3):
        uring = interrupt_under_load("uring")
        assert uring["returncode"] == 0, uring
        assert uring["stderr"] == "", uring["stderr"][-3000:]
        assert uring["leaves"] == ["KeyboardInterrupt"], uring
        assert uring["echoes"] >= 2000


KI_WHILE_PARKING = """
import json, trio, trio_uring
import trio_uring._lifecycle as lifecycle

# A SIGINT is delivered wherever the interpreter is, unless Trio's KI protection
# covers that frame. Between an op's registration and its task's park it must be
# covered (else the op would point at a task that left, and its CQE would wake that
# task out of an unrelated wait: TrioInternalError). Record whether it is, at the
# park, for each kind of op.
real = lifecycle.wait_task_rescheduled
seen = []

async def checked(abort):
    seen.append(trio.lowlevel.currently_ki_protected())
    return await real(abort)

lifecycle.wait_task_rescheduled = checked

async def main():
    a, b = trio.socket.socketpair()
    async with trio.open_nursery() as nursery:
        async def peer():
            await trio.sleep(0.05)
            await a.send(b"data")
        nursery.start_soon(peer)
        await b.recv(10)                     # waiting RECV
        buf = bytearray(10)
        nursery.start_soon(peer)
        await b.recv_into(buf)               # waiting RECV into the caller's buffer
        lsock = trio.socket.socket()
        await lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        client = trio.socket.socket()
        await client.connect(lsock.getsockname())   # CONNECT
        server, _ = await lsock.accept()     # accept wait
        stream = trio_uring.UringSocketStream(server)
        nursery.start_soon(client.send, b"x")
        await stream.receive_some()
        with trio.move_on_after(0.01):
            await trio.lowlevel.wait_readable(b)    # POLL_ADD
        for s in (a, b, lsock, client, server):
            s.close()
    print(json.dumps({"parks": len(seen), "unprotected": seen.count(False)}))

trio_uring.run(main)
"""


def test_socket_ops_park_with_keyboard_interrupt_protection() -> None:
    result = last_json(run_python(KI_WHILE_PARKING, timeout=30))
    assert result["parks"] >= 4
    assert result["unprotected"] == 0, result


def test_failed_start_releases_the_callers_buffer(stock_trio: None) -> None:
    # SocketStream.send_all does `with memoryview(...) as remaining: await sock.send(remaining)`;
    # a buffer still exported turns whatever send() raised into BufferError.
    async def main() -> str:
        a, b = trio.socket.socketpair()
        a._sock.setblocking(False)
        while True:  # fill a's send buffer: the next send blocks
            try:
                a._sock.send(b"x" * 65536)
            except BlockingIOError:
                break
        buf = bytearray(b"y" * 1000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, b"first")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await a.send(buf)
            nursery.cancel_scope.cancel()
        try:
            buf.extend(b"more")  # fails while something still holds an export
            return "released"
        except BufferError as exc:
            return f"BufferError: {exc}"
        finally:
            a.close()
            b.close()

    assert trio.run(main) == "released"
    assert trio_uring.run(main) == "released"


# ---------------------------------------------------------------- many runs


MANY_RUNS = """
import gc, json, os, socket, trio, trio_uring
from functools import partial

def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

def fds():
    return len(os.listdir("/proc/self/fd"))

def mappings():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)

async def handler(stream):
    async for data in stream:
        await stream.send_all(data)

async def one_run():
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"x" * 5000)
            got = 0
            while got < 5000:
                got += len(await stream.receive_some())
        a, b = trio.socket.socketpair()
        with trio.move_on_after(0.001):  # a RECV cancelled in flight
            await b.recv(10)
        with trio.move_on_after(0.001):  # an orphaned POLL_ADD
            await trio.lowlevel.wait_readable(a)
        a.close()
        b.close()
        nursery.cancel_scope.cancel()
    # Left for close() to clean up: an armed multishot ACCEPT with a connection queued.
    lsock = trio.socket.socket()
    await lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    c1 = socket.create_connection(lsock.getsockname())
    c2 = socket.create_connection(lsock.getsockname())
    s, _ = await lsock.accept()
    await trio.sleep(0.001)
    s.close()
    c1.close()
    c2.close()
    return lsock

def run_many(n):
    for _ in range(n):
        lsock = trio_uring.run(one_run)
        trio.run(close_in_a_run, lsock)

async def close_in_a_run(sock):
    sock.close()

trio_uring.uninstall()
run_many(30)  # warm-up: caches, allocator arenas
gc.collect()
def sample():
    gc.collect()
    return {"fds": fds(), "maps": mappings(), "objects": len(gc.get_objects()), "rss_kb": rss_kb()}

samples = [sample()]
for _ in range(8):
    run_many(25)
    samples.append(sample())
print(json.dumps({key: [s[key] for s in samples] for key in samples[0]}))
"""


def test_two_hundred_runs_in_one_process_leak_nothing() -> None:
    result = last_json(run_python(MANY_RUNS, timeout=120))
    print(f"\n{result}")
    fds, maps, objects, rss = result["fds"], result["maps"], result["objects"], result["rss_kb"]
    # Exact counts: a leaked ring or buffer ring is an fd plus mappings, a leaked
    # op record or task is Python objects, one or more per run (200 runs).
    assert len(set(fds)) == 1, fds
    assert max(maps) - maps[0] <= 8, maps
    assert max(objects) - objects[0] <= 100, objects
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        return  # tools/sanitize.sh: ASan's quarantine keeps freed memory, RSS only grows
    # RSS is roughly flat, within the allocator's noise (samples jump between a few
    # levels 2-4 MB apart as transient buffers come and go): 40 kB kept per run
    # would add 8 MB.
    assert max(rss) - rss[0] < 8192, rss
