"""Install a seccomp filter that makes io_uring_setup(2), or chosen io_uring_register(2)
opcodes, fail with a chosen errno.

Used by tests in a child process (``python -c``), to exercise the real error path a
container's default seccomp profile produces, without mocking anything:

    import tests.seccomp; tests.seccomp.refuse_io_uring(errno.EPERM)
    import tests.seccomp; tests.seccomp.refuse_register_ops({11}, errno.EPERM)
"""

from __future__ import annotations

import ctypes
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
NR_IO_URING_SETUP = 425  # the same on every architecture (unified syscall table)
NR_IO_URING_REGISTER = 427
# struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6]. The low 32 bits of
# args[1] (io_uring_register's opcode) on a little-endian machine:
OFFSET_ARG1_LOW = 16 + 8 + (0 if sys.byteorder == "little" else 4)

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def refuse_io_uring(err: int) -> None:
    _install(
        [
            _insn(BPF_LD_W_ABS, 0, 0, 0),  # A = seccomp_data.nr
            _insn(BPF_JEQ_K, 0, 1, NR_IO_URING_SETUP),
            _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err),
            _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ]
    )


def refuse_register_ops(opcodes: set[int], err: int) -> None:
    """io_uring_register(fd, OP, ...) fails with ``err`` for each OP in ``opcodes``."""
    k = len(opcodes)
    # Jump offsets count from the next instruction: the checks sit at 3..3+k-1,
    # "allow" at 3+k, "refuse" at 4+k.
    _install(
        [
            _insn(BPF_LD_W_ABS, 0, 0, 0),  # A = seccomp_data.nr
            _insn(BPF_JEQ_K, 0, k + 1, NR_IO_URING_REGISTER),  # another syscall: allow
            _insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARG1_LOW),  # A = the register opcode
            *(_insn(BPF_JEQ_K, k - i, 0, op) for i, op in enumerate(sorted(opcodes))),
            _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err),
        ]
    )


def _install(instructions: list[bytes]) -> None:
    program = b"".join(instructions)
    filters = ctypes.create_string_buffer(program)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(program) // 8, ctypes.addressof(filters))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
