"""What we ship: the manylinux abi3 wheel installs and runs with no compiler, the sdist
builds it, the metadata is complete, and a failed source build says what to install."""

from __future__ import annotations

import email
import email.message
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from trio_uring._trio_contract import OLDEST_TRIO

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 300
INSTALL_HINTS = ("apt-get install gcc python3-dev", "dnf install gcc python3-devel")


@dataclass
class Dist:
    sdist: pathlib.Path
    wheel: pathlib.Path
    log: str  # what the build printed


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """`make wheel`'s build (tools/build_dist.py), once for this module."""
    outdir = tmp_path_factory.mktemp("dist")
    proc = run([sys.executable, str(ROOT / "tools" / "build_dist.py"), str(outdir)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    return Dist(sdist, wheel, proc.stdout + proc.stderr)


def wheel_metadata(wheel: pathlib.Path, name: str) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (path,) = [n for n in zf.namelist() if n.endswith(f".dist-info/{name}")]
        return email.message_from_bytes(zf.read(path))


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_wheel_is_manylinux_abi3(dist: Dist, tmp_path: pathlib.Path) -> None:
    # One wheel for CPython 3.10+ (the extension uses only the stable ABI), installable
    # on any glibc Linux (auditwheel repaired it).
    assert "-cp310-abi3-manylinux" in dist.wheel.name, dist.wheel.name
    tags = wheel_metadata(dist.wheel, "WHEEL").get_all("Tag")
    assert tags and all(tag.startswith("cp310-abi3-manylinux") for tag in tags), tags
    with zipfile.ZipFile(dist.wheel) as zf:
        (ext,) = [n for n in zf.namelist() if n.endswith(".so")]
        assert ext == "trio_uring/_ring_cffi.abi3.so"
        zf.extract(ext, tmp_path)
    # Nothing from the build machine: it needs libc only, and no library search path.
    with open(tmp_path / ext, "rb") as f:
        (dynamic,) = [s for s in ELFFile(f).iter_sections() if isinstance(s, DynamicSection)]
        tags_found = {tag.entry.d_tag: tag for tag in dynamic.iter_tags()}
        needed = [tag.needed for tag in dynamic.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
    assert needed == ["libc.so.6"]
    assert "DT_RPATH" not in tags_found and "DT_RUNPATH" not in tags_found


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_build_prints_no_deprecation_warning(dist: Dist) -> None:
    assert "Successfully built" in dist.log
    assert "deprecat" not in dist.log.lower(), dist.log


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_metadata_license_urls_and_trio_range(dist: Dist) -> None:
    meta = wheel_metadata(dist.wheel, "METADATA")
    assert meta["License-Expression"] == "MIT OR Apache-2.0"
    assert sorted(meta.get_all("License-File") or []) == ["LICENSE-APACHE", "LICENSE-MIT"]
    assert not [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert sorted(urls) == ["Changelog", "Documentation", "Issues", "Source"]
    assert meta["Author"] == "The trio_uring developers"
    assert "Typing :: Typed" in (meta.get_all("Classifier") or [])
    assert "Programming Language :: Python :: 3.10" in (meta.get_all("Classifier") or [])
    assert meta["Requires-Python"] == ">=3.10"
    # The oldest Trio our tests pass on, and no upper bound (see _trio_contract).
    assert f"trio>={OLDEST_TRIO}" in (meta.get_all("Requires-Dist") or [])
    with zipfile.ZipFile(dist.wheel) as zf:
        for name in ("LICENSE-MIT", "LICENSE-APACHE"):
            (path,) = [n for n in zf.namelist() if n.endswith(f".dist-info/licenses/{name}")]
            assert zf.read(path) == (ROOT / name).read_bytes()


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_sdist_has_the_package_and_no_tests(dist: Dist) -> None:
    # The wheel above was built from this sdist (python -m build), so it is complete
    # for building; here: every file of the package is in it, and the tests are not
    # (they need the whole checkout: conftest.py, examples/, docs/, Trio's suite).
    with tarfile.open(dist.sdist) as tf:
        top = tf.getnames()[0].split("/")[0]
        names = {n.removeprefix(top + "/") for n in tf.getnames()}
    tracked = subprocess.run(
        ["git", "ls-files", "trio_uring"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    assert tracked and set(tracked) <= names, set(tracked) - names
    for name in ("LICENSE-MIT", "LICENSE-APACHE", "README.md", "CHANGELOG.md", "pyproject.toml", "setup.py"):
        assert name in names
    assert not [n for n in names if n.startswith("tests")]


ECHO_PROGRAM = """
import json, sys
from functools import partial
import trio, trio_uring

async def main():
    async def handler(stream):
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"ping")
            reply = await stream.receive_some()
        nursery.cancel_scope.cancel()
    return reply.decode(), trio.lowlevel.current_statistics().io_statistics.backend

reply, backend = trio_uring.run(main)
json.dump({"reply": reply, "backend": backend, "file": trio_uring.__file__}, sys.stdout)
"""

AUTOINSTALL_PROGRAM = """
import trio

async def main():
    return trio.lowlevel.current_statistics().io_statistics.backend

print(trio.run(main))
"""


def no_compiler_env(venv: pathlib.Path) -> dict[str, str]:
    """An environment with no C compiler: PATH holds only the venv, CC fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TRIO_URING"))}
    env.update(PATH=str(venv / "bin"), CC="/bin/false", CXX="/bin/false")
    return env


@pytest.fixture
def fresh_venv(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    venv = tmp_path / "venv"
    proc = run([sys.executable, "-m", "venv", str(venv)])
    assert proc.returncode == 0, proc.stderr
    yield venv


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_wheel_installs_and_runs_without_a_compiler(dist: Dist, fresh_venv: pathlib.Path) -> None:
    env = no_compiler_env(fresh_venv)
    assert shutil.which("gcc", path=env["PATH"]) is None and shutil.which("cc", path=env["PATH"]) is None
    python = str(fresh_venv / "bin" / "python")
    proc = run([python, "-m", "pip", "install", str(dist.wheel)], env=env, cwd=fresh_venv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Building wheel" not in proc.stdout  # nothing was compiled

    proc = run([python, "-c", ECHO_PROGRAM], env=env, cwd=fresh_venv)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["reply"] == "ping" and result["backend"] == "io_uring"
    assert result["file"].startswith(str(fresh_venv)), result["file"]

    # The wheel's .pth (TRIO_URING=1) reached site-packages too.
    proc = run([python, "-c", AUTOINSTALL_PROGRAM], env={**env, "TRIO_URING": "1"}, cwd=fresh_venv)
    assert (proc.returncode, proc.stdout.strip()) == (0, "io_uring"), proc.stderr


# A source build that fails: unpack the sdist and build it the way pip does, with
# this test run's setuptools and cffi (no isolation: no downloads, a few seconds).


@pytest.fixture(scope="module")
def source_tree(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    where = tmp_path_factory.mktemp("sdist")
    with tarfile.open(dist.sdist) as tf:
        tf.extractall(where, filter="data")
    (tree,) = where.iterdir()
    return tree


def build_from_source(tree: pathlib.Path, tmp_path: pathlib.Path, env: dict[str, str]) -> str:
    copy = tmp_path / "src"
    shutil.copytree(tree, copy)
    proc = run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(tmp_path), str(copy)],
        env=env,
    )
    assert proc.returncode != 0, "the build should have failed"
    return proc.stdout + proc.stderr


def failing_build_env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "LDSHARED", "CFLAGS")}
    env.update(changes)
    return env


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("how", ["not on PATH", "CC fails"])
def test_build_without_a_compiler_says_what_to_install(
    source_tree: pathlib.Path, tmp_path: pathlib.Path, how: str
) -> None:
    if how == "not on PATH":
        env = failing_build_env(PATH=os.path.dirname(sys.executable))  # the venv: python, pip, no gcc
        assert shutil.which("gcc", path=env["PATH"]) is None
        problem = "no C compiler ('gcc' is not installed, or not on PATH)"
    else:
        env = failing_build_env(CC="/bin/false")
        problem = "no working C compiler ('/bin/false' cannot compile a C file)"
    log = build_from_source(source_tree, tmp_path, env)
    assert f"Cannot build trio_uring's C layer: {problem}" in log, log
    for hint in INSTALL_HINTS:
        assert hint in log, log


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_build_without_python_headers_says_what_to_install(source_tree: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # A working gcc that cannot see this Python's headers: a wrapper that drops the
    # -I for them, as if python3-dev were not installed.
    include = sysconfig.get_path("include")
    gcc = shutil.which("gcc")
    assert gcc is not None and os.path.exists(os.path.join(include, "Python.h"))
    wrapper = tmp_path / "gcc-without-python-headers"
    wrapper.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            for arg do
                shift
                [ "$arg" = "-I{include}" ] || set -- "$@" "$arg"
            done
            exec {gcc} "$@"
        """)
    )
    wrapper.chmod(0o755)
    log = build_from_source(source_tree, tmp_path, failing_build_env(CC=str(wrapper)))
    assert "Python.h: No such file or directory" in log, log  # the real failure, from gcc
    major, minor = sys.version_info[:2]
    assert f"Cannot build trio_uring's C layer: the Python {major}.{minor} headers are missing" in log, log
    for hint in INSTALL_HINTS:
        assert hint in log, log


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_build_failing_in_our_code_does_not_blame_the_tools(source_tree: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # The compiler and headers work, _ring.c does not compile (a macro breaks it):
    # the message points at the compiler's errors, not at packages to install.
    log = build_from_source(source_tree, tmp_path, failing_build_env(CFLAGS="-Dtu_submit=}"))
    assert "Cannot build trio_uring's C layer: compiling it failed" in log, log
    assert "see the compiler's errors above" in log
    assert INSTALL_HINTS[0] not in log
