"""The Trio version policy: trio_uring runs on a tested Trio with its private internals
in place, and otherwise refuses before the run (or falls back to epoll) naming the
versions; never a crash inside Trio's run loop."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys

import pytest
import trio

import trio_uring
from trio_uring._trio_contract import NEWEST_TESTED_TRIO, OLDEST_TRIO, TESTED_TRIO, trio_problems

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)

# Run in a fresh interpreter: `before` changes Trio, then trio_uring is imported.
PROGRAM = """
import os, warnings
import trio
{before}
import trio_uring

async def main():
    return trio.lowlevel.current_statistics().io_statistics.backend

try:
    print("run:", trio_uring.run(main))
except trio_uring.UringUnavailableError as exc:
    print("refused:", exc)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print("install(fallback=True):", trio_uring.install(fallback=True))
print("warned:", [str(w.message) for w in caught])
if {trio_still_works}:
    print("trio.run:", trio.run(main))
"""


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_URING")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**environ, **env}
    )


def run_program(before: str, trio_still_works: bool = True, **env: str) -> dict[str, str]:
    proc = run_python(PROGRAM.format(before=before, trio_still_works=trio_still_works), **env)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines())


def test_this_trio_is_tested_and_passes_the_check() -> None:
    assert trio_problems(trio_uring.UringIOManager) == []
    trio_uring.check_available()
    assert f"Trio {OLDEST_TRIO.rsplit('.', 1)[0]} to {NEWEST_TESTED_TRIO}" == TESTED_TRIO


def test_dependency_and_make_target_follow_the_oldest_tested_trio() -> None:
    # The lower bound users get is the Trio `make test-oldest-trio` tests; no upper bound.
    requires = [
        r for r in importlib.metadata.requires("trio-uring") or [] if re.match(r"trio[<>=!~ ;]", r) and "extra" not in r
    ]
    assert requires == [f"trio>={OLDEST_TRIO}"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}  # when run by make
    make = subprocess.run(
        ["make", "--dry-run", "--always-make", "test-oldest-trio"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=environ,
    )
    assert f"'trio=={OLDEST_TRIO}'" in make.stdout


# Each one changes Trio the way a release might (as far as the check can see).
CHANGES = {
    "a new I/O manager hook": (
        "trio._core._io_epoll.EpollIOManager.wait_soon = lambda self: None",
        "hooks trio_uring does not implement: wait_soon",
    ),
    "setup_runner builds the I/O manager some other way": (
        "setup_runner = trio._core._run.setup_runner\n"
        "trio._core._run.setup_runner = lambda *args, **kwargs: setup_runner(*args, **kwargs)",
        "setup_runner no longer builds the I/O manager from TheIOManager",
    ),
    "a private socket method renamed": (
        "trio._socket._SocketType._resolve_address = trio._socket._SocketType._resolve_address_nocp\n"
        "del trio._socket._SocketType._resolve_address_nocp",
        "_SocketType._resolve_address_nocp is gone",
    ),
    # Trio itself cannot run without it: only the refusal is checked.
    "Runner.reschedule renamed": ("del trio._core._run.Runner.reschedule", "Runner has no reschedule() method"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_moved_internals_refuse_before_the_run_or_fall_back(change: str) -> None:
    before, named = CHANGES[change]
    trio_still_works = "Runner" not in change
    out = run_program(f"import trio._core._io_epoll, trio._socket\n{before}", trio_still_works)
    refused = out["refused"]
    assert f"trio_uring cannot use Trio {trio.__version__}: " in refused
    assert named in refused
    assert f"tested with {TESTED_TRIO}" in refused
    assert f"pip install 'trio>={OLDEST_TRIO}," in refused
    # install(fallback=True) (TRIO_URING=1, --trio-backend=uring-or-epoll): a warning, epoll.
    assert out["install(fallback=True)"] == "False"
    assert named in out["warned"]
    if trio_still_works:
        assert out["trio.run"] == "epoll"


def test_untested_trio_version_refuses_unless_asked() -> None:
    newer = "trio.__version__ = '0.99.0'"
    out = run_program(newer)
    assert "cannot use Trio 0.99.0: it is outside the tested range" in out["refused"]
    assert "TRIO_URING_UNTESTED_TRIO=1" in out["refused"]
    assert (out["install(fallback=True)"], out["trio.run"]) == ("False", "epoll")

    out = run_program(newer, TRIO_URING_UNTESTED_TRIO="1")
    assert out["run"] == "io_uring"
    assert (out["install(fallback=True)"], out["trio.run"]) == ("True", "io_uring")

    older = f"trio.__version__ = '0.{int(OLDEST_TRIO.split('.')[1]) - 1}.0'"
    assert "outside the tested range" in run_program(older)["refused"]


def test_untested_trio_variable_rejects_unknown_words() -> None:
    proc = run_python(
        PROGRAM.format(before="trio.__version__ = '0.99.0'", trio_still_works=True), TRIO_URING_UNTESTED_TRIO="maybe"
    )
    assert proc.returncode == 1
    expected = "ValueError: TRIO_URING_UNTESTED_TRIO='maybe' is not understood: use 1, true, yes, on to turn it on"
    assert expected in proc.stderr


def test_a_trio_without_what_we_import_fails_the_import_clearly() -> None:
    proc = run_python("import trio._socket\ndel trio._socket._SocketType\nimport trio_uring")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: trio_uring cannot use Trio {trio.__version__}: ")
    assert "trio._socket._SocketType is gone" in last and f"tested with {TESTED_TRIO}" in last
