"""A send buffer ring: the queue of one stream socket's outgoing buffers, in the kernel's view.

A provided-buffer ring (IORING_REGISTER_PBUF_RING) whose entries point at the
caller's memory instead of buffers of our own. A SEND with IOSQE_BUFFER_SELECT
takes the next entry; with IORING_RECVSEND_BUNDLE it takes every entry there is,
in ring order, and sends them as one.

What the kernel tells us, and what we keep ourselves:

* A CQE's ``res`` is bytes, not buffers; its flags carry the id of the *first*
  buffer it sent. The rest follow in ring order, so we keep our own head and walk
  it over ``res`` bytes (`sent`). Buffer ids are ring positions (``pos & mask``),
  so the first id must be our head's: anything else means we lost track, and the
  stream stops rather than send out of order.
* The memory of an entry stays referenced (``_held``) until a CQE has reported
  all of its bytes sent: not at submission, not at the next push.
* After an op that ended short (cancelled, an error), nothing documents which
  entries the kernel consumed. `settle` reads the kernel's head
  (IORING_REGISTER_PBUF_STATUS, 6.8), then rewrites the ring from there with what
  is left, in order, starting with the unsent end of a partly sent buffer.

No op may be in flight on the ring while it is settled or pushed to by more than
the one writer (the stream holds the socket's write slot while it sends).
"""

from __future__ import annotations

import errno
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from ._ring import CQE_BUFFER_SHIFT, CQE_F_BUFFER, FEAT_RECVSEND_BUNDLE, Opcode, Ring
from ._ring_cffi import ffi, lib

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._lifecycle import Driver

__all__ = ["SendRing", "open_send_ring", "send_bundles_supported"]

_U16: Final = 0xFFFF
_FIRST_SEND_GROUP: Final = 1  # buffer group 0 is the driver's receive ring
_MAX_GROUP: Final = 0xFFFF


class SendRing:
    """``entries`` (a power of two) slots; ``bgid`` its buffer group on ``ring``."""

    def __init__(self, ring: Ring, bgid: int, entries: int) -> None:
        if entries < 1 or entries & (entries - 1) or entries > 32768:
            raise ValueError(f"entries must be a power of two between 1 and 32768, not {entries}")
        self._ring = ring
        self._pb = ffi.new("struct tu_pbuf *")
        rc = lib.tu_pbuf_setup(ring._r, self._pb, bgid, entries, 0, 0)
        if rc < 0:
            ring.raise_prep_error(rc)
        self.bgid = bgid
        self.entries = entries
        self.mask = entries - 1
        #: Ring positions (mod 2**16, as the kernel's): the first entry not yet
        #: reported sent, and the next free one.
        self.head = 0
        self.tail = 0
        #: Bytes of the head entry already reported sent (it went out in part).
        self.head_offset = 0
        self._held: list[Any] = [None] * entries  # what keeps each entry's memory alive
        self._ptrs: list[Any] = [None] * entries  # the pointer the entry holds
        self._lens = [0] * entries
        self._nones: list[Any] = [None] * entries
        #: Bytes pushed and not yet reported sent.
        self.queued_bytes = 0
        self._push = partial(lib.tu_pbuf_push, self._pb)
        self.closed = False
        #: Set (to what went wrong) when a CQE's first buffer id was not our head's.
        self.out_of_step: str | None = None
        #: Called once the ring is closed (gives its buffer group id back).
        self.on_close: Callable[[int], None] | None = None

    def queued(self) -> int:
        """Entries pushed and not yet reported sent."""
        return (self.tail - self.head) & _U16

    def room(self) -> int:
        return self.entries - self.queued()

    def push(self, keep: Any, ptr: Any, n: int) -> None:
        """Queue ``n`` bytes at ``ptr`` (bytes, or a cdata pointer); ``keep`` holds the
        memory until a CQE reports them sent. The caller checked `room`."""
        i = self.tail & self.mask
        self._held[i] = keep
        self._ptrs[i] = ptr
        self._lens[i] = n
        self.queued_bytes += n
        self._push(ptr, n)
        self.tail = (self.tail + 1) & _U16

    def push_many(self, items: list[Any], i: int) -> int:
        """`push` ``items[i:]`` (bytes, or ``ffi.from_buffer`` views: each its own
        pointer and keeper; none empty) while there is room; the ring takes over
        the references (``items[k]`` is set to None). Returns the index of the
        first item not pushed."""
        held, ptrs, lens, push = self._held, self._ptrs, self._lens, self._push
        mask = self.mask
        tail = self.tail
        room = self.entries - ((tail - self.head) & _U16)
        end = min(len(items), i + room)
        queued = 0
        while i < end:
            buf = items[i]
            items[i] = None
            k = tail & mask
            held[k] = buf
            ptrs[k] = buf
            lens[k] = n = len(buf)
            queued += n
            push(buf, n)
            tail = (tail + 1) & _U16
            i += 1
        self.tail = tail
        self.queued_bytes += queued
        return i

    def sent(self, res: int, flags: int) -> None:
        """A CQE reported ``res`` bytes sent, from the buffer id in ``flags`` on:
        release every entry those bytes cover, in ring order from our head."""
        if res <= 0:
            return
        mask = self.mask
        head = self.head
        if flags & CQE_F_BUFFER and (flags >> CQE_BUFFER_SHIFT) != head & mask:
            # Called from the driver's dispatch: no raising there. The stream
            # checks this after the op and stops.
            self.out_of_step = f"the kernel sent from buffer {flags >> CQE_BUFFER_SHIFT}, expected {head & mask}"
        held, ptrs, lens = self._held, self._ptrs, self._lens
        if res == self.queued_bytes:  # all of it (a bundle that went out whole): release in bulk
            tail = self.tail
            i, j = head & mask, tail & mask
            if i < j:
                held[i:j] = ptrs[i:j] = self._nones[i:j]
            else:
                held[i:] = ptrs[i:] = self._nones[i:]
                held[:j] = ptrs[:j] = self._nones[:j]
            self.head = tail
            self.head_offset = 0
            self.queued_bytes = 0
            return
        self.queued_bytes -= res
        left = res + self.head_offset
        tail = self.tail
        while left:
            if head == tail:  # more than we queued: the kernel read entries we never pushed
                self.out_of_step = f"the kernel reported {left} bytes more than were queued"
                self.queued_bytes = self.head_offset = 0
                break
            i = head & mask
            n = lens[i]
            if left < n:
                self.head_offset = left  # this one went out in part
                break
            left -= n
            held[i] = ptrs[i] = None  # the kernel is done with it
            head = (head + 1) & _U16
            self.head_offset = 0
        else:
            self.head_offset = 0
        self.head = head

    def kernel_head(self) -> int:
        """The kernel's head of this ring (IORING_REGISTER_PBUF_STATUS)."""
        rc = lib.tu_pbuf_head(self._ring._r, self._pb)
        if rc < 0:
            self._ring.raise_prep_error(rc)
        return rc

    def settle(self) -> None:
        """After an op's final CQE, with entries not reported sent: rewrite the ring
        from the kernel's head with what is left, in order (the unsent end of a
        partly sent entry first). No op may be in flight."""
        if not self.queued():
            return
        left = []
        mask = self.mask
        pos = self.head
        offset = self.head_offset
        while pos != self.tail:
            i = pos & mask
            keep, ptr, n = self._held[i], self._ptrs[i], self._lens[i]
            if offset:
                if type(ptr) is bytes:
                    ptr = ffi.from_buffer(ptr)
                ptr, n, offset = ptr + offset, n - offset, 0
            left.append((keep, ptr, n))
            self._held[i] = self._ptrs[i] = None
            pos = (pos + 1) & _U16
        khead = self.kernel_head()
        self.head = self.tail = khead
        self.head_offset = 0
        self.queued_bytes = 0
        lib.tu_pbuf_set_tail(self._pb, khead)
        for keep, ptr, n in left:
            self.push(keep, ptr, n)

    def drop(self) -> list[tuple[Any, Any, int]]:
        """Take back every entry not reported sent (after an op's final CQE): the
        ring is empty at the kernel's head. Returns what was dropped, in order."""
        dropped = []
        mask = self.mask
        pos = self.head
        offset = self.head_offset
        while pos != self.tail:
            i = pos & mask
            dropped.append((self._held[i], self._ptrs[i], self._lens[i] - offset))
            offset = 0
            self._held[i] = self._ptrs[i] = None
            pos = (pos + 1) & _U16
        if dropped:
            khead = self.kernel_head()
            self.head = self.tail = khead
            self.head_offset = 0
            self.queued_bytes = 0
            lib.tu_pbuf_set_tail(self._pb, khead)
        return dropped

    def close(self) -> None:
        """Unregister and unmap (no op may be in flight: an op holds its ring, so a
        ring nobody references has none)."""
        if not self.closed:
            self.closed = True
            lib.tu_pbuf_teardown(self._ring._r, self._pb)
            if self.on_close is not None:
                self.on_close(self.bgid)

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            self.close()


