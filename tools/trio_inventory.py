"""Build docs/source/_inv/trio-objects.inv: Trio's Sphinx inventory, so that the docs
link `trio.run`, `trio.abc.Stream`, ... to Trio's documentation without fetching
anything when they are built (machines that build docs may have no internet).

    .venv/bin/python tools/trio_inventory.py [UNPACKED_TRIO_SDIST]

Without an argument it downloads the sdist of the Trio installed here (pip, from the
package index: the only step that needs the network). It then builds Trio's own docs
with the Sphinx extensions that work offline (no sphinx_codeautolink, no intersphinx of
Trio's own: only the object inventory is wanted) and copies the resulting objects.inv.
Run it again when the supported Trio changes; docs/source/conf.py points intersphinx at
the result, with Trio's published docs as the link target.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "source" / "_inv" / "trio-objects.inv"
EXTENSIONS = "sphinx.ext.autodoc,sphinx.ext.napoleon,sphinxcontrib_trio,local_customization"


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        if argv:
            sdist = Path(argv[0])
        else:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", f"trio=={trio.__version__}", "--no-binary", ":all:",
                 "--no-deps", "-q", "-d", tmp],
                check=True,
            )  # fmt: skip
            (archive,) = Path(tmp).glob("trio-*.tar.gz")
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            sdist = Path(tmp) / f"trio-{trio.__version__}"
        docs = Path(tmp) / "docs"
        shutil.copytree(sdist / "docs" / "source", docs)
        conf = docs / "conf.py"
        # Trio's conf adds entries to the inventories of its intersphinx targets, which
        # are not fetched here.
        text = conf.read_text()
        hook = '    app.connect("builder-inited", add_intersphinx, priority=1000)\n'
        assert hook in text, "Trio's docs/source/conf.py changed: update this script"
        conf.write_text(text.replace(hook, ""))
        subprocess.run(
            [sys.executable, "-m", "sphinx", "-q", "-b", "html", "-D", f"extensions={EXTENSIONS}",
             str(docs), str(Path(tmp) / "html")],
            check=True, cwd=docs,
        )  # fmt: skip
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "html" / "objects.inv", TARGET)
    print(f"wrote {TARGET.relative_to(ROOT)} (Trio {trio.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
