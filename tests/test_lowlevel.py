"""trio_uring.lowlevel: user-declared ops get the lifecycle's guarantees.

The same properties as the package's own ops, on ops declared from outside: a
cancel is an ASYNC_CANCEL and the CQE decides (a result that won the race is
returned), buffers live until the CQE, the closed-fd rule, BusyResourceError per
slot, and the restricted ring refusing an opcode nobody declared.
"""

from __future__ import annotations

import errno
import gc
import os
import struct
from collections.abc import Iterator

import pytest
import trio
import trio.testing

import trio_uring
from trio_uring import _restrict
from trio_uring.lowlevel import READ, Opcode, Operation, allow_opcodes, perform

pytestmark = pytest.mark.timeout(20)


class Timeout(Operation):
    def __init__(self, seconds: float) -> None:
        whole = int(seconds)
        super().__init__(Opcode.TIMEOUT, addr=bytearray(struct.pack("qq", whole, int((seconds - whole) * 1e9))), len=1)

    def result(self) -> None:
        if self.res == -errno.ETIME:
            return None
        return super().result()  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def timeout_allowed() -> Iterator[None]:
    saved = set(_restrict._extra_opcodes)
    allow_opcodes(Opcode.TIMEOUT)
    yield
    _restrict._extra_opcodes.clear()
    _restrict._extra_opcodes.update(saved)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def read_op(fd: int, buf: bytearray, slot: int = READ) -> Operation:
    return Operation(Opcode.READ, fd=fd, addr=buf, len=len(buf), off=-1, slot=slot)


async def test_a_timeout_sleeps_in_the_kernel() -> None:
    start = trio.current_time()
    await perform(Timeout(0.05))
    assert 0.04 < trio.current_time() - start < 1


async def test_a_cancelled_timeout_raises_cancelled_and_ends() -> None:
    def in_flight() -> int:
        return trio.lowlevel.current_statistics().io_statistics.ops_in_flight  # type: ignore[attr-defined,no-any-return]

    before = in_flight()
    with trio.move_on_after(0.05) as scope:
        await perform(Timeout(10))
    assert scope.cancelled_caught
    assert in_flight() == before  # the op ended by its CQE before the task went on


async def test_read_on_a_pipe_and_its_errors(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"abc")
    buf = bytearray(8)
    assert await perform(read_op(r, buf)) == 3
    assert buf[:3] == b"abc"
    with pytest.raises(OSError) as info:
        await perform(read_op(w, buf))  # a pipe's write end is not readable
    assert info.value.errno == errno.EBADF


async def test_a_result_that_won_the_race_is_returned(pipe: tuple[int, int]) -> None:
    # The read completes in the same kernel pass in which its cancel is submitted:
    # whichever wins, nothing written to the pipe is lost.
    r, w = pipe
    got = b""
    for i in range(200):
        buf = bytearray(8)
        with trio.CancelScope() as scope:

            async def cancel_and_write(scope: trio.CancelScope = scope, i: int = i) -> None:
                scope.cancel()
                os.write(w, bytes([i % 256]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_and_write)
                got += buf[: await perform(read_op(r, buf))]
        if scope.cancelled_caught:  # the cancel won: the byte is still in the pipe
            got += os.read(r, 8)
    assert got == bytes(i % 256 for i in range(200))


async def test_a_buffer_is_kept_until_the_cqe(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    buf = bytearray(8)
    coro = perform(read_op(r, buf))
    coro.send(None)  # parked in the kernel
    coro.close()  # the task vanishes: the op is abandoned, not forgotten
    with pytest.raises(BufferError):
        buf.extend(b"x")  # still exported: the kernel may write into it
    await trio.sleep(0.05)  # the abandoning cancel's CQE ends the op
    del coro
    gc.collect()
    buf.extend(b"x")


async def test_two_readers_of_one_fd_is_busy_with_a_slot(pipe: tuple[int, int]) -> None:
    r, w = pipe
    async with trio.open_nursery() as nursery:
        nursery.start_soon(perform, read_op(r, bytearray(8)))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await perform(read_op(r, bytearray(8)))
        os.write(w, b"x")


async def test_an_op_on_a_closed_and_reused_fd_is_refused(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    r2, w2 = os.pipe()
    try:
        os.write(w2, b"not yours")
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await perform(read_op(r, bytearray(16)))

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.notify_closing(r)
            os.dup2(r2, r)  # the number now names another pipe
        assert os.read(r2, 16) == b"not yours"
    finally:
        os.close(r2)
        os.close(w2)


async def test_bad_descriptions_are_refused() -> None:
    with pytest.raises(ValueError, match="opcode"):
        Operation(300)
    with pytest.raises(ValueError, match="slot"):
        Operation(Opcode.NOP, slot=7)
    with pytest.raises(TypeError, match="buffer"):
        Operation(Opcode.READ, addr="text")


def test_perform_needs_the_io_uring_backend(stock_trio: None) -> None:
    async def main() -> None:
        await perform(Operation(Opcode.NOP))

    with pytest.raises(RuntimeError, match="io_uring backend"):
        trio.run(main)


def test_an_undeclared_opcode_is_refused_by_a_restricted_ring() -> None:
    _restrict._extra_opcodes.discard(Opcode.TIMEOUT)

    async def main() -> None:
        await perform(Timeout(0.01))

    with pytest.raises(OSError) as info:
        trio_uring.run(main)
    assert info.value.errno == errno.EACCES
