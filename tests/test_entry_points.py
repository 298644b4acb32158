"""trio_uring.run, install/uninstall, guest mode, threads, signals, and io_uring refused;
which backend a run is on (current_backend, TRIO_URING_VERBOSE); the public names."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from outcome import Outcome

import trio_uring

from .conftest import run_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def backend() -> str:
    return trio.lowlevel.current_statistics().io_statistics.backend


async def echo_round_trip() -> bytes:
    async def handler(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"ping")
            reply = await stream.receive_some()
        nursery.cancel_scope.cancel()
    return reply


def test_run_uses_io_uring_even_when_not_installed(stock_trio: None) -> None:
    assert not trio_uring.is_installed()
    assert trio_uring.run(backend) == "io_uring"
    assert trio.run(backend) == "epoll"
    assert trio_uring.run(echo_round_trip) == b"ping"


def test_run_takes_trio_runs_arguments(stock_trio: None) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main(x: int, *, y: int = 0) -> float:
        await trio.sleep(1000)
        return trio.current_time()

    assert trio_uring.run(main, 1, clock=clock, instruments=(), strict_exception_groups=True) == 1000


def test_install_uninstall_and_context_manager(stock_trio: None) -> None:
    assert trio.run(backend) == "epoll"
    assert trio_uring.install() is True
    try:
        assert trio_uring.is_installed()
        assert trio.run(backend) == "io_uring"
    finally:
        trio_uring.uninstall()
    assert trio.run(backend) == "epoll"
    with trio_uring.install_temporarily() as ok:
        assert ok
        assert trio.run(backend) == "io_uring"
    assert trio.run(backend) == "epoll"


def test_install_temporarily_is_not_a_question(stock_trio: None) -> None:
    with pytest.raises(TypeError, match=r"is a context manager: `with trio_uring.install_temporarily\(\):`"):
        if trio_uring.install_temporarily():
            pass
    assert not trio_uring.is_installed()  # and nothing was installed by asking
    with pytest.raises(AttributeError, match=r"installed\(\) was renamed install_temporarily\(\)"):
        trio_uring.installed  # noqa: B018  (the old name, which read like a question)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        trio_uring.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_install_temporarily_leaves_an_earlier_install_alone(stock_trio: None) -> None:
    trio_uring.install()
    try:
        with trio_uring.install_temporarily() as ok:
            assert ok
        assert trio_uring.is_installed()
    finally:
        trio_uring.uninstall()


def test_current_backend(stock_trio: None) -> None:
    assert trio_uring.run(_current_backend) == "io_uring"
    assert trio.run(_current_backend) == "epoll"
    with pytest.raises(RuntimeError, match="must be called from async context"):
        trio_uring.current_backend()


async def _current_backend() -> str:
    return trio_uring.current_backend()


def test_verbose_announces_each_run(
    stock_trio: None, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIO_URING_VERBOSE", "1")
    trio_uring.run(_current_backend)
    run_as_asyncio_guest(_current_backend)
    trio.run(_current_backend)  # Trio's own, not chosen by trio_uring: not announced
    monkeypatch.setenv("TRIO_URING_VERBOSE", "0")
    trio_uring.run(_current_backend)
    pid = os.getpid()
    assert capfd.readouterr().err == (
        f"trio_uring: pid {pid}: this Trio run is on io_uring\n"
        f"trio_uring: pid {pid}: this Trio guest run is on io_uring\n"
    )


def test_public_names_show_their_public_module() -> None:
    for name in trio_uring.__all__:
        obj = getattr(trio_uring, name)
        if callable(obj):
            assert obj.__module__ == "trio_uring", name
    assert repr(trio_uring.UringUnavailableError) == "<class 'trio_uring.UringUnavailableError'>"


def test_run_in_one_thread_does_not_change_another(stock_trio: None) -> None:
    results: dict[str, str] = {}
    started = threading.Barrier(2)

    async def report(name: str) -> None:
        started.wait()
        await trio.sleep(0.05)
        results[name] = await backend()

    threads = [
        threading.Thread(target=lambda: trio_uring.run(report, "uring")),
        threading.Thread(target=lambda: trio.run(report, "stock")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"uring": "io_uring", "stock": "epoll"}


def test_is_available() -> None:
    assert trio_uring.is_available()
    trio_uring.check_available()


def run_as_asyncio_guest(async_fn: Any, *args: Any, host_task: Any = None) -> Any:
    async def host() -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome[Any]] = loop.create_future()
        trio_uring.start_guest_run(
            async_fn,
            *args,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
        )
        if host_task is not None:
            await host_task()
        return (await done).unwrap()

    return asyncio.run(host())


def test_guest_mode_on_io_uring(stock_trio: None) -> None:
    async def main() -> tuple[str, bytes]:
        await trio.sleep(0.05)
        return await backend(), await echo_round_trip()

    assert run_as_asyncio_guest(main) == ("io_uring", b"ping")


def test_guest_mode_host_cancels_while_trio_sleeps_in_the_kernel(stock_trio: None) -> None:
    # The Trio task waits for a socket; the worker thread is blocked in
    # io_uring_enter. The host cancels the scope: the task must wake promptly.
    scope = trio.CancelScope()
    a, b = socket.socketpair()

    async def main() -> float:
        start = trio.current_time()
        with scope:
            await trio.lowlevel.wait_readable(a)
        return trio.current_time() - start

    async def host_task() -> None:
        await asyncio.sleep(0.2)
        scope.cancel()

    with a, b:
        elapsed = run_as_asyncio_guest(main, host_task=host_task)
    assert 0.15 < elapsed < 2


def test_guest_mode_host_cancels_a_receive_waiting_in_the_kernel(stock_trio: None) -> None:
    # A recv is parked in the kernel (a RECV op); the worker thread sleeps in
    # io_uring_enter with no deadline. The host cancels: the ASYNC_CANCEL must be
    # submitted at once (not with the next tick, which would never come), so the
    # task wakes promptly.
    scope = trio.CancelScope()
    a, b = socket.socketpair()

    async def main() -> float:
        sock = trio.socket.from_stdlib_socket(a)
        start = trio.current_time()
        with scope:
            await sock.recv(10)
        return trio.current_time() - start

    async def host_task() -> None:
        await asyncio.sleep(0.2)
        scope.cancel()

    with a, b:
        elapsed = run_as_asyncio_guest(main, host_task=host_task)
    assert 0.15 < elapsed < 2


def test_guest_mode_host_wakeups_reach_trio(stock_trio: None) -> None:
    # run_sync_soon from the host while Trio's worker waits in the kernel.
    async def main() -> int:
        token = trio.lowlevel.current_trio_token()
        event = trio.Event()
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, token.run_sync_soon, event.set)
        with trio.fail_after(5):
            await event.wait()
        return 1

    assert run_as_asyncio_guest(main) == 1


def test_keyboard_interrupt_while_blocked_in_the_kernel() -> None:
    proc = run_python(
        """
        import os, signal, threading, trio, trio_uring
        async def main():
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            await trio.sleep(30)
        try:
            trio_uring.run(main)
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        """,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "KeyboardInterrupt"


def test_keyboard_interrupt_restricted_to_checkpoints() -> None:
    proc = run_python(
        """
        import os, signal, threading, trio, trio_uring
        async def main():
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
            try:
                await trio.sleep(30)
            except KeyboardInterrupt:
                print("raised at the checkpoint")
                raise
        try:
            trio_uring.run(main, restrict_keyboard_interrupt_to_checkpoints=True)
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        """,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["raised at the checkpoint", "KeyboardInterrupt"]


REFUSED = """
    import errno, sys, warnings
    sys.path.insert(0, {root!r})
    from tests.seccomp import refuse_io_uring
    refuse_io_uring(errno.{errno_name})
    import trio, trio_uring
