"""Install a seccomp filter that makes io_uring_setup(2) fail with a chosen errno.

Used by tests in a child process (``python -c``), to exercise the real error path a
container's default seccomp profile produces, without mocking anything:

    import tests.seccomp; tests.seccomp.refuse_io_uring(errno.EPERM)
"""

from __future__ import annotations

import ctypes
import struct

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
NR_IO_URING_SETUP = 425  # the same on every architecture (unified syscall table)

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def refuse_io_uring(err: int) -> None:
    program = b"".join(
        [
            _insn(BPF_LD_W_ABS, 0, 0, 0),  # A = seccomp_data.nr
            _insn(BPF_JEQ_K, 0, 1, NR_IO_URING_SETUP),
            _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err),
            _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ]
    )
    filters = ctypes.create_string_buffer(program)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(program) // 8, ctypes.addressof(filters))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
