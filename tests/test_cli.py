"""The command line: ``python -m trio_uring`` / ``trio-uring`` check, demo and run, and TRIO_URING=1.

Everything runs in real subprocesses. "io_uring refused" is real too: a seccomp
filter (tests/seccomp.py) makes io_uring_setup fail in the child, as a container's
default profile does. Every way a command can end is checked for its exit status and
for the absence of a traceback.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import trio

from trio_uring._cli import main
from trio_uring._requirements import REQUIRED_OPCODES, USED_OPCODES, kernel_version

from .conftest import default_sigint

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
PTH = "trio_uring-autoinstall.pth"

# A script that says where and how it runs.
WHERE = """
import sys, trio
async def main():
    return trio.lowlevel.current_statistics().io_statistics.backend
print("backend", trio.run(main))
print("name", __name__)
print("argv", sys.argv[1:])
print("path0", sys.path[0])
"""


def env(**changes: str | None) -> dict[str, str]:
    result = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result.pop("TRIO_URING", None)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def python(
    *args: str, cwd: Path = ROOT, refuse_io_uring: bool = False, **env_changes: str | None
) -> subprocess.CompletedProcess[str]:
    """``python *args`` in a child; with ``refuse_io_uring``, under a seccomp filter
    that makes io_uring_setup fail with EPERM (installed, then exec'd into)."""
    child_env = env(**env_changes)
    argv = [sys.executable, *args]
    if refuse_io_uring:
        argv = [
            sys.executable, "-c",
            "import errno, os, sys\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "from tests.seccomp import refuse_io_uring\n"
            "refuse_io_uring(errno.EPERM)\n"
            f"os.execve(sys.executable, {argv!r}, {child_env!r})\n",
        ]  # fmt: skip
    # (The seccomp wrapper itself runs without TRIO_URING; the exec'd child gets it.)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, env=env() if refuse_io_uring else child_env
    )


def cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return python("-m", "trio_uring", *args, **kwargs)  # type: ignore[arg-type]


def lines(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The ``key value`` lines WHERE prints."""
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


# ---------------------------------------------------------------- check


def test_check_reports_the_machine_and_every_op_the_backend_uses() -> None:
    proc = cli("check")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    out = proc.stdout
    assert re.search(r"^kernel: +Linux \S+ \(\S+\); needs >= 6\.1: ok$", out, re.M)
    assert re.search(r"^io_uring_disabled: +(0 \(io_uring allowed\)|n/a .*)$", out, re.M)
    assert re.search(r"^seccomp: +none$", out, re.M)
    assert re.search(r"^io_uring: +available \(ring fd \d+, setup flags 0x[0-9a-f]+: .*CLAMP.*\)$", out, re.M)
    for feature in ("NODROP", "SUBMIT_STABLE", "FAST_POLL", "EXT_ARG"):
        assert re.search(rf"^  {feature} +[\d.]+ +yes +required$", out, re.M), feature
    for op in ("POLL_ADD", "ASYNC_CANCEL", "READ", "SOCKET", "CONNECT", "ACCEPT", "SEND", "SENDMSG", "RECV", "RECVMSG"):
        assert re.search(rf"^  IORING_OP_{op} +[\d.]+ +yes +\S", out, re.M), op
    assert re.search(r"^  multishot ACCEPT +5\.19 +yes ", out, re.M)


def test_check_explains_why_io_uring_is_unavailable() -> None:
    proc = cli("check", refuse_io_uring=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^seccomp: +filter", proc.stdout, re.M)
    assert re.search(r"^io_uring: +UNAVAILABLE$", proc.stdout, re.M)
    message = " ".join(proc.stdout.split("UNAVAILABLE", 1)[1].split())
    assert "io_uring_setup() failed with EPERM" in message
    assert "--security-opt seccomp=" in message


def test_used_opcodes_cover_the_required_ones() -> None:
    assert set(REQUIRED_OPCODES) <= set(USED_OPCODES)


async def test_used_opcodes_cover_what_a_socket_workout_submits() -> None:
    """Drift guard: every opcode a run submits is in the check's table."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = trio.socket.socket()
    await client.connect(listener.getsockname())
    server, _ = await listener.accept()
    await client.send(b"a")
    assert await server.recv(1) == b"a"
    await client.sendmsg([b"b"])
    assert (await server.recvmsg(1))[0] == b"b"
    with trio.move_on_after(0.01):
        await server.recv(1)  # cancelled: ASYNC_CANCEL
    await trio.lowlevel.wait_writable(client)
    for sock in (listener, client, server):
        sock.close()
    stats = trio.lowlevel.current_statistics().io_statistics
    submitted = set(stats.ops_submitted)
    assert submitted <= {op.name for op in USED_OPCODES}, submitted
    assert {"SOCKET", "CONNECT", "ACCEPT", "POLL_ADD", "ASYNC_CANCEL"} <= submitted


def test_kernel_version_parsing() -> None:
    assert kernel_version("6.18.44-fc-v669") == (6, 18)
    assert kernel_version("5.4.0-150-generic") == (5, 4)
    assert kernel_version("weird") is None


def test_console_script() -> None:
    script = shutil.which("trio-uring", path=os.path.dirname(sys.executable))
    assert script is not None, "no trio-uring console script next to this Python: reinstall trio_uring"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=TIMEOUT, env=env())
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: trio-uring ")
    assert "{check,demo,run}" in proc.stdout
    proc = subprocess.run([script, "check"], capture_output=True, text=True, timeout=TIMEOUT, env=env())
    assert proc.returncode == 0 and "IORING_OP_RECVMSG" in proc.stdout


