#!/usr/bin/env python3
"""The mutation run: plant one plausible bug at a time, and check that the tests catch it.

    python tools/mutate.py              # every mutation in tools/mutations.toml
    python tools/mutate.py -k retired   # those whose name contains "retired"
    python tools/mutate.py --list       # list them

Each mutation names a file, a piece of its text that must occur exactly once, its
replacement, and the tests expected to catch it. The tree is copied to a scratch
directory (the working tree is never touched); there each mutation is applied,
the C layer rebuilt if a C file changed, and the named tests run. A mutation the
named tests miss is tried against the whole suite before it is called a survivor.
Prints the score; exits 1 if any mutation survived (a missing test) or no longer
applies (the code moved on: update the mutation).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTATIONS = os.path.join(ROOT, "tools", "mutations.toml")


@dataclass
class Mutation:
    name: str
    file: str
    find: str
    replace: str
    tests: list[str] = field(default_factory=list)
    why: str = ""


def load() -> list[Mutation]:
    with open(MUTATIONS, "rb") as f:
        data = tomllib.load(f)
    return [Mutation(**m) for m in data["mutation"]]


def copy_tree(dest: str) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = os.path.join(ROOT, name)
        if not os.path.exists(src):
            continue
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target)


def build(tree: str) -> None:
    """Compile the cffi extension in place in ``tree``."""
    code = (
        "import runpy, os; ns = runpy.run_path('trio_uring/_ring_build.py');"
        "ns['ffibuilder'].compile(tmpdir='.', verbose=False)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, capture_output=True)


def run_tests(tree: str, tests: list[str], timeout: int) -> tuple[bool, str]:
    """True if the tests passed (the mutation survived them)."""
    env = {**os.environ, "PYTHONPATH": tree, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--timeout={timeout}", *tests]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return done.returncode == 0, tail[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", dest="select", help="only mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-full", action="store_true", help="do not retry survivors against the whole suite")
    parser.add_argument("--timeout", type=int, default=30, help="per-test timeout in the mutated runs (s)")
    args = parser.parse_args()
    mutations = [m for m in load() if not args.select or args.select in m.name]
    if args.list:
        for m in mutations:
            print(f"{m.name}: {m.file} -- {m.why}")
        return 0

    started = time.monotonic()
    killed, survived, stale = [], [], []
    with tempfile.TemporaryDirectory(prefix="trio-uring-mutate.") as tree:
        copy_tree(tree)
        build(tree)
        ok, tail = run_tests(tree, ["tests/test_ring.py"], args.timeout)
        if not ok:
            print(f"the unmutated tree fails its tests ({tail}): nothing to measure", file=sys.stderr)
            return 2
        for m in mutations:
            path = os.path.join(tree, m.file)
            with open(path) as f:
                original = f.read()
            if original.count(m.find) != 1:
                stale.append(m)
                print(f"STALE     {m.name}: its text occurs {original.count(m.find)} times in {m.file}")
                continue
            is_c = m.file.endswith((".c", ".h"))
            with open(path, "w") as f:
                f.write(original.replace(m.find, m.replace))
            try:
                if is_c:
                    build(tree)
                survives, tail = run_tests(tree, m.tests or ["tests"], args.timeout)
                if survives and m.tests and not args.no_full:
                    survives, tail = run_tests(tree, ["tests"], args.timeout)
            finally:
                with open(path, "w") as f:
                    f.write(original)
                if is_c:
                    build(tree)
            (survived if survives else killed).append(m)
            print(f"{'SURVIVED' if survives else 'killed  '}  {m.name}  [{tail}]", flush=True)

    total = len(killed) + len(survived)
    print(
        f"\nmutation score: {len(killed)}/{total} killed"
        + (f", {len(stale)} stale" if stale else "")
        + f" ({time.monotonic() - started:.0f} s)"
    )
    for m in survived:
        print(f"  survived: {m.name} ({m.file}): {m.why}")
    return 1 if survived or stale else 0


if __name__ == "__main__":
    sys.exit(main())
