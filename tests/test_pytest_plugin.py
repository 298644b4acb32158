"""The pytest plugin: --trio-backend / trio_backend put pytest-trio suites on io_uring."""

from __future__ import annotations

import pytest

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
