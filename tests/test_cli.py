"""The command line: ``python -m trio_uring`` / ``trio-uring`` check, demo and run, and TRIO_URING=1.

Everything runs in real subprocesses. "io_uring refused" is real too: a seccomp
filter (tests/seccomp.py) makes io_uring_setup fail in the child, as a container's
default profile does.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import trio

from trio_uring.__main__ import USED_OPCODES, kernel_version
from trio_uring._ring import REQUIRED_OPCODES

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


def test_demo_compares_the_three_forms() -> None:
    proc = cli("demo", "-c", "4", "-d", "0.3", "-r", "1")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert "driven by a C client" in proc.stdout
    for form in ("epoll", "io_uring", "streams"):
        assert re.search(rf"^  round 1/1  {form} +[\d,]+ round trips/s$", proc.stdout, re.M), proc.stdout
    labels = (
        "trio.serve_tcp on Trio's epoll",
        "trio.serve_tcp on io_uring \\(drop-in\\)",
        "trio_uring.serve_tcp on io_uring",
    )
    for label in labels:
        assert re.search(rf"^  {label} +[1-9][\d,]* +[\d.]+x +0$", proc.stdout, re.M), proc.stdout


def test_demo_without_io_uring_says_why() -> None:
    proc = cli("demo", "-d", "0.1", refuse_io_uring=True)
    assert proc.returncode == 1
    assert "io_uring_setup() failed with EPERM" in proc.stderr


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
    assert proc.returncode == 0 and "run [--fallback] -m module [args...]" in proc.stdout


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


# ---------------------------------------------------------------- TRIO_URING=1


def test_env_var_puts_plain_trio_run_on_io_uring(tmp_path: Path) -> None:
    (tmp_path / "where.py").write_text(WHERE)
    script = str(tmp_path / "where.py")
    assert lines(python(script, TRIO_URING="1"))["backend"] == "io_uring"
    assert lines(python(script, TRIO_URING="0"))["backend"] == "epoll"
    assert lines(python(script, TRIO_URING=""))["backend"] == "epoll"
    assert lines(python(script))["backend"] == "epoll"


def test_env_var_unset_costs_nothing() -> None:
    code = "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'trio_uring')))"
    assert python("-c", code).stdout == "[]\n"
    assert "'trio_uring'" in python("-c", code, TRIO_URING="1").stdout


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
    for path in (ROOT / "trio_uring").iterdir():
        if path.suffix in (".py", ".c", ".h", ".typed") and path.name != "_ring_cffi.c":
            shutil.copy(path, src / "trio_uring" / path.name)
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
        assert "trio-uring = trio_uring.__main__:_main" in zf.read(entry_points).decode()


def test_the_refusal_is_real() -> None:
    """The refusals above are real: io_uring_setup fails in the child, with EPERM."""
    code = "import trio_uring\ntry:\n trio_uring.check_available()\nexcept OSError as e:\n print(e.errno)"
    assert python("-c", code, refuse_io_uring=True).stdout == f"{errno.EPERM}\n"
    assert python("-c", code).stdout == ""