# ---------------------------------------------------------------- demo


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def test_no_arguments_runs_the_check_and_says_what_next() -> None:
    proc = cli()
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    check, _, after = proc.stdout.partition("\nNext:\n")
    assert "IORING_OP_RECVMSG" in check
    assert re.search(r"^  python -m trio_uring demo +\S", after, re.M)
    assert re.search(r"^  python -m trio_uring run app\.py +\S", after, re.M)


def test_no_arguments_without_io_uring_says_why_and_fails() -> None:
    proc = cli(refuse_io_uring=True)
    assert proc.returncode == 1
    assert "UNAVAILABLE" in proc.stdout and "Next:" not in proc.stdout
    no_traceback(proc)


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout == f"trio_uring 0.1.0 (Trio {trio.__version__}, Python {sys.version.split()[0]})\n"


def test_help_for_every_command() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for command in ("check", "demo", "run"):
        assert re.search(rf"^    {command} +\S", top.stdout, re.M), top.stdout  # a line of help each
    assert "--connections" not in top.stdout  # demo's options are demo's
    assert "_echo" not in top.stdout
    check = cli("check", "--help")
    assert check.returncode == 0 and "Exit status 0 if io_uring can be used" in check.stdout
    demo = cli("demo", "--help")
    assert demo.returncode == 0
    for option in ("-c CONNECTIONS, --connections CONNECTIONS", "-d SECONDS, --duration SECONDS", "-r ROUNDS"):
        assert option in demo.stdout
    run = cli("run", "--help")
    assert run.returncode == 0 and "--verbose" in run.stdout and "--fallback" in run.stdout


