"""cffi (API mode) builder for trio_uring's C ring layer, ``trio_uring._ring_cffi``.

Run at install time through setup.py's ``cffi_modules``; it compiles ``_ring.c``
(raw syscalls, no liburing) with the machine's gcc and Python headers. The
declarations come from the table in ``_ring_api.py``, the one place a C function or
an opcode's SQE fields are declared.
"""

from __future__ import annotations

import importlib.util
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

# Loaded by path: the package is not importable while it is being built.
_spec = importlib.util.spec_from_file_location("_trio_uring_ring_api", os.path.join(HERE, "_ring_api.py"))
assert _spec is not None and _spec.loader is not None
api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api)

ffibuilder = FFI()
ffibuilder.cdef(api.cdef())
ffibuilder.set_source(
    "trio_uring._ring_cffi",
    '#include "_ring.h"',
    sources=[os.path.relpath(os.path.join(HERE, "_ring.c"))],
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.dirname(HERE), verbose=True)
