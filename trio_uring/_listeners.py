"""Opening TCP listening sockets, as `trio.open_tcp_listeners` does, plus SO_REUSEPORT.

Trio's ``open_tcp_listeners`` (``trio/_highlevel_open_tcp_listeners.py``) has no
way to set a socket option between ``socket()`` and ``bind()``, and SO_REUSEPORT has
to be set there. So its logic is repeated here, step for step: getaddrinfo with
AI_PASSIVE, one socket per address (an address family the system lacks is skipped
as long as one works), SO_REUSEADDR, IPV6_V6ONLY on IPv6 sockets (so ``::`` and
``0.0.0.0`` can both be bound), bind, and listen with Trio's backlog (None: the
system's maximum, by asking for 0xFFFF).

``reuse_port=True`` adds SO_REUSEPORT: several sockets, in this process or others
of the same user, can then listen on the same address and port, and the kernel
spreads incoming connections across them (a hash of the connection's addresses and
ports picks the socket). `trio_uring.workers` uses it to serve one port from
several processes.
"""

from __future__ import annotations

import errno
import socket as _stdlib_socket
import sys
from typing import TYPE_CHECKING

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from trio.socket import SocketType

__all__ = ["compute_backlog", "open_tcp_listeners", "reserve_tcp_port"]


def compute_backlog(backlog: int | None) -> int:
    """Trio's rule: None means the system's maximum; the kernel keeps it in 16 bits."""
    if not isinstance(backlog, int) and backlog is not None:
        raise TypeError(f"backlog must be an int or None, not {backlog!r}")
    if backlog is None:
        return 0xFFFF
    return min(backlog, 0xFFFF)


def _configure(sock: _stdlib_socket.socket | SocketType, family: int, reuse_port: bool) -> None:
    # Rebinding a port with connections in TIME_WAIT (trio issue #39).
    sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEADDR, 1)
    if family == _stdlib_socket.AF_INET6:
        sock.setsockopt(_stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, 1)
    if reuse_port:
        sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEPORT, 1)


def _no_supported_family(failures: list[OSError]) -> OSError:
    msg = "This system doesn't support any of the kinds of socket that that address could use"
    exc = OSError(errno.EAFNOSUPPORT, msg)
    exc.__cause__ = ExceptionGroup(msg, failures)
    return exc


async def open_tcp_listeners(
    port: int, *, host: str | bytes | None = None, backlog: int | None = None, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """`trio.open_tcp_listeners`, with SO_REUSEPORT set before bind when ``reuse_port``."""
    if not isinstance(port, int):
        raise TypeError(f"port must be an int not {port!r}")
    computed_backlog = compute_backlog(backlog)
    addresses = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    unsupported: list[OSError] = []
    try:
        for family, type_, proto, _, sockaddr in addresses:
            try:
                sock = trio.socket.socket(family, type_, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    unsupported.append(exc)
                    continue
                raise
            try:
                _configure(sock, family, reuse_port)
                await sock.bind(sockaddr)
                sock.listen(computed_backlog)
                listeners.append(trio.SocketListener(sock))
            except BaseException:
                sock.close()
                raise
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    if unsupported and not listeners:
        raise _no_supported_family(unsupported)
    return listeners


def reserve_tcp_port(port: int, *, host: str | bytes | None = None) -> tuple[int, list[_stdlib_socket.socket]]:
    """Bind (without listening) SO_REUSEPORT sockets on every address ``host`` resolves
    to, all on one port (``port``, or for 0 the one the kernel picks for the first
    address). Returns the port and the sockets; while they are open, only sockets
    with SO_REUSEPORT of the same user can bind that port. Not listening, they get
    no connections. Synchronous: for a supervisor outside any Trio run."""
    if not isinstance(port, int):
        raise TypeError(f"port must be an int not {port!r}")
    addresses = _stdlib_socket.getaddrinfo(
        host, port, type=_stdlib_socket.SOCK_STREAM, flags=_stdlib_socket.AI_PASSIVE
    )
    socks: list[_stdlib_socket.socket] = []
    unsupported: list[OSError] = []
    try:
        for family, type_, proto, _, sockaddr in addresses:
            try:
                sock = _stdlib_socket.socket(family, type_, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    unsupported.append(exc)
                    continue
                raise
            socks.append(sock)
            _configure(sock, family, reuse_port=True)
            sock.bind((sockaddr[0], port, *sockaddr[2:]))
            port = sock.getsockname()[1]  # 0: the kernel's pick, for the others too
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if unsupported and not socks:
        raise _no_supported_family(unsupported)
    return port, socks