COMMANDS = "{check,demo,run}"
CHOOSE = "(choose from 'check', 'demo', 'run')"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], f"argument {COMMANDS}: invalid choice: 'bogus' {CHOOSE}"),
        (["_echo-server", "epoll", "x"], f"argument {COMMANDS}: invalid choice: '_echo-server' {CHOOSE}"),
        (["--connections=4", "demo"], "unrecognized arguments: --connections=4"),  # demo's, after `demo`
        (["check", "-d", "1"], "unrecognized arguments: -d 1"),
        (["demo", "-d", "0"], "argument -d/--duration: must be more than 0 and at most 3600, not 0"),
        (["demo", "-d", "-1"], "argument -d/--duration: must be more than 0 and at most 3600, not -1"),
        (["demo", "-d", "nan"], "argument -d/--duration: must be more than 0 and at most 3600, not nan"),
        (["demo", "-d", "inf"], "argument -d/--duration: must be more than 0 and at most 3600, not inf"),
        (["demo", "-d", "soon"], "argument -d/--duration: 'soon' is not a number"),
        (["demo", "-r", "0"], "argument -r/--rounds: must be at least 1 and at most 100, not 0"),
        (["demo", "-r", "1.5"], "argument -r/--rounds: '1.5' is not a whole number"),
        (["demo", "-c", "-1"], "argument -c/--connections: must be at least 1 and at most 10000, not -1"),
        (["demo", "-c", "0"], "argument -c/--connections: must be at least 1 and at most 10000, not 0"),
        (["demo", "-c", "many"], "argument -c/--connections: 'many' is not a whole number"),
        (["demo", "-c", "10001"], "argument -c/--connections: must be at least 1 and at most 10000, not 10001"),
        (["demo", "-c"], "argument -c/--connections: expected one argument"),
        (["demo", "extra"], "unrecognized arguments: extra"),
    ],
)
def test_argument_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # In this process, for speed: argparse's exit is a SystemExit, which the next test
    # shows ends the process with the message and no traceback.
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    assert (exit_info.value.code, out) == (2, "")
    assert err.startswith("usage: python -m trio_uring")
    assert err.rstrip("\n").endswith(": error: " + message), err


def test_argument_errors_in_a_process() -> None:
    for args in (["demo", "-d", "0"], ["demo", "-c", "many"], ["bogus"]):
        proc = cli(*args)
        assert (proc.returncode, proc.stdout) == (2, "")
        assert proc.stderr.startswith("usage: ")
        assert ": error: " in proc.stderr.splitlines()[-1]
        no_traceback(proc)


def test_demo_connections_beyond_the_open_file_limit() -> None:
    proc = python(
        "-c",
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
        "from trio_uring._cli import main; sys.exit(main(['demo', '-c', '1000']))",
    )
    assert proc.returncode == 2
    assert proc.stderr.rstrip().endswith(
        "error: -c 1000: more connections than the open-file limit allows (ulimit -n is 256)"
    )
    no_traceback(proc)


def test_demo_compares_epoll_and_io_uring(tmp_path: Path) -> None:
    """And builds its C client once per source version, into the cache, removing stale builds."""
    cache = tmp_path / "trio_uring"
    cache.mkdir()
    for stale in ("demo_client-1796236676", "demo_client-0123456789abcdef"):
        (cache / stale).write_text("an old build")
    (cache / "unrelated").write_text("")
    proc = cli("demo", "-c", "4", "-d", "0.3", "-r", "1", XDG_CACHE_HOME=str(tmp_path))
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    digest = hashlib.sha256((ROOT / "trio_uring" / "demo_client.c").read_bytes()).hexdigest()[:16]
    assert sorted(p.name for p in cache.iterdir()) == [f"demo_client-{digest}", "unrelated"]
    assert proc.stdout.startswith(f"Compiling the demo's C client into {cache}/ (once) ...\n")
    assert "driven by a C client" in proc.stdout
    for form in ("epoll", "io_uring"):
        line = rf"^  round 1/1  {form} +[\d,]+ round trips/s +[\d.]+ µs server CPU each$"
        assert re.search(line, proc.stdout, re.M), proc.stdout
    for label in ("trio.serve_tcp on Trio's epoll", "trio.serve_tcp on io_uring"):
        row = rf"^  {label} +[1-9][\d,]* +[\d.]+x +[\d.]+ µs +[\d.]+x +0$"
        assert re.search(row, proc.stdout, re.M), proc.stdout
    assert "How to read it:" in proc.stdout

    again = cli("demo", "-c", "1", "-d", "0.1", "-r", "1", XDG_CACHE_HOME=str(tmp_path))
    assert again.returncode == 0 and "Compiling" not in again.stdout  # cached


