"""Every shell command the docs show runs, and succeeds.

The docs put commands in ``.. code-block:: sh`` (synopses and output go in ``text``
blocks). Each line of such a block is run with bash, in a scratch directory that holds
what the examples refer to (``app.py``, a copy of ``examples/``), with this
installation's ``python``, ``pytest`` and ``trio-uring`` first on PATH. A command that
cannot run here is in SKIP, with the reason, in plain sight.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "source"
TIMEOUT = 120

SKIP = {
    "pip install .": "installs into this environment (tests/test_cli.py builds the wheel instead)",
    "python -m trio_uring demo": "takes ~20 s; `demo -c 16 -d 0.5 -r 1`, also in the docs, runs the same code",
    "python -m trio_uring run --verbose -m hypercorn --worker-class trio --workers 4 myapp:app": (
        "a server that runs until stopped (tests/test_children.py runs it with two workers)"
    ),
    "docker run --security-opt seccomp=/path/to/profile-with-io_uring.json ...": "needs Docker and a profile",
    (
        "curl -fsSL https://raw.githubusercontent.com/moby/moby/master/profiles/seccomp/default.json    | jq"
        """ '.syscalls += [{"names": ["io_uring_setup", "io_uring_enter", "io_uring_register"],"""
        """ "action": "SCMP_ACT_ALLOW"}]'    > seccomp-io_uring.json"""
    ): "downloads Docker's profile (no internet here); tests/test_restrict.py checks the JSON entry it adds",
    "docker run --security-opt seccomp=seccomp-io_uring.json IMAGE": "needs Docker and the profile above",
    "sysctl -w kernel.io_uring_disabled=0": "changes the host's configuration, as root",
    "sysctl -w kernel.io_uring_group=<gid>": "changes the host's configuration, as root",
}

# The program the examples call app.py: it says which backend its run is on.
APP = """\
import trio

async def main():
    print("this run is on", trio.lowlevel.current_statistics().io_statistics.backend)

trio.run(main)
"""

# Lines that look like a shell command; in a literal block (::) they would escape this test.
SHELL_LIKE = re.compile(r"^\s*(python|pip|pytest|trio-uring|TRIO_URING\w*=|make|docker|sysctl)\b")


def _blocks() -> list[tuple[str, str, list[str]]]:
    """(file, language, lines) for each code block and literal block in the docs."""
    blocks = []
    for path in sorted(DOCS.glob("*.rst")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"^\s*\.\. code-block:: *(\S+)", line)
            if match:
                language = match.group(1)
            elif line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
                language = "literal"
            else:
                continue
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith((" ", "\t")):
                    break
                body.append(following)
            text = "\n".join(body).strip("\n")
            indent = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=0)
            blocks.append((path.name, language, [b[indent:] for b in text.splitlines()]))
    return blocks


def _commands() -> list[tuple[str, str]]:
    commands = []
    for name, language, lines in _blocks():
        if language not in ("sh", "console"):
            continue
        pending = ""
        for line in lines:
            line = line.removeprefix("$ ") if language == "console" else line
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            commands.append((name, pending + line.split("  #")[0].rstrip()))
            pending = ""
    return commands


COMMANDS = _commands()


def test_the_docs_show_commands() -> None:
    files = {name for name, _ in COMMANDS}
    assert {"cli.rst", "quickstart.rst", "pytest.rst", "unavailable.rst"} <= files
    assert len(COMMANDS) >= 15


def test_no_shell_command_hides_in_a_literal_block() -> None:
    hidden = [
        (name, line)
        for name, language, lines in _blocks()
        if language == "literal"
        for line in lines
        if SHELL_LIKE.match(line)
    ]
    assert hidden == [], "use `.. code-block:: sh` for commands, so this test runs them"


def test_every_skip_is_still_in_the_docs() -> None:
    assert set(SKIP) <= {command for _, command in COMMANDS}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("docs")
    (path / "app.py").write_text(APP)
    shutil.copytree(ROOT / "examples", path / "examples")
    return path


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}: {c}" for p, c in COMMANDS])
def test_command(page: str, command: str, scratch: Path) -> None:
    if command in SKIP:
        pytest.skip(SKIP[command])
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["XDG_CACHE_HOME"] = str(scratch / "cache")  # the demo's compiled client goes there
    for name in ("TRIO_URING", "TRIO_URING_VERBOSE", "TRIO_URING_SPIN_US"):
        env.pop(name, None)
    proc = subprocess.Popen(
        ["bash", "-c", "set -o pipefail\n" + command], cwd=scratch, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"{page}: `{command}` exited with {proc.returncode}:\n{out}"
    assert "Traceback" not in out, out


def test_the_lifecycle_diagram_is_drawn_from_the_state_table() -> None:
    # The diagram in how-it-works is generated from _lifecycle.TRANSITIONS; a change to
    # the table without regenerating it fails here.
    proc = subprocess.run(
        [sys.executable, str(DOCS / "make_lifecycle_diagram.py"), "--check"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
