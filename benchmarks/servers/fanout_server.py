"""Fan-out server: one publisher, a queue per connection, a writer task per connection.

    python benchmarks/servers/fanout_server.py --variant trio-uring-coalesced --port 9000 \\
        -c 64 -m 100000 -s 64 --stats FILE

The shape of a chat or pub/sub server. It accepts CONNS connections; each handler waits
for one "go" byte (benchmarks/fanout_reader.c sends it once all are connected), then
writes whatever its queue holds. When all CONNS are there, the publisher makes MSGS
messages of SIZE bytes and appends each one to every connection's queue; a queue holds
at most --queue messages (the publisher waits for room, as a real server must). When a
writer has sent all MSGS it returns, and serve_tcp closes the connection.

Message k: k as a 32-bit little-endian number, then SIZE - 4 bytes of a fixed pattern
from offset k % 251, so the reader checks order and content of every byte.

The variants differ only in how a writer drains its queue (and in the form they run in,
benchmarks/forms.py). To add one: write the writer, add a line to VARIANTS.

    write_each        one send_all per message: what unchanged code does
    write_coalesced   everything queued (up to --max-batch bytes) joined, one send_all:
                      the honest rival of send bundles
    write_bundles     the same batches handed to trio_uring.bundles.BundleStream.send_many
                      with bundles on: one SEND bundle per batch, no join

--stats FILE: a JSON object with two snapshots (benchmarks/stats.py), taken when the
publisher starts and when the last writer is done: server CPU and ring ops per message.
--check: print why the variant cannot run here (exit 3), or nothing (exit 0).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from forms import FORMS, resolve
from stats import snapshot

PERIOD = 251
_x = 2463534242
_tbl = bytearray()
for _ in range(PERIOD):  # the reader's pattern (xorshift32), byte for byte
    _x ^= (_x << 13) & 0xFFFFFFFF
    _x ^= _x >> 17
    _x ^= (_x << 5) & 0xFFFFFFFF
    _tbl.append(_x & 0xFF)


class Outbox:
    """One connection's queue of messages, bounded: the publisher parks when it is full
    and is woken when it is half empty; the writer parks when it is empty."""

    def __init__(self, limit: int) -> None:
        self.queue: collections.deque[bytes] = collections.deque()
        self.limit = limit
        self.closed = False  # no more messages will come
        self._writer = trio.lowlevel.ParkingLot()
        self._publisher = trio.lowlevel.ParkingLot()

    async def wait_for_room(self) -> None:
        while len(self.queue) >= self.limit:
            await self._publisher.park()

    def push(self, msg: bytes) -> None:
        self.queue.append(msg)
        if self._writer:
            self._writer.unpark()

    def close(self) -> None:
        self.closed = True
        self._writer.unpark_all()

    async def wait_for_messages(self) -> None:
        """Until the queue has a message or is closed (returns at once if so)."""
        while not self.queue and not self.closed:
            await self._writer.park()

    def taken(self) -> None:
        """The writer took messages off the queue."""
        if self._publisher and len(self.queue) <= self.limit // 2:
            self._publisher.unpark_all()


Writer = Callable[[trio.abc.SendStream, Outbox, argparse.Namespace], Awaitable[None]]


async def write_each(stream: trio.abc.SendStream, box: Outbox, opts: argparse.Namespace) -> None:
    queue = box.queue
    while True:
        await box.wait_for_messages()
        if not queue:
            return
        await stream.send_all(queue.popleft())
        box.taken()


async def write_coalesced(stream: trio.abc.SendStream, box: Outbox, opts: argparse.Namespace) -> None:
    queue, max_batch = box.queue, opts.max_batch
    while True:
        await box.wait_for_messages()
        if not queue:
            return
        if len(queue) == 1:
            data = queue.popleft()
        else:
            parts, n = [], 0
            while queue and n < max_batch:
                msg = queue.popleft()
                parts.append(msg)
                n += len(msg)
            data = b"".join(parts)
        await stream.send_all(data)
        box.taken()


async def write_bundles(stream: trio.abc.SendStream, box: Outbox, opts: argparse.Namespace) -> None:
    """Everything queued (up to --max-batch bytes) handed to BundleStream.send_many with
    bundles on: the messages go into the socket's send ring as they are (no join) and
    one SEND bundle drains them."""
    from trio_uring.bundles import BundleStream

    assert isinstance(stream, trio.SocketStream)
    bstream = BundleStream(stream, bundles=True, ring_entries=opts.ring_entries)
    queue, max_batch = box.queue, opts.max_batch
    try:
        while True:
            await box.wait_for_messages()
            if not queue:
                return
            parts, n = [], 0
            while queue and n < max_batch:
                msg = queue.popleft()
                parts.append(msg)
                n += len(msg)
            await bstream.send_many(parts)
            box.taken()
    finally:
        COMPLETIONS[0] += bstream.completions


#: Completions the writers counted (bundles: CQEs, F_MORE ones included), written to
#: --stats as io.completions so fanout.py reports them instead of SQEs per message.
COMPLETIONS = [0]
COUNTS_COMPLETIONS = {"trio-uring-bundles"}


def bundles_missing() -> str | None:
    try:
        import trio_uring
        from trio_uring.bundles import send_bundles_supported
    except ImportError as exc:
        return f"trio_uring has no send-bundle API: {exc}"

    async def probe() -> bool:
        from trio_uring._iomanager import current_driver
        driver = current_driver()
        return driver is not None and send_bundles_supported(driver)

    if not trio_uring.run(probe):
        return "this kernel has no send bundles (IORING_FEAT_RECVSEND_BUNDLE, Linux 6.10)"
    return None


@dataclass(frozen=True)
class Variant:
    form: str  # of benchmarks/forms.py: run function and serve_tcp
    writer: Writer
    description: str
    missing: Callable[[], str | None] = lambda: None  # why it cannot run here, or None


VARIANTS = {
    "trio-epoll": Variant("trio-epoll", write_each, "stock Trio (epoll), SocketStream.send_all per message"),
    "trio-uring": Variant("trio-uring", write_each, "the same code on trio_uring.run (drop-in): plain sends"),
    "trio-uring-streams": Variant("trio-uring-streams", write_each,
                                  "trio_uring.serve_tcp (trio_uring's streams), send_all per message"),
    "trio-epoll-coalesced": Variant("trio-epoll", write_coalesced,
                                    "stock Trio, queued messages joined, one send_all per batch"),
    "trio-uring-coalesced": Variant("trio-uring-streams", write_coalesced,
                                    "trio_uring's streams, queued messages joined, one send_all per batch"),
    "trio-uring-bundles": Variant("trio-uring-streams", write_bundles,
                                  "trio_uring's streams, queued messages drained by send bundles", bundles_missing),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=VARIANTS, required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("-c", "--conns", type=int, default=64)
    p.add_argument("-m", "--msgs", type=int, default=100000)
    p.add_argument("-s", "--size", type=int, default=64)
    p.add_argument("--queue", type=int, default=1024, help="messages a connection's queue holds (1024)")
    p.add_argument("--max-batch", type=int, default=65536, help="coalesced: bytes per send_all at most (65536)")
    p.add_argument("--ring-entries", type=int, default=1024, help="bundles: send ring entries (1024)")
    p.add_argument("--stats", metavar="FILE")
    p.add_argument("--check", action="store_true")
    opts = p.parse_args()
    variant = VARIANTS[opts.variant]
    why = variant.missing()
    if opts.check or why:
        if why:
            print(why)
        sys.exit(3 if why else 0)
    if opts.size < 8:
        sys.exit("fanout_server: --size must be at least 8")
    form = FORMS[variant.form]
    run, serve_tcp = resolve(form.run), resolve(form.serve_tcp)
    # the messages, made before the clock starts: PERIOD distinct bodies, a header each
    pattern = bytes(_tbl) * ((opts.size + PERIOD) // PERIOD + 2)
    bodies = [pattern[off:off + opts.size - 4] for off in range(PERIOD)]
    pack = struct.Struct("<I").pack

    async def serve() -> None:
        boxes: list[Outbox] = []
        all_here, all_done = trio.Event(), trio.Event()
        finished = 0

        async def handler(stream: trio.abc.Stream) -> None:
            nonlocal finished
            if await stream.receive_some(1) != b"g":
                return
            box = Outbox(opts.queue)
            boxes.append(box)
            if len(boxes) == opts.conns:
                all_here.set()
            try:
                await variant.writer(stream, box, opts)
            except trio.BrokenResourceError:
                pass
            finally:
                finished += 1
                if finished == opts.conns:
                    all_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: serve_tcp(handler, opts.port, host=opts.host))
            print(f"fanout_server ({opts.variant}) listening on {opts.host}:{opts.port}", file=sys.stderr, flush=True)
            await all_here.wait()
            before = snapshot()
            limit = opts.queue
            for k in range(opts.msgs):
                msg = pack(k & 0xFFFFFFFF) + bodies[k % PERIOD]
                for box in boxes:
                    if len(box.queue) >= limit:  # no coroutine per message while there is room
                        await box.wait_for_room()
                    box.push(msg)
            for box in boxes:
                box.close()
            await all_done.wait()
            after = snapshot()
            if opts.stats:
                b, a = json.loads(before), json.loads(after)
                if opts.variant in COUNTS_COMPLETIONS:
                    b["io"]["completions"], a["io"]["completions"] = 0, COMPLETIONS[0]
                with open(opts.stats, "w") as f:
                    json.dump({"before": b, "after": a, "variant": opts.variant,
                               "messages": opts.msgs * opts.conns}, f)
            nursery.cancel_scope.cancel()

    run(serve)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
