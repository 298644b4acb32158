# The project metadata lives in pyproject.toml.  This file exists only because
# cffi's build hook is a setup() keyword: it compiles trio_uring/_ring.c into
# trio_uring._ring_cffi at install time.
#
# The extension uses only CPython's stable ABI: cffi defines Py_LIMITED_API and
# marks the Extension py_limited_api, so one wheel (tagged cp310-abi3, the oldest
# Python we support) serves every CPython from 3.10 on.
#
# When the C layer cannot be compiled, the build says what to install (a compiler,
# the Python headers) instead of setuptools' generic "command 'gcc' failed".
#
# It also ships one .pth file at the top of site-packages, the opt-in switch for
# programs that call trio.run themselves: with TRIO_URING=1 in the environment,
# Python imports trio_uring at start-up and calls install(fallback=True), through
# trio_uring._config.install_from_environment (which parses the value). With the
# variable unset, empty or a false word, the line costs one dict lookup (`os` is
# imported by then) and imports nothing: importing trio_uring imports Trio, about
# 150 ms. site.py runs .pth files in name order, so this one runs after setuptools'
# "__editable__.*.pth" has made an editable trio_uring importable.
import os
import shutil
import sys
import sysconfig
import tempfile

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import BaseError, CCompilerError

AUTOINSTALL_PTH = "trio_uring-autoinstall.pth"
AUTOINSTALL_LINE = (
    "import os; os.environ.get('TRIO_URING', '').strip().lower() not in ('', '0', 'false', 'no', 'off') "
    "and __import__('trio_uring._config')._config.install_from_environment()\n"
)


class build_py_with_pth(build_py):
    """build_py, plus the .pth at the root of the wheel (which is site-packages).

    A regular wheel is made of build_lib. An editable one (PEP 660) is not: it
    holds what lands in the install command's install_lib, so the .pth goes there.
    """

    def run(self):
        super().run()
        root = self.build_lib
        if getattr(self, "editable_mode", False):
            root = self.get_finalized_command("install").install_lib
        self._pth = os.path.join(root, AUTOINSTALL_PTH)
        with open(self._pth, "w") as f:
            f.write(AUTOINSTALL_LINE)

    def get_outputs(self, include_bytecode=1):
        pth = getattr(self, "_pth", None)
        return super().get_outputs(include_bytecode) + ([pth] if pth else [])


INSTALL_BUILD_TOOLS = """\
Install a C compiler and the Python headers, then install trio_uring again:
    Debian, Ubuntu:  apt-get install gcc python3-dev
    Fedora, RHEL:    dnf install gcc python3-devel
(or install a trio_uring wheel, which needs neither)."""


class build_ext_explained(build_ext):
    """build_ext that, when compiling fails, finds out why and says what to install.

    The diagnosis runs only after a failure: it compiles two one-line probes with
    the same compiler and include path as the real build.
    """

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except CCompilerError as exc:
            raise BaseError(self._explain(exc)) from exc

    def _explain(self, exc):
        compiler = self.compiler.compiler_so[0]
        python = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if shutil.which(compiler) is None:
            problem = f"no C compiler ({compiler!r} is not installed, or not on PATH)"
        elif not self._compiles("int probe;\n"):
            problem = f"no working C compiler ({compiler!r} cannot compile a C file)"
        elif not self._compiles("#include <Python.h>\n"):
            where = sysconfig.get_path("include")
            problem = f"the Python {python} headers are missing (no usable Python.h; expected in {where})"
        else:
            return (
                f"Cannot build trio_uring's C layer: compiling it failed ({exc}), although {compiler!r} "
                "and the Python headers work: see the compiler's errors above."
            )
        return f"Cannot build trio_uring's C layer: {problem}.\n{INSTALL_BUILD_TOOLS}"

    def _compiles(self, source):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "probe.c")
            with open(path, "w") as f:
                f.write(source)
            try:
                self.compiler.compile([path], output_dir=tmp)  # with the build's include path
            except CCompilerError:
                return False
            return True


# cffi builds for the stable ABI except on debug and free-threaded (before 3.15)
# CPythons; there the wheel keeps its interpreter-specific tag.
STABLE_ABI = not hasattr(sys, "gettotalrefcount") and not sysconfig.get_config_var("Py_GIL_DISABLED")

setup(
    cffi_modules=["trio_uring/_ring_build.py:ffibuilder"],
    cmdclass={"build_py": build_py_with_pth, "build_ext": build_ext_explained},
    # The wheel's tag: cp310-abi3 (see the top of this file).
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if STABLE_ABI else {},
)
