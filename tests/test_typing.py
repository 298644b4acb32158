"""Types match Trio's: mypy checks tests/typing/signatures.py (whose expected errors are
marked, and must occur), and reports a wrong argument to trio_uring.run as it does for
trio.run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    # mypy comes with the lint extra, which `make test-ours` installs.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores", "--no-error-summary", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_signatures_match_trios() -> None:
    proc = mypy("tests/typing/signatures.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_wrong_argument_is_reported_as_for_trio_run(tmp_path: Path) -> None:
    (tmp_path / "wrong.py").write_text(
        "import trio, trio_uring\n"
        "async def main(x: int) -> None: ...\n"
        'trio_uring.run(main, "wrong")\n'
        'trio.run(main, "wrong")\n'
    )
    proc = mypy(str(tmp_path / "wrong.py"))
    assert proc.returncode == 1
    errors = re.findall(r"^.*wrong\.py:(\d+): error: (.*)$", proc.stdout, re.M)
    assert [line for line, _ in errors] == ["3", "4"], proc.stdout
    assert errors[0][1] == errors[1][1] == (
        'Argument 1 to "run" has incompatible type "Callable[[int], Coroutine[Any, Any, None]]"; '
        'expected "Callable[[str], Awaitable[None]]"  [arg-type]'
    )
