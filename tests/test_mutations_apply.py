"""Every mutation of the mutation run (tools/mutations.toml) still applies.

`make mutate` says STALE for a mutation whose text no longer occurs exactly once in
its file, and fails, but only at the end of a long run; this checks the same in a
second, so a change that moves code is told to move its mutation at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# (tools/mutate.py needs Python 3.11's tomllib too.)
tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ (the mutation run needs it too)")
ROOT = Path(__file__).resolve().parent.parent
MUTATIONS = tomllib.loads((ROOT / "tools" / "mutations.toml").read_text())["mutation"]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m["name"] for m in MUTATIONS])
def test_the_mutation_still_applies(mutation: dict[str, object]) -> None:
    text = (ROOT / str(mutation["file"])).read_text()
    assert text.count(str(mutation["find"])) == 1, f"{mutation['name']}: move it with the code it mutates"


def test_mutation_names_are_unique() -> None:
    names = [m["name"] for m in MUTATIONS]
    assert len(names) == len(set(names))
