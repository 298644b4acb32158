"""Your own io_uring operations with trio_uring.lowlevel: a sleep timed by the kernel
(IORING_OP_TIMEOUT) and a read from a pipe (IORING_OP_READ), both cancellable the Trio
way (the op's own completion decides; a result that won the race is not lost).

    python examples/lowlevel_ops.py
"""

from __future__ import annotations

import errno
import os
import struct

import trio

import trio_uring
from trio_uring.lowlevel import READ, Opcode, Operation, allow_opcodes, perform


class Timeout(Operation):
    """IORING_OP_TIMEOUT: completes with -ETIME when the time is up."""

    def __init__(self, seconds: float) -> None:
        whole = int(seconds)
        timespec = bytearray(struct.pack("qq", whole, int((seconds - whole) * 1e9)))  # __kernel_timespec
        super().__init__(Opcode.TIMEOUT, addr=timespec, len=1)

    def result(self) -> None:
        if self.res == -errno.ETIME:  # the time is up: that is what a sleep wants
            return None
        return super().result()


async def uring_sleep(seconds: float) -> None:
    await perform(Timeout(seconds))


async def read_pipe(fd: int, size: int) -> bytes:
    """read(2) on a pipe through the ring, one reader at a time (slot=READ)."""
    buf = bytearray(size)
    n = await perform(Operation(Opcode.READ, fd=fd, addr=buf, len=size, off=-1, slot=READ))
    return bytes(buf[:n])


async def main() -> None:
    start = trio.current_time()
    await uring_sleep(0.1)
    print(f"slept {trio.current_time() - start:.2f} s in the kernel")

    r, w = os.pipe()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: trio.to_thread.run_sync(os.write, w, b"hello through the ring"))
            print("read:", (await read_pipe(r, 100)).decode())
        with trio.move_on_after(0.1) as scope:
            await read_pipe(r, 100)  # nothing comes: cancelled by ASYNC_CANCEL
        print("an empty pipe's read was cancelled:", scope.cancelled_caught)
    finally:
        os.close(r)
        os.close(w)


if __name__ == "__main__":
    # A restricted ring (the default) allows only what trio_uring uses: declare
    # the extra opcodes before the run starts. (READ is one trio_uring uses.)
    allow_opcodes(Opcode.TIMEOUT)
    trio_uring.run(main)
