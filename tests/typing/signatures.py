"""Checked by mypy (tests/test_typing.py), never run: trio_uring's entry points take
and return what Trio's do. A line marked ``# type: ignore[code]`` must be that error:
mypy runs with --warn-unused-ignores, so a call that stops being an error fails."""

from __future__ import annotations

import outcome
import trio
from typing_extensions import assert_type

import trio_uring


async def main(x: int, y: str) -> float:
    return 1.0


async def no_args() -> bytes:
    return b""


def done(result: outcome.Outcome[float]) -> None:
    pass


def later(fn: object) -> None:
    pass


# run: the positional arguments are checked against the function's, like trio.run's.
assert_type(trio_uring.run(main, 1, "a"), float)
assert_type(trio_uring.run(no_args), bytes)
assert_type(trio_uring.run(main, 1, "a", clock=None, instruments=(), strict_exception_groups=True), float)
trio_uring.run(main, "wrong", "a")  # type: ignore[arg-type]
trio.run(main, "wrong", "a")  # type: ignore[arg-type]
trio_uring.run(main, 1)  # type: ignore[arg-type]
trio.run(main, 1)  # type: ignore[arg-type]
trio_uring.run(no_args, 1)  # type: ignore[arg-type]
trio_uring.run(main, 1, "a", clock=1)  # type: ignore[arg-type]
trio_uring.run(main, 1, "a", bogus=True)  # type: ignore[call-arg]

# start_guest_run: the same keyword arguments as trio.lowlevel.start_guest_run.
trio_uring.start_guest_run(main, 1, "a", run_sync_soon_threadsafe=later, done_callback=done)
trio_uring.start_guest_run(
    main,
    1,
    "a",
    run_sync_soon_threadsafe=later,
    done_callback=done,
    run_sync_soon_not_threadsafe=later,
    host_uses_signal_set_wakeup_fd=True,
    clock=None,
    instruments=(),
    restrict_keyboard_interrupt_to_checkpoints=False,
    strict_exception_groups=True,
)
trio_uring.start_guest_run(main, 1, "a", done_callback=done)  # type: ignore[call-arg]
trio.lowlevel.start_guest_run(main, 1, "a", done_callback=done)  # type: ignore[call-arg]
trio_uring.start_guest_run(main, 1, "a", run_sync_soon_threadsafe=later, done_callback=done, bogus=1)  # type: ignore[call-arg]

# install_temporarily: a context manager whose value is install()'s.
with trio_uring.install_temporarily(fallback=True) as ok:
    assert_type(ok, bool)


async def in_a_run() -> None:
    assert_type(trio_uring.current_backend(), str)
