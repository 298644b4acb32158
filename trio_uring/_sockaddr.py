"""Socket addresses and message headers in the kernel's layout.

CONNECT, SENDMSG and RECVMSG take C structures (``struct sockaddr_*``, ``struct
msghdr``, ``struct iovec``, ``cmsghdr``) that the stdlib builds internally and never
exposes, so we build them here. Only AF_INET, AF_INET6 and AF_UNIX addresses are
encoded; for other families `encode` returns None and the socket layer keeps Trio's
own (readiness-based) implementation of the call.

A `MsgHdr` owns every buffer its msghdr points to; the op that uses it keeps it
(``Op.keep``) until the op's final CQE.
"""

from __future__ import annotations

import operator
import os
import socket as _stdlib_socket
import struct
from collections.abc import Iterable
from typing import Any

from ._ring_cffi import ffi

__all__ = ["MsgHdr", "decode", "decode_ancdata", "encode", "encode_ancdata"]

AF_INET = _stdlib_socket.AF_INET
AF_INET6 = _stdlib_socket.AF_INET6
AF_UNIX = _stdlib_socket.AF_UNIX

SOCKADDR_STORAGE_SIZE = ffi.sizeof("struct sockaddr_storage")
_SUN_PATH_MAX = 108
_FAMILY = struct.Struct("=H")  # sa_family_t, host order
_CMSG_HEADER = struct.Struct("@Nii")  # cmsg_len (size_t), cmsg_level, cmsg_type
_CMSG_ALIGN = struct.calcsize("N")


def _port(port: object, method: str) -> int:
    if not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 0xFFFF:
        raise OverflowError(f"{method}(): port must be 0-65535.")
    return port


def encode(family: int, address: Any, method: str = "connect") -> bytes | None:
    """The ``struct sockaddr_*`` bytes for an already-resolved ``address``.

    Raises what the stdlib raises for a malformed address; returns None for a
    family handled by Trio's own implementation.
    """
    if family == AF_INET:
        if not isinstance(address, tuple) or len(address) != 2:
            raise TypeError(f"AF_INET address must be tuple, not {type(address).__name__}")
        host, port = address
        packed = _stdlib_socket.inet_pton(AF_INET, host)
        return b"".join((struct.pack("=H", AF_INET), struct.pack("!H", _port(port, method)), packed, bytes(8)))
    if family == AF_INET6:
        if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
            raise TypeError(
                f"AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]]), not {type(address).__name__}"
            )
        host, port, flowinfo, scope_id = (*address, 0, 0)[:4]
        # flowinfo and scope_id as the stdlib reads them ("I": any int, cut to 32 bits).
        flowinfo = operator.index(flowinfo) & 0xFFFF_FFFF
        if not 0 <= flowinfo <= 0xFFFFF:
            raise OverflowError(f"{method}(): flowinfo must be 0-1048575.")
        host, _, scope_name = host.partition("%")
        if scope_name and not scope_id:
            scope_id = int(scope_name) if scope_name.isdigit() else _stdlib_socket.if_nametoindex(scope_name)
        scope_id = operator.index(scope_id) & 0xFFFF_FFFF
        packed = _stdlib_socket.inet_pton(AF_INET6, host)
        return (
            struct.pack("=H", AF_INET6)
            + struct.pack("!HI", _port(port, method), flowinfo)
            + packed
            + struct.pack("=I", scope_id)
        )
    if family == AF_UNIX:
        # A str path as the stdlib encodes it: os.fsencode (surrogateescape), so a
        # name os.listdir gave back for undecodable bytes names that file.
        path = os.fsencode(address) if isinstance(address, str) else bytes(address)
        if len(path) > _SUN_PATH_MAX or (len(path) == _SUN_PATH_MAX and path[:1] != b"\0"):
            raise OSError(36, "AF_UNIX path too long")
        if path[:1] == b"\0" or not path:  # abstract namespace: exact length, no terminator
            # (An empty path stays empty, as the stdlib sends it: the kernel says
            # EINVAL; a terminator would make it the abstract name "".)
            return _FAMILY.pack(AF_UNIX) + path
        return _FAMILY.pack(AF_UNIX) + path + b"\0"
    return None


def decode(family: int, raw: bytes) -> Any:
    """The stdlib's Python form of a ``struct sockaddr_*`` (None for an empty one)."""
    if len(raw) < 2:
        return None
    family = _FAMILY.unpack_from(raw)[0]
    if family == AF_INET:
        port = struct.unpack_from("!H", raw, 2)[0]
        return (_stdlib_socket.inet_ntop(AF_INET, raw[4:8]), port)
    if family == AF_INET6:
        port, flowinfo = struct.unpack_from("!HI", raw, 2)
        scope_id = struct.unpack_from("=I", raw, 24)[0]
        host = _stdlib_socket.inet_ntop(AF_INET6, raw[8:24])
        if scope_id:
            # The stdlib formats scoped addresses with getnameinfo: "fe80::1%eth0".
            host = _stdlib_socket.getnameinfo(
                (host, port, flowinfo, scope_id),
                _stdlib_socket.NI_NUMERICHOST | _stdlib_socket.NI_NUMERICSERV,
            )[0]
        return (host, port, flowinfo, scope_id)
    if family == AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":
            return path
        return path.split(b"\0", 1)[0].decode(errors="surrogateescape")
    return raw


