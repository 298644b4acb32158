"""pytest plugin (``pytest11`` entry point): run a test suite's Trio code on io_uring.

    pytest --trio-backend=uring          # or, in the ini file:  trio_backend = uring

installs the backend for the whole session (`trio_uring.install`), so every
pytest-trio test, ``trio.testing.trio_test`` and plain ``trio.run`` in the tests use
io_uring. The default, ``trio``, leaves Trio alone. If io_uring is unavailable the
session stops with the reason (`trio_uring.UringUnavailableError`), unless
``--trio-backend=uring-or-epoll`` asked for the epoll fallback.
"""

from __future__ import annotations

import pytest

from ._install import fallback_reason, install, is_installed, uninstall
from ._ring import UringUnavailableError

BACKENDS = ("trio", "uring", "uring-or-epoll")
_INSTALLED_BY_US = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trio_uring", "Trio on io_uring")
    group.addoption(
        "--trio-backend",
        choices=BACKENDS,
        default=None,
        help="Trio I/O backend for this session: 'trio' (Trio's own, the default), "
        "'uring' (io_uring, fail if unavailable) or 'uring-or-epoll' (io_uring, "
        "or epoll with a warning). Overrides the trio_backend ini setting.",
    )
    parser.addini("trio_backend", "Trio I/O backend: trio, uring or uring-or-epoll", default="trio")


def pytest_configure(config: pytest.Config) -> None:
    backend = config.getoption("--trio-backend") or config.getini("trio_backend")
    if backend not in BACKENDS:
        raise pytest.UsageError(f"trio_backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    config.stash[_INSTALLED_BY_US] = False
    if backend == "trio" or is_installed():
        return
    try:
        installed = install(fallback=backend == "uring-or-epoll")
    except UringUnavailableError as exc:
        raise pytest.UsageError(f"--trio-backend=uring: {exc}") from None
    config.stash[_INSTALLED_BY_US] = installed


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_INSTALLED_BY_US, False):
        uninstall()


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.stash.get(_INSTALLED_BY_US, False) or is_installed():
        return "trio backend: io_uring (trio_uring)"
    reason = fallback_reason()
    if reason is not None:  # --trio-backend=uring-or-epoll, and io_uring was refused
        return f"trio backend: epoll (trio_uring fell back: {reason.strerror or reason})"
    return None
