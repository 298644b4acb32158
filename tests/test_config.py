"""The environment variables (trio_uring._config): every value is understood, or refused
with a message that names the variable and what it accepts. (TRIO_URING at start-up,
through the .pth file, is tested in test_cli.py.)"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest
import trio

import trio_uring
from trio_uring._config import FALSE_WORDS, TRUE_WORDS, env_flag, env_microseconds

from .test_cli import PTH

FLAG_ERROR = (
    r"^X_FLAG='{}' is not understood: use 1, true, yes, on to turn it on, "
    r"0, false, no, off or empty to turn it off \(any case\)$"
)


@pytest.mark.parametrize("value", ["1", "true", "True", "YES", "on", " on\n"])
def test_flag_true_words(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("X_FLAG", value)
    assert env_flag("X_FLAG") is True


@pytest.mark.parametrize("value", ["", " ", "0", "false", "FALSE", "No", "off"])
def test_flag_false_words(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("X_FLAG", value)
    assert env_flag("X_FLAG") is False


def test_flag_unset_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_FLAG", raising=False)
    assert env_flag("X_FLAG") is False


@pytest.mark.parametrize("value", ["2", "-1", "y", "n", "enable", "disabled", "truee", "o n"])
def test_flag_anything_else_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("X_FLAG", value)
    with pytest.raises(ValueError, match=FLAG_ERROR.format(value)):
        env_flag("X_FLAG")


def test_the_pth_line_skips_exactly_the_false_words() -> None:
    """The .pth line decides "off" by itself (so that off imports nothing): with the
    same words as env_flag."""
    line = (Path(sysconfig.get_paths()["purelib"]) / PTH).read_text()
    assert f".strip().lower() not in {FALSE_WORDS!r} and " in line
    assert not set(TRUE_WORDS) & set(FALSE_WORDS)


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("30", 30.0), (" 2.5 ", 2.5), ("1e3", 1000.0), ("", 7.0)])
def test_microseconds(monkeypatch: pytest.MonkeyPatch, value: str, expected: float) -> None:
    monkeypatch.setenv("X_US", value)
    assert env_microseconds("X_US", 7.0) == expected
    monkeypatch.delenv("X_US")
    assert env_microseconds("X_US", 7.0) == 7.0


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "30us", "1,5"])
def test_microseconds_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("X_US", value)
    with pytest.raises(ValueError) as info:
        env_microseconds("X_US", 7.0)
    assert str(info.value) == f"X_US={value!r} is not understood: use a number of microseconds >= 0 (0 turns it off)"


async def _nothing() -> None:
    pass


def test_spin_us_bad_value_fails_the_run_clearly_and_leaks_nothing(
    stock_trio: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIO_URING_SPIN_US", "abc")
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(ValueError, match=r"^TRIO_URING_SPIN_US='abc' is not understood: use a number"):
            trio_uring.run(_nothing)
    assert len(os.listdir("/proc/self/fd")) == fds  # no ring, no eventfd left behind
    monkeypatch.setenv("TRIO_URING_SPIN_US", "0")
    trio_uring.run(_nothing)
    trio.run(_nothing)  # Trio's own backend does not read it