def encode_ancdata(ancdata: Iterable[tuple[int, int, Any]]) -> bytes:
    """``sendmsg``'s ancillary data as a control buffer of cmsghdrs."""
    out = bytearray()
    for item in ancdata:
        if not isinstance(item, (tuple, list)):
            raise TypeError(
                f"[sendmsg() ancillary data items]() argument must be 3-item sequence, not {type(item).__name__}"
            )
        if len(item) != 3:
            raise TypeError(
                f"[sendmsg() ancillary data items]() argument must be sequence of length 3, not {len(item)}"
            )
        level, kind, data = item
        level, kind = operator.index(level), operator.index(kind)
        data = bytes(data)
        length = _stdlib_socket.CMSG_LEN(len(data))
        out += _CMSG_HEADER.pack(length, level, kind) + data
        out += bytes(_stdlib_socket.CMSG_SPACE(len(data)) - length)
    return bytes(out)


def decode_ancdata(control: bytes) -> list[tuple[int, int, bytes]]:
    """``recvmsg``'s ancillary data from a control buffer of cmsghdrs."""
    items = []
    header = _stdlib_socket.CMSG_LEN(0)
    offset = 0
    while offset + header <= len(control):
        length, level, kind = _CMSG_HEADER.unpack_from(control, offset)
        if length < header:
            break
        items.append((level, kind, bytes(control[offset + header : offset + length])))
        offset += (length + _CMSG_ALIGN - 1) // _CMSG_ALIGN * _CMSG_ALIGN
    return items


class MsgHdr:
    """A ``struct msghdr`` and everything it points to, kept alive together."""

    __slots__ = ("_buffers", "_control_capacity", "_iov", "_name_bytes", "control", "hdr", "name")

    def __init__(
        self,
        buffers: Iterable[Any],
        *,
        writable: bool,
        name: bytes | None = None,
        name_capacity: int = 0,
        control: bytes | None = None,
        control_capacity: int = 0,
    ) -> None:
        try:
            items = iter(buffers)
        except TypeError:
            raise TypeError(f"{'recvmsg_into' if writable else 'sendmsg'}() argument 1 must be an iterable") from None
        self._buffers = [_buffer(b, writable) for b in items]
        self._iov = ffi.new("struct iovec[]", max(1, len(self._buffers)))
        for i, cbuf in enumerate(self._buffers):
            self._iov[i].iov_base = cbuf
            self._iov[i].iov_len = len(cbuf)
        hdr = self.hdr = ffi.new("struct msghdr *")
        hdr.msg_iov = self._iov
        hdr.msg_iovlen = len(self._buffers)
        self._name_bytes: bytes | int = name if name is not None else name_capacity
        self._control_capacity = control_capacity
        if name is not None:
            self.name = ffi.from_buffer(name)
            hdr.msg_name = self.name
            hdr.msg_namelen = len(name)
        elif name_capacity:
            self.name = ffi.new("char[]", name_capacity)
            hdr.msg_name = self.name
            hdr.msg_namelen = name_capacity
        else:
            self.name = ffi.NULL
        if control:
            self.control = ffi.from_buffer(control)
            hdr.msg_control = self.control
            hdr.msg_controllen = len(control)
        elif control_capacity:
            self.control = ffi.new("char[]", control_capacity)
            hdr.msg_control = self.control
            hdr.msg_controllen = control_capacity
        else:
            self.control = ffi.NULL

    def reset(self) -> None:
        """Undo what a completed recvmsg wrote into the header (name/control lengths)."""
        hdr = self.hdr
        if self.name != ffi.NULL and not isinstance(self._name_bytes, bytes):
            hdr.msg_namelen = self._name_bytes
        if self.control != ffi.NULL and self._control_capacity:
            hdr.msg_controllen = self._control_capacity
        hdr.msg_flags = 0

    def release(self) -> None:
        """Let go of the caller's buffers (only once the kernel is done with them)."""
        for cbuf in self._buffers:
            ffi.release(cbuf)
        self._buffers = []

    def fill(self, data: bytes) -> int:
        """Copy ``data`` into the buffers in order, as a recvmsg of a stream with no
        name and no ancillary data would; the count copied."""
        done = 0
        for cbuf in self._buffers:
            n = min(len(cbuf), len(data) - done)
            ffi.memmove(cbuf, data[done : done + n], n)
            done += n
        hdr = self.hdr
        hdr.msg_namelen = 0
        hdr.msg_controllen = 0
        hdr.msg_flags = 0
        return done

    def received_name(self) -> bytes:
        return ffi.buffer(self.name, self.hdr.msg_namelen)[:] if self.name != ffi.NULL else b""

    def received_control(self) -> bytes:
        if self.control == ffi.NULL:
            return b""
        control: bytes = ffi.buffer(self.control, self.hdr.msg_controllen)[:]
        return control


def _buffer(b: Any, writable: bool) -> Any:
    """One iovec's buffer, with the stdlib's error for a wrong one."""
    try:
        return ffi.from_buffer(b, require_writable=writable)
    except (BufferError, TypeError):
        if writable:
            raise TypeError(
                "recvmsg_into() argument 1 must be an iterable of single-segment read-write buffers"
            ) from None
        raise TypeError(f"a bytes-like object is required, not '{type(b).__name__}'") from None
