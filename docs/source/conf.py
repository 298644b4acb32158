"""Sphinx configuration for trio_uring's documentation (laid out like Trio's).

Build with ``make docs`` (warnings are errors). The lifecycle diagram is drawn by
graphviz when ``dot`` is installed, and shown as text otherwise; the kernel
requirement tables are generated from the same data ``python -m trio_uring check``
prints (``trio_uring._requirements``), so the two cannot disagree. Names of Trio's
objects link to Trio's documentation through an inventory kept in the repository
(``_inv/trio-objects.inv``, made by ``tools/trio_inventory.py``): the build fetches
nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

import trio_uring
from trio_uring import _requirements as requirements

project = "trio_uring"
copyright = "trio_uring contributors"
version = release = trio_uring.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.graphviz",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
]

# Offline: the inventory is a file here; the links go to Trio's published docs.
intersphinx_mapping = {"trio": ("https://trio.readthedocs.io/en/stable/", "_inv/trio-objects.inv")}

# As in Trio's docs: `name` is a cross-reference to a Python object.
default_role = "py:obj"
primary_domain = "py"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "sphinx_rtd_theme"
html_theme_options = {"navigation_depth": 3}
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # let table cells wrap (the theme keeps them on one line)
exclude_patterns = ["_build"]

graphviz_output_format = "svg"
if shutil.which("dot"):
    tags.add("graphviz")  # type: ignore[name-defined]  # noqa: F821  (Sphinx injects `tags`)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return lines


class KernelFeatureTable(Directive):
    """The io_uring features trio_uring requires or uses, from trio_uring._requirements."""

    def run(self) -> list:
        rows = [
            [f"``IORING_FEAT_{name}``", f"Linux {since}", "required"]
            for name, (_, since) in requirements.REQUIRED_FEATURES.items()
        ]
        rows += [
            [f"``{name}``", f"Linux {since}", f"optional: {use}"]
            for name, (use, since) in requirements.OPTIONAL_FEATURES.items()
        ]
        rows += [
            [name, "Linux " + ".".join(map(str, since)), use] for name, (use, since) in requirements.USED_FLAGS.items()
        ]
        return self._parse(_table(["Feature", "Since", "Use"], rows))

    def _parse(self, lines: list[str]) -> list:
        from docutils import nodes

        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="conf.py"), self.content_offset, container)
        return container.children


class KernelOpcodeTable(KernelFeatureTable):
    """The opcodes trio_uring submits, from trio_uring._requirements.USED_OPCODES."""

    def run(self) -> list:
        # A row links to the opcode's section of ops.rst when it has one.
        ops_page = (Path(__file__).parent / "ops.rst").read_text()

        def name(op: object) -> str:
            label = f"op-{op.name.lower()}"  # type: ignore[attr-defined]
            if f".. _{label}:" in ops_page:
                return f":ref:`IORING_OP_{op.name} <{label}>`"  # type: ignore[attr-defined]
            return f"``IORING_OP_{op.name}``"  # type: ignore[attr-defined]

        rows = [
            [name(op), f"Linux {since}",
             "required" if op in requirements.REQUIRED_OPCODES else "when used", use]
            for op, (use, since) in requirements.USED_OPCODES.items()
        ]  # fmt: skip
        return self._parse(_table(["Opcode", "Since", "Needed for", "Used for"], rows))


def setup(app: object) -> None:
    app.add_directive("kernel-feature-table", KernelFeatureTable)  # type: ignore[attr-defined]
    app.add_directive("kernel-opcode-table", KernelOpcodeTable)  # type: ignore[attr-defined]