def test_demo_without_io_uring_says_why() -> None:
    proc = cli("demo", "-d", "0.1", refuse_io_uring=True)
    assert proc.returncode == 1
    assert "io_uring_setup() failed with EPERM" in proc.stderr
    no_traceback(proc)


def interrupt(
    args: list[str], ready: str, children: int = 0, cwd: Path = ROOT, **env_changes: str
) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """Start ``python -m trio_uring *args`` as a terminal would, wait for ``ready`` on its
    stdout and for it to have ``children`` child processes, then press Ctrl-C (SIGINT to
    its process group). Returns the result and the pids of those children."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_uring", *args], cwd=cwd, env=env(PYTHONUNBUFFERED="1", **env_changes),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=default_sigint,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if ready in line:
                break
        else:
            pytest.fail(f"never printed {ready!r}: {''.join(seen)}")
        deadline = time.monotonic() + TIMEOUT
        while len(kids := _children(proc.pid)) < children and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err), kids


def _children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == pid]


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ppid(pid) is None:  # no /proc entry: exited and reaped
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_in_the_demo_exits_130_with_one_line(tmp_path: Path) -> None:
    # The demo has an echo server and the C client running when Ctrl-C comes.
    proc, children = interrupt(
        ["demo", "-c", "4", "-d", "2", "-r", "1"], ready="round 1/1  epoll", children=2, XDG_CACHE_HOME=str(tmp_path)
    )
    assert proc.returncode == 130
    assert proc.stderr == "python -m trio_uring: interrupted\n"
    assert len(children) == 2, "expected the echo server and the client"
    assert all(gone(pid) for pid in children), "a child of the demo outlived it"


def test_ctrl_c_in_run_exits_130_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "wait.py").write_text("import trio\nprint('waiting', flush=True)\ntrio.run(trio.sleep_forever)\n")
    proc, _ = interrupt(["run", str(tmp_path / "wait.py")], ready="waiting")
    assert proc.returncode == 130
    assert proc.stderr == "python -m trio_uring: interrupted\n"


# ---------------------------------------------------------------- run


def test_run_script(tmp_path: Path) -> None:
    (tmp_path / "where.py").write_text(WHERE + "import helper\n")
    (tmp_path / "helper.py").write_text("print('helper imported')\n")
    proc = cli("run", str(tmp_path / "where.py"), "a", "-b", "--c=d")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert lines(proc) == {
        "backend": "io_uring",
        "name": "__main__",
        "argv": "['a', '-b', '--c=d']",
        "path0": str(tmp_path),  # like `python where.py`: the script's directory
        "helper": "imported",
    }


def test_run_module(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "tool.py").write_text(WHERE + "print('argv0', sys.argv[0])\n")
    proc = cli("run", "-m", "pkg.tool", "x", "--y", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert lines(proc) == {
        "backend": "io_uring",
        "name": "__main__",
        "argv": "['x', '--y']",
        "path0": str(tmp_path),  # like `python -m pkg.tool`: the current directory
        "argv0": str(tmp_path / "pkg" / "tool.py"),
    }
    assert cli("run", "-mpkg.tool", cwd=tmp_path).stdout.startswith("backend io_uring\n")


def test_run_a_test_runner_unchanged(tmp_path: Path) -> None:
    """`run -m pytest`: plain trio.run in a test suite moves to io_uring."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_plain.py").write_text(
        textwrap.dedent(
            """
            import trio
            def test_backend():
                async def main():
                    return trio.lowlevel.current_statistics().io_statistics.backend
                assert trio.run(main) == "io_uring"
            """
        )
    )
    proc = cli("run", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_plain.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_run_passes_the_exit_status_and_errors_through(tmp_path: Path) -> None:
    (tmp_path / "exit3.py").write_text("import sys; sys.exit(3)\n")
    (tmp_path / "boom.py").write_text("raise ValueError('boom')\n")
    assert cli("run", str(tmp_path / "exit3.py")).returncode == 3
    proc = cli("run", str(tmp_path / "boom.py"))
    assert proc.returncode == 1
    assert proc.stderr.rstrip().endswith("ValueError: boom")


def test_run_usage_errors(tmp_path: Path) -> None:
    proc = cli("run", str(tmp_path / "missing.py"))
    assert proc.returncode == 2 and "can't open file" in proc.stderr
    proc = cli("run")
    assert proc.returncode == 2 and "nothing to run" in proc.stderr
    proc = cli("run", "--bogus", "x.py")
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
    proc = cli("run", "-m", "no_such_module_here")
    assert proc.returncode == 1 and "no module named 'no_such_module_here'" in proc.stderr
    proc = cli("run", "--help")
    assert proc.returncode == 0 and "run [--fallback] [--verbose] -m module [args...]" in proc.stdout


def test_run_without_io_uring_fails_or_falls_back(tmp_path: Path) -> None:
    (tmp_path / "where.py").write_text(WHERE)
    proc = cli("run", str(tmp_path / "where.py"), refuse_io_uring=True)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert "io_uring_setup() failed with EPERM" in proc.stderr
    assert "--fallback" in proc.stderr
    proc = cli("run", "--fallback", str(tmp_path / "where.py"), refuse_io_uring=True)
    assert proc.returncode == 0, proc.stderr
    assert lines(proc)["backend"] == "epoll"
    assert "RuntimeWarning: trio_uring: falling back to Trio's epoll backend" in proc.stderr


NOTICE = re.compile(r"^trio_uring: pid (\d+): (.*)$", re.M)


def test_run_verbose_announces_every_run(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(WHERE + "import os\nprint('again', trio.run(main))\nprint('pid', os.getpid())\n")
    proc = cli("run", "--verbose", str(tmp_path / "two.py"))
    assert proc.returncode == 0, proc.stderr
    assert NOTICE.findall(proc.stderr) == [(lines(proc)["pid"], "this Trio run is on io_uring")] * 2
    assert proc.stderr.count("\n") == 2  # nothing else
    quiet = cli("run", str(tmp_path / "two.py"))
    assert (quiet.returncode, quiet.stderr) == (0, "")


def test_run_verbose_says_why_a_run_is_on_epoll(tmp_path: Path) -> None:
    (tmp_path / "where.py").write_text(WHERE)
    proc = cli("run", "--verbose", "--fallback", str(tmp_path / "where.py"), refuse_io_uring=True)
    assert proc.returncode == 0, proc.stderr
    assert lines(proc)["backend"] == "epoll"
    (notice,) = (text for _, text in NOTICE.findall(proc.stderr))
    assert notice.startswith(
        "this Trio run is on epoll, not io_uring: io_uring is unavailable: io_uring_setup() failed with EPERM "
        "(Operation not permitted). Likely cause: a seccomp filter"
    ), notice
    assert "To run on Trio's epoll" not in notice and notice.endswith("PROFILE.json)")


# ---------------------------------------------------------------- TRIO_URING=1

# What a process sees at start-up: whether the .pth imported trio_uring, then its run's backend.
STARTUP = """
import os, sys
print("imported", "trio" in sys.modules or "trio_uring" in sys.modules)
print("pid", os.getpid())
import trio
async def main():
    return trio.lowlevel.current_statistics().io_statistics.backend
print("backend", trio.run(main))
"""


@pytest.mark.parametrize(
    ("value", "backend"),
    # (Every word is in test_config.py; these are the start-up path, and the .pth line's own check.)
    [("1", "io_uring"), ("YES", "io_uring"), (" On ", "io_uring"),
     ("0", "epoll"), ("false", "epoll"), ("No", "epoll"), ("OFF", "epoll"), ("", "epoll"), (None, "epoll")],
)  # fmt: skip
def test_env_var_values(value: str | None, backend: str) -> None:
    proc = python("-c", STARTUP, TRIO_URING=value)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    # Off costs nothing: the .pth line imports nothing (Trio takes ~150 ms to import).
    assert lines(proc) == {"imported": str(backend == "io_uring"), "pid": lines(proc)["pid"], "backend": backend}


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_env_var_bad_value_is_one_clear_line(value: str) -> None:
    proc = python("-c", STARTUP, TRIO_URING=value)
    assert proc.returncode == 0
    assert proc.stderr == (
        f"trio_uring: TRIO_URING={value!r} is not understood: use 1, true, yes, on to turn it on, "
        "0, false, no, off or empty to turn it off (any case); not installing the io_uring backend\n"
    )
    assert lines(proc)["backend"] == "epoll"


def test_env_var_verbose() -> None:
    proc = python("-c", STARTUP, TRIO_URING="1", TRIO_URING_VERBOSE="yes")
    assert NOTICE.findall(proc.stderr) == [(lines(proc)["pid"], "this Trio run is on io_uring")]
    proc = python("-c", STARTUP, TRIO_URING="1", TRIO_URING_VERBOSE="loud")
    assert proc.returncode == 0 and lines(proc)["backend"] == "io_uring"
    assert proc.stderr == (
        f"trio_uring: pid {lines(proc)['pid']}: TRIO_URING_VERBOSE='loud' is not understood: use 1, true, yes, on "
        "to turn it on, 0, false, no, off or empty to turn it off (any case); no notices\n"
    )


def test_env_var_falls_back_to_epoll_when_io_uring_is_refused(tmp_path: Path) -> None:
    (tmp_path / "where.py").write_text(WHERE)
    proc = python(str(tmp_path / "where.py"), refuse_io_uring=True, TRIO_URING="1")
    assert proc.returncode == 0, proc.stderr
    assert lines(proc)["backend"] == "epoll"
    assert "RuntimeWarning: trio_uring: falling back to Trio's epoll backend" in proc.stderr


def test_pth_is_installed_in_site_packages() -> None:
    path = Path(sysconfig.get_paths()["purelib"]) / PTH
    assert path.exists(), f"{path} is missing: reinstall trio_uring (pip install -e .)"
    line = path.read_text()
    assert line.startswith("import os;") and "TRIO_URING" in line and line.count("\n") == 1


def test_wheel_ships_the_pth_at_its_root(tmp_path: Path) -> None:
    """A regular (non-editable) install gets the .pth too: it is at the wheel's root."""
    src = tmp_path / "src"
    (src / "trio_uring").mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    for path in (ROOT / "trio_uring").rglob("*"):
        if path.suffix in (".py", ".c", ".h", ".typed") and path.name != "_ring_cffi.c":
            (src / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, src / path.relative_to(ROOT))
    # Build with this venv's setuptools when it has one (fast, offline); else pip's isolated build.
    local = all(importlib.util.find_spec(name) for name in ("setuptools", "wheel", "cffi"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src),
         *(["--no-build-isolation"] if local else [])],
        capture_output=True, text=True, timeout=300, env=env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("trio_uring-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert PTH in names
        assert zf.read(PTH).decode() == (Path(sysconfig.get_paths()["purelib"]) / PTH).read_text()
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        assert any(line.startswith(PTH + ",") for line in zf.read(record).decode().splitlines())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "trio-uring = trio_uring._cli:entry_point" in zf.read(entry_points).decode()
        assert "trio_uring/_cli/demo.py" in names


def test_the_refusal_is_real() -> None:
    """The refusals above are real: io_uring_setup fails in the child, with EPERM."""
    code = "import trio_uring\ntry:\n trio_uring.check_available()\nexcept OSError as e:\n print(e.errno)"
    assert python("-c", code, refuse_io_uring=True).stdout == f"{errno.EPERM}\n"
    assert python("-c", code).stdout == ""
