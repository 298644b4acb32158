"""io_uring-backed Trio sockets.

Under the io_uring backend, ``trio.socket`` already gives you these (the backend
installs `UringSocketFactory` in every run). This module is for code that wants
to ask for them by name:

* `socket`: like `trio.socket.socket`, created with IORING_OP_SOCKET;
* `socket_async`: the same as a checkpoint that does not block the run loop;
* `SocketType`: the socket class, a subclass of `trio.socket.SocketType`;
* `SocketFactory`: the factory, for `trio.socket.set_custom_socket_factory`.
"""

from ._socket import UringSocket as SocketType
from ._socket import UringSocketFactory as SocketFactory
from ._socket import socket, socket_async

__all__ = ["SocketFactory", "SocketType", "socket", "socket_async"]
