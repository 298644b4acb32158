"""UringIOManager under Trio's runner: waits, cancellation, notify_closing, timeouts, threads."""

from __future__ import annotations

import errno
import os
import socket
import threading

import pytest
import trio
import trio.testing

import trio_uring

from .conftest import fill_socket, io_stats


async def test_runs_on_io_uring() -> None:
    stats = io_stats()
    assert stats.backend == "io_uring"
    assert type(trio.lowlevel.current_statistics().io_statistics).__name__ == "UringStatistics"


async def test_wait_readable_and_writable_on_a_socketpair() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        with trio.testing.assert_checkpoints():
            await trio.lowlevel.wait_writable(a)
        before = io_stats().ops_submitted.get("POLL_ADD", 0)
        async with trio.open_nursery() as nursery:
            got = []

            async def reader() -> None:
                await trio.lowlevel.wait_readable(b)
                got.append(b.recv(10))

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert io_stats().tasks_waiting_read >= 2  # reader + Trio's entry queue
            a.send(b"hi")
        assert got == [b"hi"]
        assert io_stats().ops_submitted["POLL_ADD"] > before


async def test_waits_work_on_pipes() -> None:
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                await trio.sleep(0.01)
                await trio.lowlevel.wait_writable(w)
                os.write(w, b"x")

            nursery.start_soon(writer)
            await trio.lowlevel.wait_readable(r)
            assert os.read(r, 1) == b"x"
    finally:
        os.close(r)
        os.close(w)


async def test_cancelled_wait_leaves_nothing_behind() -> None:
    a, b = socket.socketpair()
    with a, b:
        base = io_stats()
        with trio.move_on_after(0.01) as scope:
            await trio.lowlevel.wait_readable(a)
        assert scope.cancelled_caught
        # The slot is free again at once (Abort.SUCCEEDED) ...
        assert io_stats().tasks_waiting_read == base.tasks_waiting_read
        # ... and the orphaned POLL_ADD is cancelled in the kernel: its CQE arrives.
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0)
        assert io_stats().ops_in_flight == base.ops_in_flight
        # The fd can be waited on again.
        b.send(b"x")
        await trio.lowlevel.wait_readable(a)


async def test_already_cancelled_wait_raises_and_does_not_leak() -> None:
    a, b = socket.socketpair()
    with a, b:
        base = io_stats()
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await trio.lowlevel.wait_readable(a)
            scope.cancel()
        await trio.sleep(0)
        await trio.sleep(0)
        assert io_stats().ops_in_flight == base.ops_in_flight


async def test_second_reader_or_writer_is_busy() -> None:
    a, b = socket.socketpair()
    with a, b:
        fill_socket(a)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.lowlevel.wait_readable, a)
            nursery.start_soon(trio.lowlevel.wait_writable, a)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await trio.lowlevel.wait_readable(a)
            with pytest.raises(trio.BusyResourceError):
                await trio.lowlevel.wait_writable(a)
            # Reading one fd and writing another is fine at the same time.
            stats = io_stats()
            assert stats.tasks_waiting_write == 1
            nursery.cancel_scope.cancel()


async def test_notify_closing_wakes_every_waiter_with_closed_resource_error() -> None:
    a, b = socket.socketpair()
    with a, b:
        fill_socket(a)
        errors: list[BaseException] = []

        async def wait(fn: object) -> None:
            try:
                await fn(a)  # type: ignore[operator]
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, trio.lowlevel.wait_readable)
            nursery.start_soon(wait, trio.lowlevel.wait_writable)
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.notify_closing(a)
            a.close()
        assert len(errors) == 2
        assert io_stats().tasks_waiting_write == 0


async def test_notify_closing_an_unknown_fd_is_a_no_op() -> None:
    trio.lowlevel.notify_closing(-1)
    trio.lowlevel.notify_closing(12345)


@pytest.mark.parametrize("wait", [trio.lowlevel.wait_readable, trio.lowlevel.wait_writable])
async def test_waiting_on_a_closed_fd_raises_ebadf(wait: object) -> None:
    s = socket.socket()
    fd = s.fileno()
    s.close()
    with pytest.raises(OSError, match=r"^\[Errno 9\] Bad file descriptor$") as info:
        await wait(fd)  # type: ignore[operator]
    assert info.value.errno == errno.EBADF
    # The ring is still usable.
    await trio.sleep(0)


async def test_write_wait_survives_peer_half_close() -> None:
    # io_uring reports EPOLLRDHUP to every poll; a write wait must not return
    # just because the peer shut down its side while ours is still full.
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        fill_socket(a)
        b.shutdown(socket.SHUT_WR)
        with trio.move_on_after(0.1) as scope:
            await trio.lowlevel.wait_writable(a)
        assert scope.cancelled_caught, "wait_writable returned but the socket is full"
        # Now make room: the wait completes.
        b.setblocking(False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.lowlevel.wait_writable, a)
            await trio.testing.wait_all_tasks_blocked()
            while True:
                try:
                    if not b.recv(1 << 20):
                        break
                except BlockingIOError:
                    break


async def test_sleep_wakes_on_time() -> None:
    for delay in (0.05, 0.001, 0.2):
        start = trio.current_time()
        await trio.sleep(delay)
        elapsed = trio.current_time() - start
        assert delay <= elapsed < delay + 0.1


