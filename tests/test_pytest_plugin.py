"""The pytest plugin: --trio-backend / trio_backend put pytest-trio suites on io_uring."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .test_cli import ROOT, env

TEST_FILE = """
import trio

async def test_backend():
    backend = trio.lowlevel.current_statistics().io_statistics.backend
    print("BACKEND=" + backend)

def test_trio_run_too():
    async def main():
        return trio.lowlevel.current_statistics().io_statistics.backend
    print("PLAIN=" + trio.run(main))
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_it=TEST_FILE)
    return pytester


def backends(result: pytest.RunResult) -> list[str]:
    return sorted(line.split("=", 1)[1] for line in result.outlines if "BACKEND=" in line or "PLAIN=" in line)


def test_option_selects_io_uring(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\ntrio_mode = true\n")
    result = suite.runpytest_subprocess("--trio-backend=uring", "-s")
    result.assert_outcomes(passed=2)
    assert backends(result) == ["io_uring", "io_uring"]
    result.stdout.fnmatch_lines(["trio backend: io_uring (trio_uring)"])


def test_ini_selects_io_uring(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\ntrio_mode = true\ntrio_backend = uring\n")
    result = suite.runpytest_subprocess("-s")
    result.assert_outcomes(passed=2)
    assert backends(result) == ["io_uring", "io_uring"]


def test_default_leaves_trio_alone(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\ntrio_mode = true\n")
    result = suite.runpytest_subprocess("-s")
    result.assert_outcomes(passed=2)
    assert backends(result) == ["epoll", "epoll"]


def test_option_overrides_ini(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\ntrio_mode = true\ntrio_backend = uring\n")
    result = suite.runpytest_subprocess("--trio-backend=trio", "-s")
    result.assert_outcomes(passed=2)
    assert backends(result) == ["epoll", "epoll"]


def test_bad_ini_value_is_a_usage_error(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\ntrio_mode = true\ntrio_backend = iouring\n")
    result = suite.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*trio_backend must be one of trio, uring, uring-or-epoll*"])


def test_header_says_when_it_fell_back_to_epoll(suite: pytest.Pytester) -> None:
    """--trio-backend=uring-or-epoll where io_uring is refused (a seccomp filter, as in a
    container): the tests run on epoll, and the header says so and why."""
    suite.makeini("[pytest]\ntrio_mode = true\n")
    pytest_argv = [sys.executable, "-m", "pytest", "--trio-backend=uring-or-epoll", "-s", "-p", "no:cacheprovider"]
    code = (
        "import errno, os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.seccomp import refuse_io_uring\n"
        "refuse_io_uring(errno.EPERM)\n"
        f"os.execv(sys.executable, {pytest_argv!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=suite.path, capture_output=True, text=True, timeout=60, env=env()
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BACKEND=epoll" in proc.stdout and "PLAIN=epoll" in proc.stdout
    header = [line for line in proc.stdout.splitlines() if line.startswith("trio backend:")]
    assert len(header) == 1, proc.stdout
    assert header[0].startswith(
        "trio backend: epoll (trio_uring fell back: io_uring is unavailable: io_uring_setup() failed with EPERM"
    )
