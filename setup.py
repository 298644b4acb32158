# The project metadata lives in pyproject.toml.  This file exists only because
# cffi's build hook is a setup() keyword: it compiles trio_uring/_ring.c into
# trio_uring._ring_cffi at install time.
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

from setuptools import setup
from setuptools.command.build_py import build_py

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


setup(
    cffi_modules=["trio_uring/_ring_build.py:ffibuilder"],
    cmdclass={"build_py": build_py_with_pth},
)