# ---------------------------------------------------------------- per run: the feature, the group ids
#
# Shared by the two users of send rings, trio_uring.bundles (BundleStream) and
# trio_uring.lowlevel (SendRing, send_bundle): one feature check, one allocator.


def send_bundles_supported(driver: Driver | None = None) -> bool:
    """Whether this run's kernel takes sends from provided buffers and send bundles:
    the ring's features (IORING_FEAT_RECVSEND_BUNDLE, which the send man pages call
    IORING_FEAT_SEND_BUF_SELECT), never the kernel version. ``driver``: the current
    run's if None (False outside a run on the io_uring backend)."""
    if driver is None:
        from ._iomanager import running_driver

        driver = running_driver()
    if driver is None or not driver.ring.features & FEAT_RECVSEND_BUNDLE:
        return False
    return Opcode.SEND in _probe(driver)


_probes: weakref.WeakKeyDictionary[Driver, frozenset[Opcode | int]] = weakref.WeakKeyDictionary()


def _probe(driver: Driver) -> frozenset[Opcode | int]:
    supported = _probes.get(driver)
    if supported is None:
        supported = _probes[driver] = driver.ring.probe()
    return supported


class _Groups:
    """The buffer group ids of one run's send rings: handed out, given back on close."""

    def __init__(self) -> None:
        self.free: list[int] = []
        self.next = _FIRST_SEND_GROUP

    def take(self) -> int:
        if self.free:
            return self.free.pop()
        if self.next > _MAX_GROUP:
            raise OSError(errno.ENOBUFS, "trio_uring: no buffer group id left for another send ring")
        bgid, self.next = self.next, self.next + 1
        return bgid

    def give_back(self, bgid: int) -> None:
        self.free.append(bgid)


_groups: weakref.WeakKeyDictionary[Driver, _Groups] = weakref.WeakKeyDictionary()


def open_send_ring(driver: Driver, entries: int) -> SendRing:
    """A new `SendRing` of ``entries`` on ``driver``'s ring, with a buffer group id
    of its own (given back when the ring closes)."""
    groups = _groups.get(driver)
    if groups is None:
        groups = _groups[driver] = _Groups()
    bgid = groups.take()
    try:
        ring = SendRing(driver.ring, bgid, entries)
    except BaseException:
        groups.give_back(bgid)
        raise
    ring.on_close = groups.give_back
    return ring