"""


def test_io_uring_refused_by_seccomp_gives_a_clear_error() -> None:
    proc = run_python(
        REFUSED.format(root=ROOT, errno_name="EPERM")
        + """
    async def main():
        pass
    print(trio_uring.is_available())
    try:
        trio_uring.run(main)
    except trio_uring.UringUnavailableError as exc:
        print(exc.errno == errno.EPERM, isinstance(exc, OSError))
        print(exc)
    """
    )
    assert proc.returncode == 0, proc.stderr
    available, kinds, message = proc.stdout.strip().split("\n", 2)
    assert available == "False"
    assert kinds == "True True"
    assert "io_uring_setup() failed with EPERM" in message
    assert "seccomp" in message and "this process runs under one" in message
    assert "--security-opt seccomp=" in message
    assert "install(fallback=True)" in message


def test_install_fallback_warns_and_trio_keeps_working_on_epoll() -> None:
    proc = run_python(
        REFUSED.format(root=ROOT, errno_name="EPERM")
        + """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print(trio_uring.install(fallback=True))
    print(caught[0].category.__name__, "EPERM" in str(caught[0].message))
    async def main():
        return trio.lowlevel.current_statistics().io_statistics.backend
    print(trio.run(main))
    try:
        trio_uring.install()
    except trio_uring.UringUnavailableError:
        print("install() without fallback raises")
    """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:4] == [
        "False",
        "RuntimeWarning True",
        "epoll",
        "install() without fallback raises",
    ]


def test_fallback_runs_are_announced_with_the_reason_and_uninstall_restores_trio() -> None:
    proc = run_python(
        REFUSED.format(root=ROOT, errno_name="EPERM")
        + """
    import os
    from trio._core import _run
    from trio._core._io_epoll import EpollIOManager
    os.environ["TRIO_URING_VERBOSE"] = "1"
    warnings.simplefilter("ignore")
    trio_uring.install(fallback=True)
    async def main():
        return trio_uring.current_backend()
    print(trio.run(main), trio_uring.is_installed())
    trio_uring.uninstall()
    print(_run.TheIOManager is EpollIOManager, trio.run(main))
    """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["epoll False", "True epoll"]
    # One notice: for the run after the fallback, not for the one after uninstall().
    (notice,) = re.findall(r"^trio_uring: pid \d+: (.*)$", proc.stderr, re.M)
    assert notice.startswith(
        "this Trio run is on epoll, not io_uring: io_uring is unavailable: io_uring_setup() failed with EPERM"
    )


def test_tracebacks_name_the_public_exception() -> None:
    proc = run_python(
        REFUSED.format(root=ROOT, errno_name="EPERM")
        + """
    async def main():
        pass
    trio_uring.run(main)
    """
    )
    assert proc.returncode == 1
    assert re.search(r"^trio_uring\.UringUnavailableError: \[Errno 1\] io_uring is unavailable", proc.stderr, re.M)
    assert "trio_uring._ring" not in proc.stderr.splitlines()[-1]


def test_kernel_without_io_uring_is_explained() -> None:
    proc = run_python(
        REFUSED.format(root=ROOT, errno_name="ENOSYS")
        + """
    try:
        trio_uring.check_available()
    except trio_uring.UringUnavailableError as exc:
        print(exc.errno == errno.ENOSYS, "CONFIG_IO_URING" in str(exc))
    """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True True"
