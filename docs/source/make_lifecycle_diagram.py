#!/usr/bin/env python3
"""Draw the op lifecycle from the code: ``trio_uring._lifecycle.TRANSITIONS``.

    python docs/source/make_lifecycle_diagram.py          # write lifecycle.dot and .txt
    python docs/source/make_lifecycle_diagram.py --check  # exit 1 if they are stale

The two files beside this script are its output: ``lifecycle.dot`` (graphviz, used
when ``dot`` is installed) and ``lifecycle.txt`` (the same table as text). Nothing
in them is written by hand, so the diagram cannot drift from the state table the
driver runs on; tests/test_docs_commands.py runs ``--check``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trio_uring._lifecycle import TRANSITIONS, Event, State

HERE = Path(__file__).resolve().parent

# Where each state leads the waiting task (the last step, outside the table).
OUTCOME = {
    State.COMPLETED: "the task gets the result\n(or OSError for a negated errno)",
    State.CANCELLED: "the task raises Cancelled",
    State.CLOSED: "the task raises ClosedResourceError",
    State.DISCARDED: "Op.discard undoes the result\n(e.g. closes an accepted fd)",
}

HEADER = (
    "The op lifecycle, generated from trio_uring._lifecycle.TRANSITIONS by\n"
    "docs/source/make_lifecycle_diagram.py: do not edit by hand."
)


def _edges() -> dict[tuple[State, State], list[Event]]:
    """The table's transitions, self-loops left out, grouped by (from, to)."""
    edges: dict[tuple[State, State], list[Event]] = {}
    for src, moves in TRANSITIONS.items():
        for event, dst in moves.items():
            if dst is not src:
                edges.setdefault((src, dst), []).append(event)
    return edges


def _wrap(text: str, width: int = 34) -> str:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\\n".join(lines)


def dot() -> str:
    out = ["digraph lifecycle {"]
    out += [f"    // {line}" for line in HEADER.splitlines()]
    out += [
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="sans-serif", fontsize=11];',
        '    edge [fontname="sans-serif", fontsize=10];',
        '    start [label="Driver.start writes the SQE\\n(refused if the fd is retired)", shape=plaintext];',
    ]
    for state in State:
        final = not TRANSITIONS[state]
        style = ', style="rounded,bold"' if final else ""
        out.append(f'    {state.name} [label="{state.name}\\n{_wrap(state.value)}"{style}];')
    out.append("    start -> IN_FLIGHT;")
    for (src, dst), events in _edges().items():
        label = "\\n".join(e.name for e in events)
        out.append(f'    {src.name} -> {dst.name} [label=" {label}"];')
    for state, text in OUTCOME.items():
        label = text.replace("\n", "\\n")
        out.append(f'    {state.name}_out [label="{label}", shape=plaintext];')
        out.append(f"    {state.name} -> {state.name}_out [style=dashed];")
    out.append("}")
    return "\n".join(out) + "\n"


def text() -> str:
    out = [*HEADER.splitlines(), ""]
    width = max(len(x.name) for x in [*State, *Event])
    out.append("States")
    for state in State:
        out.append(f"  {state.name:<{width}}  {state.value}")
    out += ["", "Events"]
    for event in Event:
        out.append(f"  {event.name:<{width}}  {event.value}")
    out += ["", "Transitions (state --event--> next state; a pair not listed is a bug)"]
    for src, moves in TRANSITIONS.items():
        if not moves:
            out.append(f"  {src.name:<{width}}  final: {OUTCOME[src].replace(chr(10), ' ')}")
            continue
        for event, dst in moves.items():
            same = "  (stays)" if dst is src else ""
            out.append(f"  {src.name:<{width}}  --{event.name}--> {dst.name}{same}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    wanted = {HERE / "lifecycle.dot": dot(), HERE / "lifecycle.txt": text()}
    if "--check" in argv:
        stale = [p.name for p, body in wanted.items() if not p.exists() or p.read_text() != body]
        if stale:
            print(f"stale: {', '.join(stale)}; run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    for path, body in wanted.items():
        path.write_text(body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