def test_sleep_does_not_spin() -> None:
    # A positive timeout is honoured by the kernel wait: a 100 ms sleep takes a
    # handful of run-loop iterations, not thousands.
    class CountWaits(trio.abc.Instrument):
        waits = 0

        def before_io_wait(self, timeout: float) -> None:
            CountWaits.waits += 1

    async def main() -> None:
        await trio.sleep(0.1)

    trio_uring.run(main, instruments=[CountWaits()])
    assert CountWaits.waits < 10


async def test_to_thread_and_from_thread() -> None:
    def in_thread() -> int:
        return trio.from_thread.run(double, 21)

    async def double(x: int) -> int:
        await trio.sleep(0.001)
        return 2 * x

    assert await trio.to_thread.run_sync(in_thread) == 42
    token = trio.lowlevel.current_trio_token()
    event = trio.Event()
    threading.Thread(target=lambda: token.run_sync_soon(event.set)).start()
    with trio.fail_after(5):
        await event.wait()


async def test_many_fds_at_once() -> None:
    # 2000 sockets each with a task waiting, then all made readable at once.
    pairs = [socket.socketpair() for _ in range(1000)]
    try:
        done = 0

        async def wait_then_read(sock: socket.socket) -> None:
            nonlocal done
            await trio.lowlevel.wait_readable(sock)
            assert sock.recv(1) == b"!"
            done += 1

        async with trio.open_nursery() as nursery:
            for a, b in pairs:
                nursery.start_soon(wait_then_read, a)
                nursery.start_soon(wait_then_read, b)
            await trio.testing.wait_all_tasks_blocked()
            assert io_stats().tasks_waiting_read >= 2000
            for a, b in pairs:
                a.send(b"!")
                b.send(b"!")
        assert done == 2000
    finally:
        for a, b in pairs:
            a.close()
            b.close()


async def test_statistics_count_waiters() -> None:
    # What Trio's test_io_manager_statistics checks, on our statistics type.
    pairs = [socket.socketpair() for _ in range(3)]
    (a1, _b1), (a2, b2), (a3, _b3) = pairs
    try:
        await trio.testing.wait_all_tasks_blocked()
        base = io_stats()
        fill_socket(a1)
        fill_socket(a3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.lowlevel.wait_writable, a1)
            nursery.start_soon(trio.lowlevel.wait_readable, a2)
            nursery.start_soon(trio.lowlevel.wait_readable, b2)
            nursery.start_soon(trio.lowlevel.wait_writable, a3)
            nursery.start_soon(trio.lowlevel.wait_readable, a3)
            await trio.testing.wait_all_tasks_blocked()
            stats = io_stats()
            assert stats.tasks_waiting_read == base.tasks_waiting_read + 3
            assert stats.tasks_waiting_write == base.tasks_waiting_write + 2
            assert stats.ops_in_flight >= base.ops_in_flight + 5
            nursery.cancel_scope.cancel()
        stats = io_stats()
        assert (stats.tasks_waiting_read, stats.tasks_waiting_write) == (
            base.tasks_waiting_read,
            base.tasks_waiting_write,
        )
    finally:
        for a, b in pairs:
            a.close()
            b.close()


async def test_autojump_clock_and_wait_all_tasks_blocked_still_work(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    await trio.sleep(3600)
    assert trio.current_time() - start == pytest.approx(3600)


def test_an_idle_run_does_not_busy_poll() -> None:
    # The loop watches the ring briefly before sleeping only while events keep
    # arriving within that window; an idle run sleeps in the kernel.
    import time

    async def main() -> float:
        a, b = socket.socketpair()
        with a, b:
            for _ in range(50):  # a burst of quick events first: the busy-poll turns on
                a.send(b"x")
                await trio.lowlevel.wait_readable(b)
                b.recv(1)
            start = time.process_time()
            await trio.sleep(0.3)
            return time.process_time() - start

    cpu = trio_uring.run(main)
    assert cpu < 0.03, f"{cpu * 1000:.1f} ms of CPU during a 300 ms sleep"


# ---------------------------------------------------------------- the registered ring fd


def _ring_of_this_run() -> bool:
    from trio_uring._iomanager import current_driver

    driver = current_driver()
    assert driver is not None
    return bool(driver.ring.fd_registered)


async def _registered_and_working() -> bool:
    a, b = trio.socket.socketpair()
    with a, b:
        await a.send(b"ping")
        assert await b.recv(10) == b"ping"
    return _ring_of_this_run()


def test_every_run_enters_its_ring_by_a_registered_index(stock_trio: None) -> None:
    # A thread may hold 16 registered rings: a ring that kept its registration after
    # closing would leave later runs on their fd (or, without the unregister, alive
    # until the thread exits).
    assert [trio_uring.run(_registered_and_working) for _ in range(40)] == [True] * 40


def test_a_guest_runs_ring_is_entered_by_its_fd(stock_trio: None) -> None:
    # Its waits happen on Trio's worker thread, which has no registration of its own.
    import asyncio

    async def host() -> bool:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[object] = loop.create_future()
        trio_uring.start_guest_run(_registered_and_working, run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                                   done_callback=done.set_result)  # fmt: skip
        return (await asyncio.wait_for(done, 10)).unwrap()  # type: ignore[attr-defined,no-any-return]

    assert asyncio.run(host()) is False
