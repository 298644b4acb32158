"""Run the test suite shipped inside the installed trio package on the io_uring backend.

    python tests/trio_suite/run.py [extra pytest args]

Runs from an empty directory (as Trio's own CI does) with Trio's pytest settings,
``--trio-backend=uring`` (our pytest plugin installs the backend for the session),
and deselects the tests listed in allowances.txt. Exits with pytest's status.
Needs Trio's test dependencies (the ``test`` extra) and *not* hypothesis, whose
pytest plugin changes reprs that test_testing_raisesgroup.py checks (it fails on
stock Trio too when hypothesis is installed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def allowances() -> list[tuple[str, str]]:
    out = []
    with open(os.path.join(HERE, "allowances.txt")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                test_id, _, reason = line.partition(" -- ")
                out.append((test_id.strip(), reason.strip()))
    return out


def main() -> int:
    import trio

    trio_dir = os.path.dirname(trio.__file__)
    args = [
        sys.executable, "-m", "pytest",
        "-c", os.path.join(HERE, "pytest.ini"),
        "--rootdir", trio_dir,
        "-p", "trio._tests.pytest_plugin",
        "--run-slow", "--skip-optional-imports",
        "--trio-backend=uring",
        "-q", "-ra",
    ]
    for test_id, _reason in allowances():
        args += ["--deselect", test_id]
    args += [*sys.argv[1:], trio_dir]
    print("Trio's own test suite on io_uring; allowances:", file=sys.stderr)
    for test_id, reason in allowances():
        print(f"  {test_id}: {reason}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.call(args, cwd=empty, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    # A job started in the background by a non-interactive shell (as CI runners
    # may do) inherits SIGINT ignored; Python keeps it ignored, Trio then installs
    # no KeyboardInterrupt handler, and Trio's KI tests wait forever (on stock
    # Trio too). The suite needs SIGINT at its default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
