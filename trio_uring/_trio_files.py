"""Unchanged code that calls ``trio.open_file`` / ``trio.Path`` on the ring (opt-in).

`use_ring_files` (or ``TRIO_URING_TRIO_FILES=1`` in the environment) points
``trio.open_file`` at `trio_uring.open_file`, and the methods of ``trio.Path`` that
`trio_uring.Path` does through the ring at its versions. They check the backend at
every call: under any other backend, or where the kernel lacks an op, they are Trio's.

It is opt-in, unlike the streams' short path (``_stream.py``), because the results,
though what the io docs promise, are not always the very ones Trio gives (see
``docs/source/files.rst``: a buffered write is on disk when it returns, ``read1`` and
``peek`` do not see a buffer). Code that did ``from trio import open_file`` before the
switch keeps the function it imported.
"""

from __future__ import annotations

import trio

from ._config import env_flag
from ._files import open_file, trio_open_file
from ._path import RING_METHODS, TRIO_PATH, Path

__all__ = ["use_ring_files"]


def use_ring_files(enabled: bool) -> None:
    """Make ``trio.open_file`` and ``trio.Path``'s file methods take the ring on the
    io_uring backend (``True``), or give Trio's back (``False``, the default)."""
    trio.open_file = open_file if enabled else trio_open_file
    for name in RING_METHODS:
        setattr(trio.Path, name, Path.__dict__[name] if enabled else TRIO_PATH[name])


if env_flag("TRIO_URING_TRIO_FILES", default=False):
    use_ring_files(True)
