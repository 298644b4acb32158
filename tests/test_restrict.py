"""The restricted ring (trio_uring/_restrict.py): what the kernel refuses, what still works.

Refusals are checked against the kernel itself: an SQE written straight into the SQ
(``tu_get_sqe``), and raw io_uring_register calls. Each refusal test runs the same
thing on an unrestricted ring too, so it fails if the restriction is not in force.
The kernel refusing to restrict is produced for real, with a seccomp filter on
io_uring_register (tests/seccomp.py) in a child process.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio._core._run import GLOBAL_RUN_CONTEXT

import trio_uring
import trio_uring.direct  # declares URING_CMD, as any program using direct sockets does
from trio_uring import _restrict
from trio_uring._restrict import (
    BACKEND_OPCODES,
    BACKEND_REGISTER_OPS,
    BACKEND_SQE_FLAGS,
    IOSQE_ASYNC,
    IOSQE_BUFFER_SELECT,
    IOSQE_CQE_SKIP_SUCCESS,
    IOSQE_IO_DRAIN,
    IOSQE_IO_LINK,
    open_ring,
)
from trio_uring._ring import Opcode, Ring
from trio_uring._ring_cffi import ffi, lib

from .conftest import run_python

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
REGISTER_EVENTFD = 4
UNREGISTER_EVENTFD = 5
EACCES = -errno.EACCES


@pytest.fixture
def restricted() -> Iterator[Ring]:
    ring, state = open_ring(8, 16, restrict=True)
    assert state.active, state.reason
    yield ring
    ring.close()


@pytest.fixture
def unrestricted() -> Iterator[Ring]:
    ring, state = open_ring(8, 16, restrict=False)
    assert not state.active
    yield ring
    ring.close()


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = (set(_restrict._extra_opcodes), _restrict._extra_sqe_flags, set(_restrict._extra_register_ops))
    yield
    _restrict._extra_opcodes.clear()
    _restrict._extra_opcodes.update(saved[0])
    _restrict._extra_sqe_flags = saved[1]
    _restrict._extra_register_ops.clear()
    _restrict._extra_register_ops.update(saved[2])


def raw_sqe(ring: Ring, opcode: int, *, fd: int = -1, addr: Any = 0, length: int = 0, flags: int = 0,
            user_data: int) -> None:  # fmt: skip
    """Write an SQE by hand, bypassing every tu_prep_* writer."""
    sqe = lib.tu_get_sqe(ring._r)
    assert sqe != ffi.NULL
    sqe.opcode = opcode
    sqe.fd = fd
    sqe.addr = int(ffi.cast("uintptr_t", addr)) if addr else 0
    sqe.len = length
    sqe.flags = flags
    sqe.user_data = user_data


def completions(ring: Ring, expected: int) -> dict[int, int]:
    """Submit, then wait for ``expected`` CQEs: {user_data: res}."""
    results: dict[int, int] = {}
    ring.submit()
    while len(results) < expected:
        assert ring.wait(5.0) > 0, f"only {results} after 5 s"
        cqes = ring.reap()
        for i in range(0, len(cqes), 3):
            results[cqes[i]] = cqes[i + 1]
    return results


# ---------------------------------------------------------------- refusals


def test_an_opcode_outside_the_list_is_refused_with_eacces(restricted: Ring, unrestricted: Ring) -> None:
    # IORING_OP_WRITEV is not on the list: on a restricted ring the kernel fails it and
    # nothing is written; the same SQE on an unrestricted ring writes.
    assert Opcode.WRITEV not in BACKEND_OPCODES
    r, w = os.pipe()
    buf = ffi.from_buffer(b"leak")
    data = ffi.new("struct iovec *", {"iov_base": buf, "iov_len": 4})
    try:
        raw_sqe(restricted, Opcode.WRITEV, fd=w, addr=data, length=1, user_data=1)
        raw_sqe(restricted, Opcode.NOP, user_data=2)  # allowed, in the same batch
        assert completions(restricted, 2) == {1: EACCES, 2: 0}
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 4)
        raw_sqe(unrestricted, Opcode.WRITEV, fd=w, addr=data, length=1, user_data=1)
        assert completions(unrestricted, 1) == {1: 4}
        assert os.read(r, 4) == b"leak"
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("flag", [IOSQE_IO_DRAIN, IOSQE_IO_LINK, IOSQE_ASYNC])
def test_an_sqe_flag_outside_the_list_is_refused(restricted: Ring, unrestricted: Ring, flag: int) -> None:
    assert not flag & BACKEND_SQE_FLAGS
    raw_sqe(restricted, Opcode.NOP, user_data=2)
    raw_sqe(restricted, Opcode.NOP, flags=flag, user_data=1)  # last: IO_LINK links to nothing
    assert completions(restricted, 2) == {1: EACCES, 2: 0}
    raw_sqe(unrestricted, Opcode.NOP, flags=flag, user_data=1)
    assert completions(unrestricted, 1) == {1: 0}


def test_the_sqe_flags_the_backend_uses_pass(restricted: Ring) -> None:
    # CQE_SKIP_SUCCESS: the NOP succeeds and posts nothing; only the plain one answers.
    raw_sqe(restricted, Opcode.NOP, flags=IOSQE_CQE_SKIP_SUCCESS, user_data=1)
    raw_sqe(restricted, Opcode.NOP, user_data=2)
    assert completions(restricted, 1) == {2: 0}
    # BUFFER_SELECT passes the restriction check and reaches the op (a NOP rejects it
    # itself with EOPNOTSUPP; without the flag on the list it would be EACCES).
    raw_sqe(restricted, Opcode.NOP, flags=IOSQE_BUFFER_SELECT, user_data=3)
    assert completions(restricted, 1) == {3: -errno.EOPNOTSUPP}


def test_a_register_opcode_outside_the_list_is_refused(restricted: Ring, unrestricted: Ring) -> None:
    assert REGISTER_EVENTFD not in BACKEND_REGISTER_OPS
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        arg = ffi.new("int *", efd)
        assert restricted.register(REGISTER_EVENTFD, arg, 1) == EACCES
        assert unrestricted.register(REGISTER_EVENTFD, arg, 1) == 0
        assert unrestricted.register(UNREGISTER_EVENTFD, ffi.NULL, 0) == 0
    finally:
        os.close(efd)
    # The ones on the list still work: the probe, and a provided-buffer ring.
    assert Opcode.RECV in restricted.probe()
    buffers = trio_uring._ring.BufferRing(restricted, 7, 4, 64)
    buffers.close()


def test_the_list_cannot_be_changed_once_enabled(restricted: Ring) -> None:
    # A second list is refused (register opcode RESTRICTIONS is not itself allowed).
    array = ffi.new("struct io_uring_restriction[]", 1)
    array[0].opcode = _restrict.RESTRICTION_SQE_OP
    array[0].sqe_op = Opcode.WRITE
    assert restricted.register(_restrict.REGISTER_RESTRICTIONS, array, 1) == EACCES
    assert restricted.register(_restrict.REGISTER_ENABLE_RINGS, ffi.NULL, 0) == EACCES


# ---------------------------------------------------------------- runs


def io_manager() -> trio_uring.UringIOManager:
    manager = GLOBAL_RUN_CONTEXT.runner.io_manager
    assert isinstance(manager, trio_uring.UringIOManager)
    return manager


def eventfd_registration(ring: Ring) -> int:
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        rc = ring.register(REGISTER_EVENTFD, ffi.new("int *", efd), 1)
        if rc == 0:
            ring.register(UNREGISTER_EVENTFD, ffi.NULL, 0)
        return rc
    finally:
        os.close(efd)


async def test_a_run_is_restricted_by_default() -> None:
    manager = io_manager()
    assert manager.restrictions.active, manager.restrictions.reason
    assert manager.restrictions.allowlist is not None
    # (plus URING_CMD: test_direct.py imported trio_uring.direct, which declares it)
    assert manager.restrictions.allowlist.opcodes == BACKEND_OPCODES | _restrict.OPT_IN_OPCODES
    assert eventfd_registration(manager._ring) == EACCES
    # ... and works: a socket round trip through the ring (SOCKET, CONNECT, ACCEPT, SEND, RECV).
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio_uring.serve_tcp, echo, 0)
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(10):
            stream = await trio_uring.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"ping")
            assert await stream.receive_some(10) == b"ping"
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def echo(stream: trio.abc.Stream) -> None:
    async for data in stream:
        await stream.send_all(data)


def test_opt_out_by_class_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trio_uring.UringIOManager, "restrict", False)

    async def main() -> tuple[bool, str, int]:
        manager = io_manager()
        return manager.restrictions.active, manager.restrictions.reason, eventfd_registration(manager._ring)

    active, reason, rc = trio_uring.run(main)
    assert (active, rc) == (False, 0)
    assert "turned off" in reason


@pytest.mark.parametrize(("value", "active"), [("0", False), ("off", False), ("1", True), ("", True)])
def test_opt_out_by_environment(monkeypatch: pytest.MonkeyPatch, value: str, active: bool) -> None:
    monkeypatch.setenv("TRIO_URING_RESTRICT", value)

    async def main() -> tuple[bool, int]:
        manager = io_manager()
        return manager.restrictions.active, eventfd_registration(manager._ring)

    assert trio_uring.run(main) == (active, EACCES if active else 0)


def test_the_environment_overrides_the_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trio_uring.UringIOManager, "restrict", False)
    monkeypatch.setenv("TRIO_URING_RESTRICT", "1")

    async def main() -> bool:
        return io_manager().restrictions.active

    assert trio_uring.run(main)


def test_a_bad_environment_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_URING_RESTRICT", "maybe")

    async def main() -> None:
        pass

    expected = "TRIO_URING_RESTRICT='maybe' is not understood: use 0, false, no, off to turn it off"
    with pytest.raises(ValueError, match=expected):
        trio_uring.run(main)


def test_guest_mode_ring_is_restricted_too(stock_trio: None) -> None:
    # Guest mode replaces the ring in _start (a plain ring, no COOP_TASKRUN): the
    # replacement must be restricted as well.
    async def main() -> tuple[bool, int, int, bytes]:
        manager = io_manager()
        a, b = trio.socket.socketpair()
        with a, b:
            await a.send(b"guest")
            data = await b.recv(10)
        return manager.restrictions.active, manager._ring.setup_flags, eventfd_registration(manager._ring), data

    async def host() -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio_uring.start_guest_run(main, run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                                   done_callback=done.set_result)  # fmt: skip
        return (await asyncio.wait_for(done, TIMEOUT)).unwrap()

    active, flags, rc, data = asyncio.run(host())
    coop_taskrun = 1 << 8
    assert not flags & coop_taskrun  # it is the guest ring, not the first one
    assert (active, rc, data) == (True, EACCES, b"guest")


# ---------------------------------------------------------------- declared extras


def test_allow_opcodes_extends_rings_created_afterwards(clean_registry: None) -> None:
    before, _ = open_ring(8, 16)
    _restrict.allow_opcodes(Opcode.WRITEV)
    _restrict.allow_sqe_flags(IOSQE_IO_LINK)
    _restrict.allow_register_ops(REGISTER_EVENTFD)
    after, state = open_ring(8, 16)
    r, w = os.pipe()
    buf = ffi.from_buffer(b"ok")
    data = ffi.new("struct iovec *", {"iov_base": buf, "iov_len": 2})
    try:
        assert state.allowlist is not None and Opcode.WRITEV in state.allowlist.opcodes
        raw_sqe(before, Opcode.WRITEV, fd=w, addr=data, length=1, user_data=1)
        assert completions(before, 1) == {1: EACCES}  # fixed when it was created
        raw_sqe(after, Opcode.WRITEV, fd=w, addr=data, length=1, flags=IOSQE_IO_LINK, user_data=1)
        raw_sqe(after, Opcode.NOP, user_data=2)
        assert completions(after, 2) == {1: 2, 2: 0}
        assert os.read(r, 2) == b"ok"
        assert eventfd_registration(after) == 0
        assert eventfd_registration(before) == EACCES
    finally:
        before.close()
        after.close()
        os.close(r)
        os.close(w)


def test_allow_rejects_bad_values(clean_registry: None) -> None:
    with pytest.raises(TypeError, match="an opcode must be an int, not str"):
        _restrict.allow_opcodes("WRITE")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"an opcode must be in 0\.\.255, not 256"):
        _restrict.allow_opcodes(256)
    with pytest.raises(ValueError, match=r"SQE flags must be in 0\.\.255"):
        _restrict.allow_sqe_flags(-1)
    assert _restrict.allowed().opcodes == BACKEND_OPCODES | _restrict.OPT_IN_OPCODES  # (direct imported)


def test_opcodes_the_kernel_lacks_are_left_out_of_the_list(clean_registry: None) -> None:
    # An opcode this kernel does not know would make it refuse the whole list.
    probe_ring = Ring(8, 16)
    unknown = max(int(op) for op in probe_ring.probe()) + 1
    probe_ring.close()
    _restrict.allow_opcodes(unknown)
    ring, state = open_ring(8, 16)
    ring.close()
    assert state.active and state.allowlist is not None
    assert unknown not in state.allowlist.opcodes


# ---------------------------------------------------------------- the kernel refuses


@pytest.mark.parametrize(
    ("refused", "what"),
    [
        ({_restrict.REGISTER_RESTRICTIONS}, "IORING_REGISTER_RESTRICTIONS (EPERM"),
        ({_restrict.REGISTER_ENABLE_RINGS}, "IORING_REGISTER_ENABLE_RINGS (EPERM"),
    ],
)
def test_a_refusal_falls_back_to_an_unrestricted_ring_and_says_why(refused: set[int], what: str) -> None:
    proc = run_python(
        f"""
        import errno, trio, trio_uring
        from tests.seccomp import refuse_register_ops
        from trio._core._run import GLOBAL_RUN_CONTEXT
        refuse_register_ops({refused!r}, errno.EPERM)

        async def main():
            state = GLOBAL_RUN_CONTEXT.runner.io_manager.restrictions
            a, b = trio.socket.socketpair()
            with a, b:
                await a.send(b"still works")
                print(await b.recv(20), state.active, state.reason)

        trio_uring.run(main)
        """,
        cwd=ROOT,
        timeout=TIMEOUT,
    )
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout.startswith("b'still works' False the kernel refused " + what), proc.stdout


def test_check_reports_the_restriction_state() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRIO_URING_RESTRICT"}
    on = subprocess.run([sys.executable, "-m", "trio_uring", "check"], capture_output=True, text=True,
                        timeout=TIMEOUT, env=env)  # fmt: skip
    assert on.returncode == 0, on.stderr
    text = " ".join(on.stdout.split())
    assert re.search(rf"restrictions: on: {len(BACKEND_OPCODES)} opcodes \(NOP, .*POLL_ADD, .*\); "
                     r"SQE flags IOSQE_FIXED_FILE \| IOSQE_BUFFER_SELECT \| "
                     r"IOSQE_CQE_SKIP_SUCCESS; register: IORING_REGISTER_PROBE, ", text), on.stdout  # fmt: skip
    off = subprocess.run([sys.executable, "-m", "trio_uring", "check"], capture_output=True, text=True,
                         timeout=TIMEOUT, env={**env, "TRIO_URING_RESTRICT": "0"})  # fmt: skip
    assert "restrictions:        off: turned off" in off.stdout, off.stdout


# ---------------------------------------------------------------- the list cannot drift


def test_every_sqe_writer_writes_an_allowed_opcode() -> None:
    # BACKEND_OPCODES comes from the ops table (_ops.OPS); a writer added to the C
    # boundary (_ring_api.WRITERS) for an op the table does not declare would be
    # refused by the kernel on a restricted ring.
    from trio_uring import _ring_api
    from trio_uring._ring import Opcode

    assert {Opcode[w.opcode] for w in _ring_api.WRITERS if w.opcode is not None} <= BACKEND_OPCODES


def test_backend_register_ops_match_the_c_layer() -> None:
    source = (ROOT / "trio_uring" / "_ring.c").read_text()
    registered = set(re.findall(r"sys_register\([^,]+, (IORING_\w+)", source))
    # (RESTRICTIONS and ENABLE_RINGS are called from Python, trio_uring/_restrict.py.)
    setup_in_c = {_restrict.REGISTER_RING_FDS}
    assert registered == {_restrict.REGISTER_OP_NAMES[op] for op in BACKEND_REGISTER_OPS | setup_in_c}


def test_constants_match_the_kernel_header() -> None:
    header = Path("/usr/include/linux/io_uring.h")
    if not header.exists():
        pytest.fail("the test needs the kernel headers (linux-libc-dev)")
    text = header.read_text()
    values = {name: int(value) for name, value in re.findall(r"\b(IORING_\w+)\s*=\s*(\d+)", text)}
    assert values["IORING_REGISTER_PROBE"] == _restrict.REGISTER_PROBE
    assert values["IORING_REGISTER_RESTRICTIONS"] == _restrict.REGISTER_RESTRICTIONS
    assert values["IORING_REGISTER_ENABLE_RINGS"] == _restrict.REGISTER_ENABLE_RINGS
    assert values["IORING_REGISTER_PBUF_RING"] == _restrict.REGISTER_PBUF_RING
    assert values["IORING_UNREGISTER_PBUF_RING"] == _restrict.UNREGISTER_PBUF_RING
    assert values["IORING_REGISTER_RING_FDS"] == _restrict.REGISTER_RING_FDS
    assert values["IORING_UNREGISTER_RING_FDS"] == _restrict.UNREGISTER_RING_FDS
    assert values["IORING_RESTRICTION_REGISTER_OP"] == _restrict.RESTRICTION_REGISTER_OP
    assert values["IORING_RESTRICTION_SQE_OP"] == _restrict.RESTRICTION_SQE_OP
    assert values["IORING_RESTRICTION_SQE_FLAGS_ALLOWED"] == _restrict.RESTRICTION_SQE_FLAGS_ALLOWED
    assert re.search(r"#define IORING_SETUP_R_DISABLED\s+\(1U << 6\)", text)
    bits = re.findall(r"^\s*(IOSQE_\w+)_BIT,", text, re.M)
    assert {1 << i: f"{name}" for i, name in enumerate(bits)} == _restrict.SQE_FLAG_NAMES


def test_the_security_page_lists_exactly_what_is_allowed() -> None:
    page = (ROOT / "docs" / "source" / "security.rst").read_text()
    section = page.split(".. allowlist-start", 1)[1].split(".. allowlist-end", 1)[0]
    listed = set(re.findall(r"``(IORING_OP_\w+|IOSQE_\w+|IORING_(?:UN)?REGISTER_\w+)``", section))
    expected = {f"IORING_OP_{op.name}" for op in BACKEND_OPCODES}
    expected |= {name for bit, name in _restrict.SQE_FLAG_NAMES.items() if bit & BACKEND_SQE_FLAGS}
    expected |= {_restrict.REGISTER_OP_NAMES[op] for op in BACKEND_REGISTER_OPS}
    assert listed == expected


def test_the_tight_seccomp_profile_allows_exactly_the_register_ops_trio_uring_makes() -> None:
    page = (ROOT / "docs" / "source" / "security.rst").read_text()
    blocks = re.findall(r"\.\. code-block:: json\n\n((?:   .*\n|\n)+)", page)
    entries = [json.loads("\n".join(line[3:] for line in block.splitlines())) for block in blocks]
    (tight,) = [e for e in entries if isinstance(e, list)]
    allowed = {arg["value"] for e in tight if e["names"] == ["io_uring_register"] for arg in e["args"]}
    assert allowed == set(BACKEND_REGISTER_OPS | _restrict.SETUP_REGISTER_OPS)
    assert all(e["action"] == "SCMP_ACT_ALLOW" for e in tight)


def test_uring_cmd_is_allowed_only_to_programs_that_import_direct_sockets() -> None:
    # URING_CMD reaches drivers' passthrough commands: a program that never uses
    # direct sockets (which set options with it) must not have it.
    script = (
        "from trio_uring import _restrict\n"
        "from trio_uring._ring import Opcode\n"
        "before = Opcode.URING_CMD in _restrict.allowed().opcodes\n"
        "import trio_uring.direct\n"
        "print(before, Opcode.URING_CMD in _restrict.allowed().opcodes)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "True"], proc.stderr
    assert Opcode.URING_CMD not in BACKEND_OPCODES
