"""The forms a benchmark server can take: which run function, which serve_tcp.

One table, read by every benchmark here (compare.py, idle_memory.py, frameworks.py,
fanout.py) and by the servers in benchmarks/servers/. Adding or changing a form is
one entry: the servers resolve `run` and `serve_tcp` by name at start-up, so this
module imports neither trio nor trio_uring (compare.py reads it with any Python).

    trio-epoll            trio.serve_tcp under trio.run: stock Trio on epoll, the reference
    trio-uring            the same code under trio_uring.run: the drop-in (Trio's streams
                          take trio_uring's short path, trio_uring/_stream.py)
    trio-uring-trio-path  the drop-in with the short path off (TRIO_URING_TRIO_STREAMS=0):
                          the backend under Trio's own stream code, to show what the short
                          path brings
    trio-uring-streams    trio_uring.serve_tcp under trio_uring.run. Since trio_uring's
                          streams became Trio's own on the short path, this is the same
                          code as trio-uring (kept for the fan-out variants that name it)

`env` is set for the server process only (for example a knob of trio_uring that a
form wants on or off). A server whose framework takes no serve_tcp (Hypercorn) uses
only `run`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Form:
    description: str
    run: str  # "module.function" that takes an async function, like trio.run
    serve_tcp: str  # "module.function" with trio.serve_tcp's signature
    env: dict[str, str] = field(default_factory=dict)

    @property
    def uses_uring(self) -> bool:
        return self.run.split(".")[0] == "trio_uring"


REFERENCE = "trio-epoll"
#: What compare.py and the other benchmarks run unless told otherwise.
DEFAULT_FORMS = ["trio-epoll", "trio-uring", "trio-uring-trio-path"]

FORMS: dict[str, Form] = {
    "trio-epoll": Form("trio.serve_tcp under trio.run (stock Trio, epoll)", "trio.run", "trio.serve_tcp"),
    "trio-uring": Form("trio.serve_tcp under trio_uring.run (drop-in)", "trio_uring.run", "trio.serve_tcp"),
    "trio-uring-trio-path": Form("trio.serve_tcp under trio_uring.run, TRIO_URING_TRIO_STREAMS=0 (Trio's stream code)",
                                 "trio_uring.run", "trio.serve_tcp", {"TRIO_URING_TRIO_STREAMS": "0"}),
    "trio-uring-streams": Form("trio_uring.serve_tcp under trio_uring.run (same code as the drop-in)",
                               "trio_uring.run", "trio_uring.serve_tcp"),
}


def resolve(dotted: str) -> Any:
    """The object named "package.module.attr" (imported on first use)."""
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def parse_forms(spec: str, known: dict[str, Form] | None = None) -> list[str]:
    """A comma list of form names, checked, with the reference first."""
    known = FORMS if known is None else known
    names = [f.strip() for f in spec.split(",") if f.strip()]
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown form {n!r}; known: {', '.join(known)}")
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    return list(dict.fromkeys(names))
