"""Send bundles: many queued buffers of one stream socket sent by one io_uring op.

`BundleStream` wraps a `trio.SocketStream` and adds `BundleStream.send_many`:
send these buffers, in order, as if each were passed to ``send_all`` in turn, and
return when all of their bytes belong to the kernel. On the io_uring backend, with
bundles on and a kernel that has them (IORING_FEAT_RECVSEND_BUNDLE, 6.10, asked at
run time), the buffers are queued in the socket's send buffer ring
(`trio_uring._sendring`) as they are, without copying, and drained by SEND
bundles: one SQE and, usually, one CQE per batch of up to ``ring_entries`` buffers.
Otherwise (or when no send ring can be registered: the run's 65,535 buffer group
ids are taken, or the kernel refuses the memory) they are joined in Python and
sent with the socket's own sends (one plain SEND when it fits, or Trio's own on
epoll): the same API, the same bytes.

Whether bundles are on by default is decided by measurement (`BUNDLES_BY_DEFAULT`,
docs/source/bundles.rst has the numbers).

Trio's contract, as ``SocketStream.send_all`` keeps it: one sender at a time
(BusyResourceError, shared with the wrapped stream's ``send_all``),
ClosedResourceError after ``send_eof`` or ``aclose`` (or if another task closes
the socket meanwhile: nothing reaches a file that takes its number, the driver's
closed-fd rule), BrokenResourceError for a connection error, every call a
checkpoint. If ``send_many`` is cancelled, `bytes_sent` says exactly how many of
its bytes the kernel took (what a CQE, or a send, reported; bundles or not), and
the stream goes on from there: whatever was not sent is dropped, in order, never
reordered.

Never for datagram sockets: a bundle merges its buffers into one datagram
(``SocketStream`` accepts only SOCK_STREAM sockets anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import trio
from trio import SocketStream
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._ops import SendBundle
from ._ring_cffi import ffi
from ._sendring import SendRing, open_send_ring, send_bundles_supported
from ._socket import UringSocket
from ._stream import _translate

if TYPE_CHECKING:
    from ._lifecycle import Driver

__all__ = ["BUNDLES_BY_DEFAULT", "BundleStream", "send_bundles_supported"]

#: Whether a `BundleStream` made without ``bundles=`` uses send bundles. Off: on the
#: fan-out benchmark, joining the queued messages in Python and sending them with
#: one SEND was as fast or faster (docs/source/bundles.rst).
BUNDLES_BY_DEFAULT: bool = False

#: The most bytes one ring entry takes (its length is 32 bits): a larger buffer is
#: queued as several entries.
_MAX_ENTRY: Final = 1 << 30


class BundleStream(trio.abc.HalfCloseableStream):
    """A `trio.SocketStream` with `send_many`: queued buffers sent in order, one op a batch.

    ``bundles``: use send bundles where the kernel has them (None: `BUNDLES_BY_DEFAULT`).
    ``ring_entries``: the most buffers one bundle takes (a power of two; the send
    ring of this many entries is registered on the first `send_many` of a run).
    Receiving, ``send_eof`` and ``wait_send_all_might_not_block`` are the wrapped
    stream's.
    """

    def __init__(self, transport_stream: SocketStream, *, bundles: bool | None = None, ring_entries: int = 256) -> None:
        if not isinstance(transport_stream, SocketStream):
            raise TypeError(f"BundleStream wraps a trio.SocketStream, not {type(transport_stream).__name__}")
        if ring_entries < 1 or ring_entries & (ring_entries - 1) or ring_entries > 32768:
            raise ValueError(f"ring_entries must be a power of two between 1 and 32768, not {ring_entries}")
        self.transport_stream = transport_stream
        self.bundles = BUNDLES_BY_DEFAULT if bundles is None else bundles
        self.ring_entries = ring_entries
        #: Bytes of this stream's `send_all` / `send_many` calls the kernel took,
        #: counted from what each op reported (exact also for a cancelled call).
        self.bytes_sent = 0
        #: Completions (CQEs) of this stream's send bundles: one per pass of the kernel
        #: over at most 256 buffers (a bundle posts more with IORING_CQE_F_MORE).
        self.completions = 0
        self._ring: SendRing | None = None
        self._ring_driver: Driver | None = None
        self._closed = False
        self._sending = False  # a send_many of ours uses the ring (an op may be in flight)

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.transport_stream.socket

    def _bundle_ring(self) -> SendRing | None:
        """The send ring to send bundles from, or None: send joined buffers instead."""
        if not self.bundles:
            return None
        sock = self.transport_stream.socket
        if type(sock) is not UringSocket or sock.fileno() == -1:
            return None
        driver = sock._uring_driver()
        if driver is None or not send_bundles_supported(driver):
            return None
        ring = self._ring
        if ring is None or self._ring_driver is not driver or ring.closed:
            try:
                ring = open_send_ring(driver, self.ring_entries)
            except OSError:
                # No buffer group id left (65,535 send rings in this run) or no
                # memory for the ring: the connection is fine, send joined.
                return None
            self._ring = ring
            self._ring_driver = driver
        return ring

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """``SocketStream.send_all``, counted in `bytes_sent`."""
        await self.send_many((data,))

    async def send_many(self, buffers: Iterable[bytes | bytearray | memoryview]) -> None:
        """Send ``buffers`` in order, as ``send_all`` of each in turn would, with as
        few ops as it can; return when all their bytes belong to the kernel."""
        transport = self.transport_stream
        sock = transport.socket
        if sock.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        detector = transport._send_conflict_detector
        if detector._held:
            raise trio.BusyResourceError(detector._msg)
        detector._held = True
        try:
            ring = self._bundle_ring()
            if ring is None:
                await self._send_joined(buffers)
            else:
                assert self._ring_driver is not None and isinstance(sock, UringSocket)
                await self._send_bundles(self._ring_driver, sock, ring, buffers)
        except OSError as exc:
            _translate(exc)
        finally:
            detector._held = False

    async def _send_joined(self, buffers: Iterable[bytes | bytearray | memoryview]) -> None:
        """The buffers joined, sent by the socket's own sends (not the stream's
        ``send_all``, which cannot say how much of it went out when cancelled)."""
        await checkpoint_if_cancelled()
        sock = self.transport_stream.socket
        try:
            data = b"".join(buffers)
            if sock.fileno() == -1:
                raise trio.ClosedResourceError("socket was already closed")
        except BaseException:
            await cancel_shielded_checkpoint()
            raise
        if not data:
            await cancel_shielded_checkpoint()
            return
        total = len(data)
        n = await sock.send(data)
        self.bytes_sent += n
        if n < total:  # a short send: the socket's buffer filled
            view = memoryview(data)
            while n < total:
                sent = await sock.send(view[n:])
                self.bytes_sent += sent
                n += sent

    async def _send_bundles(self, driver: Driver, sock: UringSocket, ring: SendRing, buffers: Iterable[Any]) -> None:
        await checkpoint_if_cancelled()
        try:
            # bytes as they are; other buffers as views of the caller's memory (kept
            # until sent); empty ones left out.
            pieces: list[Any] = [buf if type(buf) is bytes else ffi.from_buffer(buf) for buf in buffers]
            if not all(map(len, pieces)):
                pieces = [buf for buf in pieces if len(buf)]
            if pieces and max(map(len, pieces)) > _MAX_ENTRY:
                pieces = _split(pieces)
            fd = sock._sock.fileno()
            if fd == -1:
                raise trio.ClosedResourceError("socket was already closed")
            st = driver.fd(fd)
        except BaseException:
            await cancel_shielded_checkpoint()
            raise
        if not pieces:
            await cancel_shielded_checkpoint()
            return
        n = len(pieces)
        i = 0
        op: SendBundle | None = None
        self._sending = True
        try:
            while True:
                if i < n:
                    i = ring.push_many(pieces, i)  # the ring holds them now, until a CQE reports them sent
                if not ring.queued():
                    break
                op = SendBundle(st.fd, ring, 0)
                try:
                    await driver.perform(op, st)
                finally:
                    if op.user_data in driver.ops:
                        # Still in flight (the run is being torn down): the op keeps
                        # the ring and its memory; this stream never uses it again.
                        self._ring = None
                    else:
                        self.bytes_sent += op.sent
                        self.completions += op.cqes
                if ring.out_of_step is not None:
                    raise RuntimeError(f"trio_uring: send ring out of step: {ring.out_of_step}")
                if not op.sent:
                    raise trio.BrokenResourceError("socket connection broken: a send bundle sent nothing")
                if ring.queued():
                    ring.settle()  # a short send: what is left goes next, in order
                    await checkpoint_if_cancelled()  # (short because it was cancelled?)
        finally:
            self._sending = False
            # Our views of buffers not queued yet: the caller's memory is its own
            # again (a traceback the caller keeps would hold them).
            pieces.clear()
            # Cancelled, an error, the socket closed: drop what did not go out, so
            # the next call starts right after the last byte the kernel took.
            if ring is self._ring and ring.queued() and not driver.closed:
                ring.drop()
            if self._closed and ring is self._ring:
                self._close_ring()

    def _close_ring(self) -> None:
        ring, self._ring = self._ring, None
        if ring is not None and self._ring_driver is not None and not self._ring_driver.closed:
            ring.close()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.transport_stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.transport_stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        self._closed = True
        try:
            await self.transport_stream.aclose()
        finally:
            # (Not the stream's send slot: another task's send_all on the wrapped
            # stream holds it without using the ring.)
            if not self._sending:
                self._close_ring()


def _split(pieces: list[Any]) -> list[Any]:
    """``pieces`` with those over `_MAX_ENTRY` bytes cut into views of at most that
    (each keeps the whole buffer's view alive)."""
    out = []
    for buf in pieces:
        if len(buf) <= _MAX_ENTRY:
            out.append(buf)
            continue
        view = memoryview(buf if type(buf) is bytes else ffi.buffer(buf))
        out.extend(ffi.from_buffer(view[k : k + _MAX_ENTRY]) for k in range(0, len(view), _MAX_ENTRY))
    return out
