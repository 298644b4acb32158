#!/usr/bin/env python3
"""Files: trio_uring.open_file (the ring) vs trio.open_file (Trio's thread path).

    .venv/bin/python benchmarks/files.py [-r REPS] [--seq-mib MIB] [--dir DIR] [--no-save]

Both forms run in the same trio_uring.run, on the same files, interleaved: each
repetition runs every scenario once per form, the order of the two forms
alternating between repetitions. Per scenario and form: the median over the
repetitions of the wall time per operation and of the process's CPU time per
operation (user + system, all threads: Trio's worker threads included).

Scenarios:

* ``rand4k-1``: one task, random 4 KiB reads (``seek`` + ``read(4096)``) from a
  64 MiB file in the page cache.
* ``rand4k-64``: 64 tasks at once, each with its own file object on that file.
* ``small-1`` / ``small-64``: open + read() + close of 4 KiB files (1000 files),
  by one task and by 64 tasks at once.
* ``seq-read`` / ``seq-write``: a sequential read / write of a ``--seq-mib`` file
  (default 256 MiB; the issue asks for 1 GiB) in 1 MiB calls; the written file is
  deleted each time (its pages stay dirty in the cache: the write is to memory).

Results go to benchmarks/results/files-YYYYMMDD-HHMMSS.{json,md}. The machine is
shared and noisy: look at the spread before trusting a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import trio_uring

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BIG = 64 << 20
SMALL_FILES = 1000
SMALL_SIZE = 4096
Opener = Callable[..., Awaitable[Any]]
FORMS: dict[str, Opener] = {"trio": trio.open_file, "uring": trio_uring.open_file}


async def rand4k(opener: Opener, path: str, tasks: int, reads: int) -> int:
    async def one(seed: int) -> None:
        rng = random.Random(seed)
        async with await opener(path, "rb") as f:
            for _ in range(reads):
                await f.seek(rng.randrange(0, BIG - 4096) & ~4095)
                data = await f.read(4096)
                assert len(data) == 4096

    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(one, i)
    return tasks * reads


async def small(opener: Opener, paths: list[str], tasks: int) -> int:
    async def one(mine: list[str]) -> None:
        for p in mine:
            async with await opener(p, "rb") as f:
                assert len(await f.read()) == SMALL_SIZE

    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(one, paths[i::tasks])
    return len(paths)


async def seq_read(opener: Opener, path: str, size: int) -> int:
    n = 0
    async with await opener(path, "rb") as f:
        while chunk := await f.read(1 << 20):
            n += len(chunk)
    assert n == size
    return size >> 20


async def seq_write(opener: Opener, path: str, size: int) -> int:
    block = os.urandom(1 << 20)
    async with await opener(path, "wb") as f:
        for _ in range(size >> 20):
            await f.write(block)
    os.unlink(path)
    return size >> 20


async def measure(fn: Callable[[], Awaitable[int]]) -> tuple[float, float]:
    """(wall µs per op, CPU µs per op)."""
    wall, cpu = time.perf_counter(), time.process_time()
    ops = await fn()
    return (time.perf_counter() - wall) / ops * 1e6, (time.process_time() - cpu) / ops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--reps", type=int, default=5)
    parser.add_argument("--seq-mib", type=int, default=256)
    parser.add_argument("--dir", default=None, help="where the files go (default: a temporary directory)")
    parser.add_argument("--no-save", action="store_true", help="print only, write no result files")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        big = os.path.join(tmp, "big")
        with open(big, "wb") as f:
            f.write(os.urandom(BIG))
        smalls = []
        for i in range(SMALL_FILES):
            p = os.path.join(tmp, f"small{i}")
            with open(p, "wb") as f:
                f.write(os.urandom(SMALL_SIZE))
            smalls.append(p)
        seq = os.path.join(tmp, "seq")
        with open(seq, "wb") as f:
            for _ in range(args.seq_mib):
                f.write(os.urandom(1 << 20))
        seq_size = args.seq_mib << 20
        written = os.path.join(tmp, "written")

        scenarios: dict[str, tuple[str, Callable[[Opener], Awaitable[int]]]] = {
            "rand4k-1": ("4 KiB read", lambda o: rand4k(o, big, 1, 4000)),
            "rand4k-64": ("4 KiB read", lambda o: rand4k(o, big, 64, 150)),
            "small-1": ("open+read+close", lambda o: small(o, smalls, 1)),
            "small-64": ("open+read+close", lambda o: small(o, smalls, 64)),
            "seq-read": ("MiB", lambda o: seq_read(o, seq, seq_size)),
            "seq-write": ("MiB", lambda o: seq_write(o, written, seq_size)),
        }
        runs: dict[str, dict[str, list[tuple[float, float]]]] = {s: {f: [] for f in FORMS} for s in scenarios}

        async def bench() -> None:
            for name, (_, fn) in scenarios.items():  # warm-up: caches, thread pool, imports
                for opener in FORMS.values():
                    await fn(opener)
                    print(f"warm-up {name}", file=sys.stderr)
            for rep in range(args.reps):
                for name, (_, fn) in scenarios.items():
                    order = list(FORMS.items()) if rep % 2 == 0 else list(FORMS.items())[::-1]
                    for form, opener in order:
                        runs[name][form].append(await measure(lambda fn=fn, opener=opener: fn(opener)))
                print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)

        trio_uring.run(bench)

    rows = []
    summary: dict[str, Any] = {}
    for name, (unit, _) in scenarios.items():
        t = runs[name]["trio"]
        u = runs[name]["uring"]
        tw, uw = statistics.median(x[0] for x in t), statistics.median(x[0] for x in u)
        tc, uc = statistics.median(x[1] for x in t), statistics.median(x[1] for x in u)
        paired = sorted(a[0] / b[0] for a, b in zip(t, u, strict=True))
        summary[name] = {
            "unit": unit,
            "trio_wall_us": tw, "uring_wall_us": uw, "trio_cpu_us": tc, "uring_cpu_us": uc,
            "speedup_wall": tw / uw, "speedup_cpu": tc / uc,
            "paired_speedups": paired,
            "raw": {"trio": t, "uring": u},
        }  # fmt: skip
        rows.append(
            f"| {name} | {unit} | {tw:.1f} | {uw:.1f} | **{tw / uw:.2f}x** ({paired[0]:.2f}-{paired[-1]:.2f}) "
            f"| {tc:.1f} | {uc:.1f} | {tc / uc:.2f}x |"
        )
    header = (
        f"# Files: trio_uring.open_file vs trio.open_file\n\n"
        f"`.venv/bin/python benchmarks/files.py -r {args.reps} --seq-mib {args.seq_mib}`, "
        f"Linux {platform.release()}, Python {platform.python_version()}, Trio {trio.__version__}, "
        f"{os.cpu_count()} CPUs (shared with other jobs: noisy). Medians of {args.reps} interleaved repetitions; "
        f"per operation (per MiB for seq-*); speed-up = trio / uring (paired min-max in brackets).\n\n"
        "| scenario | per | trio wall µs | uring wall µs | speed-up | trio CPU µs | uring CPU µs | CPU ratio |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    text = header + "\n".join(rows) + "\n"
    print(text)
    if not args.no_save:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        os.makedirs(RESULTS, exist_ok=True)
        base = os.path.join(RESULTS, f"files-{stamp}")
        with open(base + ".json", "w") as f:
            json.dump({"args": vars(args), "results": summary}, f, indent=1)
        with open(base + ".md", "w") as f:
            f.write(text)
        print(f"saved {base}.{{json,md}}", file=sys.stderr)


if __name__ == "__main__":
    main()
