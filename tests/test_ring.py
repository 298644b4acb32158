"""The C ring layer and its Python wrapper, without Trio: setup, submit, wait, reap, limits."""

from __future__ import annotations

import errno
import time

import pytest

from trio_uring._ring import Opcode, Ring

from .conftest import run_python


@pytest.fixture
def ring() -> Ring:
    r = Ring(8, 64)
    yield r
    r.close()


def test_setup_reports_features_and_sizes(ring: Ring) -> None:
    assert ring.fd >= 0
    assert ring.sq_entries == 8
    assert ring.cq_entries == 64
    supported = ring.probe()
    for op in (Opcode.POLL_ADD, Opcode.ASYNC_CANCEL, Opcode.READ, Opcode.SOCKET, Opcode.ACCEPT):
        assert op in supported


def test_nop_round_trip(ring: Ring) -> None:
    assert ring.write.nop(1234) == 0
    assert ring.cq_ready() == 0  # written, not yet submitted
    assert ring.wait(1.0) == 1
    assert ring.reap() == [1234, 0, 0]
    assert ring.reap() == []
    assert ring.ops_submitted() == {"NOP": 1}


def test_wait_times_out_on_time_and_not_before(ring: Ring) -> None:
    start = time.monotonic()
    assert ring.wait(0.05) == 0
    elapsed = time.monotonic() - start
    assert 0.05 <= elapsed < 0.5


def test_zero_timeout_does_not_block(ring: Ring) -> None:
    start = time.monotonic()
    assert ring.wait(0) == 0
    assert time.monotonic() - start < 0.05


def test_more_sqes_than_the_sq_holds_are_all_submitted(ring: Ring) -> None:
    # The SQ has 8 slots; a full SQ is flushed to the kernel by the next prep.
    count = 10 * ring.sq_entries
    for ud in range(100, 100 + count):
        assert ring.write.nop(ud) == 0
    ring.submit()
    seen = []
    while len(seen) < count:
        assert ring.wait(1.0) > 0
        cqes = ring.reap()
        seen += cqes[0::3]
    assert seen == list(range(100, 100 + count))


def test_cq_overflow_loses_nothing() -> None:
    # 4-entry SQ, 8-entry CQ, 500 completions before the first reap: the kernel
    # keeps what does not fit (IORING_FEAT_NODROP) and reap() flushes it, in order.
    small = Ring(4, 8)
    try:
        for ud in range(1, 501):
            assert small.write.nop(ud) == 0
        small.submit()
        seen: list[int] = []
        while len(seen) < 500:
            assert small.wait(1.0) > 0, f"stuck after {len(seen)} CQEs"
            seen += small.reap()[0::3]
        assert seen == list(range(1, 501))
        assert small.wait(0) == 0
    finally:
        small.close()


def test_closed_ring_refuses_everything() -> None:
    r = Ring(8, 16)
    r.close()
    r.close()  # idempotent
    assert r.write.nop(1) == -errno.EBADF
    assert r.wait(0) == -errno.EBADF
    with pytest.raises(OSError) as info:
        r.submit()
    assert info.value.errno == errno.EBADF
    with pytest.raises(RuntimeError, match="closed"):
        r.probe()


def test_fork_child_cannot_touch_the_parents_ring() -> None:
    # The mappings are MADV_DONTFORK: the child has none, and every call says so
    # instead of crashing; the parent's ring is untouched.
    proc = run_python(
        """
        import os, sys
        from trio_uring._ring import Ring
        ring = Ring(8, 16)
        pid = os.fork()
        if pid == 0:
            try:
                ring.submit()
            except RuntimeError as exc:
                ok = "fork" in str(exc)
            else:
                ok = False
            ok = ok and ring.write.nop(7) != 0
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "child could use the ring"
        assert ring.write.nop(5) == 0 and ring.wait(1.0) == 1
        assert ring.reap() == [5, 0, 0]
        print("parent ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "parent ok" in proc.stdout


def test_generated_ring_files_match_the_table() -> None:
    """_ring_writers.h, _ring_cffi.pyi and _ring_writers.py are made from _ring_api.py
    by tools/gen_ring.py; a table change without regenerating them fails here."""
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parent.parent / "tools" / "gen_ring.py"
    done = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_completion_queue_smaller_than_the_submission_queue_is_refused_as_such() -> None:
    # (The kernel says EINVAL, which used to read as "kernel too old".)
    with pytest.raises(ValueError, match=r"cq_entries \(32\) must be at least sq_entries \(64\)"):
        Ring(64, 32)
    with pytest.raises(ValueError, match="sq_entries must be between 1 and 32768"):
        Ring(0, 32)
