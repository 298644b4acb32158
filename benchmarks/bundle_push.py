"""Where a send bundle's CPU goes: queueing N messages in a send ring vs joining them.

    .venv/bin/python benchmarks/bundle_push.py [-n 1024] [-s 64] [-r 200]

In one trio_uring run, no socket: per message, SendRing.push_many + the release a
completion does (SendRing.sent), against b"".join of the same list. Both are what
BundleStream.send_many and the coalesced writer do per message before their one op
per batch; the op itself costs the same for both. Interleaved, best of 5.
"""

from __future__ import annotations

import argparse
import time

import trio_uring
from trio_uring._iomanager import current_driver
from trio_uring._sendring import SendRing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=1024, help="messages per batch (1024)")
    p.add_argument("-s", type=int, default=64, help="message size (64)")
    p.add_argument("-r", type=int, default=200, help="batches per timing (200)")
    a = p.parse_args()

    async def run() -> None:
        driver = current_driver()
        assert driver is not None
        ring = SendRing(driver.ring, 4321, max(1, 1 << (a.n - 1).bit_length()))
        msgs = [bytes([k % 256]) * a.s for k in range(a.n)]
        best = {"ring push + release": float("inf"), "join": float("inf")}
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(a.r):
                ring.push_many(list(msgs), 0)
                ring.sent(ring.queued_bytes, 0)
            best["ring push + release"] = min(best["ring push + release"], time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(a.r):
                b"".join(list(msgs))
            best["join"] = min(best["join"], time.perf_counter() - t)
        ring.close()
        for name, secs in best.items():
            print(f"{name:<22} {secs / a.r / a.n * 1e9:8.0f} ns per message ({a.n} x {a.s} B a batch)")

    trio_uring.run(run)


if __name__ == "__main__":
    main()
